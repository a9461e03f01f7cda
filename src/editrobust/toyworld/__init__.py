"""The toy world: a synthetic, fully known stand-in for the study's data (see world.py)."""

from editrobust.toyworld.captions import concept_scene, sample_base_world, sample_style_set, sample_subject_set
from editrobust.toyworld.oracle import label_images
from editrobust.toyworld.world import Scene, render

__all__ = ["Scene", "render", "label_images", "concept_scene", "sample_base_world", "sample_style_set",
           "sample_subject_set"]
