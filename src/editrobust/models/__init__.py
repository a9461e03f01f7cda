"""Models: base models (the toy world's, a local diffusers directory, a pinned hub snapshot, a
released architecture with random weights), the variants derived from them on disk, and builders
of tiny and full-size architectures.

    base        prepare_base_model and snapshot_hub_model (the stage's entry points)
    variants    a variant directory: variant.json and its delta; loading composes the chain
    components  a pipeline's components and model family; the delta format
    toy         training the toy model; builders, tiny, full_size: architectures
"""

# A config's model `family` -> the released architecture of models.full_size it stands for.
FAMILY_ARCHITECTURE = {"sd1": "sd14", "sdxl": "sdxl", "flux": "flux_schnell"}
