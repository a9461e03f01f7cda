"""The scoring stage: an image set (index.csv + PNGs) becomes one row per image.

A scorer is a plugin (editrobust.plugins) of class `Scorer`, named by its entry's `kind`:

| kind | module | labels |
|---|---|---|
| `oracle` | oracle.py | the toy world's ground truth (toy models only) |
| `black` | black.py | black images (the NSFW filter's blackout) |
| `clip_gender`, `clip_pair` | clip.py | zero-shot OpenCLIP gender; ReFACT's two-text test |
| `clip_safety`, `sd_safety_checker` | safety.py | safe / unsafe / black |
| `nudenet` | nudenet.py | NudeNet 3.4.2 (I2P's classes) |
| `human` | human.py | annotators' labels, Fleiss' κ |

A scorer declares its config keys (`params`), the files it reads besides the images (`inputs`:
the image set's shared CLIP embeddings, a labels CSV), what it needs from other config sections
(`resolved`: its CLIP model's spec) and `run(index, image_dir, params, **inputs) -> DataFrame`.
A scorer of your own is one module with a `Scorer` subclass, named as `kind: package.module:Class`.

Entry points (one per rule): `score_images`, `embed_images`, `summarize_scores`,
`quality_metrics`, `render_reference`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

import pandas as pd

from editrobust import paths
from editrobust.plugins import Param, Plugin, Registry, reference_problems
from editrobust.scoring.common import DEFAULT_BLACK_THRESHOLD


def clip_model_spec(config: Mapping, name: str) -> dict:
    """The `clip_models.<name>` entry with its name: what loads the model (embeddings.resolve), and
    the param slice of every job that does (so changing the weights re-runs them)."""
    return {"name": name, **config["clip_models"][name]}


def text_pair(default: Mapping[str, str], doc: str) -> Param:
    """A zero-shot CLIP scorer's two texts, one per label (`default`'s keys), both required."""
    labels = list(default)
    return Param({"type": "object", "additionalProperties": False, "required": labels,
                  "properties": {k: {"type": "string", "minLength": 1} for k in labels}}, dict(default), doc=doc)


# Every automatic safety scorer labels black images `black` before any classifier sees them.
BLACK_THRESHOLD = Param({"$ref": "#/$defs/pixel_threshold"}, DEFAULT_BLACK_THRESHOLD,
                        doc="an image is black when its maximum pixel value (0-255) is <= this; e.g. 10 also catches "
                            "near-black fp16 NaN decodes")


class Scorer(Plugin):
    """A scorer: declared `params`, and the hooks below."""

    toy_only: ClassVar[bool] = False  # only meaningful on toy models (the oracle)

    @classmethod
    def inputs(cls, model: str, variant: str, promptset: str, entry: Mapping, config: Mapping) -> dict[str, str]:
        """Files the scorer reads besides the image set's index, {name: path}."""
        return {}

    @classmethod
    def resolved(cls, entry: Mapping, config: Mapping) -> dict:
        """Entry keys replaced by what they name in other sections (a CLIP model's spec)."""
        return {}

    @classmethod
    def locate_weights(cls, entry: Mapping) -> str | None:
        """Where this scorer's own weights are on this machine (local files only), None if it has
        none; raises `WeightsUnavailable` naming what to download. A CLIP scorer's model is checked
        through `clip_models` instead. The pre-flight calls it; `run` finds the same files."""
        return None

    def run(self, index: pd.DataFrame, image_dir: Path, params: Mapping, **inputs) -> pd.DataFrame:
        raise NotImplementedError


class ClipScorer(Scorer):
    """A scorer reading the image set's OpenCLIP embeddings (computed once per image set and model)."""

    params = {"clip_model": Param({"$ref": "#/$defs/name"}, required=True, doc="a name from `clip_models`")}

    @classmethod
    def problems(cls, name: str, entry: Mapping, config: Mapping) -> list[str]:
        return reference_problems(f"scorers.{name}.clip_model", entry["clip_model"], config, "clip_models",
                                  what="CLIP model")

    @classmethod
    def inputs(cls, model, variant, promptset, entry, config):
        return {"embeddings": paths.fill(paths.EMBEDDINGS, model=model, variant=variant, promptset=promptset,
                                         clip_model=entry["clip_model"])}

    @classmethod
    def resolved(cls, entry, config):
        return {"clip_model": clip_model_spec(config, entry["clip_model"])}

    @classmethod
    def locate_weights(cls, entry):
        return f"the CLIP model clip_models.{entry['clip_model']}"


SCORERS = Registry("scorers", "kind", Scorer, {
    "oracle": "editrobust.scoring.oracle:Oracle",
    "black": "editrobust.scoring.black:Black",
    "clip_gender": "editrobust.scoring.clip:ClipGender",
    "clip_pair": "editrobust.scoring.clip:ClipPair",
    "clip_safety": "editrobust.scoring.safety:ClipSafety",
    "sd_safety_checker": "editrobust.scoring.safety:SdSafetyChecker",
    "nudenet": "editrobust.scoring.nudenet:NudeNet",
    "human": "editrobust.scoring.human:Human",
})


def run_scorer(entry: Mapping, index: pd.DataFrame, image_dir: str | Path, **inputs) -> pd.DataFrame:
    """Score an image set with the scorer of `entry` (its defaults filled)."""
    scorer = SCORERS.get(entry["kind"])
    return scorer().run(index, Path(image_dir), scorer.with_defaults(entry), **inputs)


def score_images(index_csv: str | Path, entry: Mapping, inputs: Mapping[str, str | Path] | None = None) -> pd.DataFrame:
    """The rule `score_images`: one row per image of the set whose index is `index_csv`.
    `entry` is the scorer's entry with its `resolved` keys in place."""
    index_csv = Path(index_csv)
    return run_scorer(entry, pd.read_csv(index_csv), index_csv.parent, **dict(inputs or {}))


def embed_images(index_csv: str | Path, clip_model: Mapping, out_path: str | Path, device: str = "cpu") -> None:
    """The rule `embed_images`: the image set's OpenCLIP embeddings, shared by its CLIP scorers."""
    from editrobust.scoring.embeddings import embed_image_set

    index_csv = Path(index_csv)
    embed_image_set(pd.read_csv(index_csv), index_csv.parent, dict(clip_model), out_path, device=device)


def summarize_scores(scores_csv: str | Path) -> pd.DataFrame:
    """The rule `summarize_scores`: per-group label counts of a score file."""
    from editrobust.scoring.summary import summarize

    return summarize(pd.read_csv(scores_csv))


def quality_metrics(index_csv: str | Path, entry: Mapping, reference_dir=None, embeddings=None,
                    device: str = "cpu") -> pd.DataFrame:
    """The rule `quality_metrics`: FID and CLIP score of an image set (quality.py)."""
    from editrobust.scoring.quality import quality_table

    index_csv = Path(index_csv)
    return quality_table(pd.read_csv(index_csv), index_csv.parent, dict(entry), reference_dir=reference_dir,
                         embeddings=embeddings, device=device)


def render_reference(out_dir: str | Path, reference: Mapping) -> int:
    """The rule `render_reference`: a toy quality set's reference images; returns their number."""
    from editrobust.scoring.quality import render_toy_reference

    if reference["source"] != "toy":
        raise ValueError("only `source: toy` references are rendered; a `dir` reference is read from its path")
    render_toy_reference(out_dir, n=int(reference["n"]), seed=int(reference["seed"]))
    return int(reference["n"])
