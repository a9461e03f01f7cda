# Helpers shared by the rules: config validation and the config slices rules take as params.
from pathlib import Path

from editrobust import paths
from editrobust import variant_names
from editrobust.config import ConfigError, canonical, validate_config
from editrobust.editors import EDITORS

try:
    config.update(validate_config(config))
except ConfigError as e:
    raise WorkflowError(str(e)) from None

NAME = "[A-Za-z0-9][A-Za-z0-9_]*"

# Jobs that run torch models hold the `gpu` token (`--resources gpu=1`), so on a GPU they run one
# at a time. On the CPU (`device: cpu`, the toy default) they hold none and run side by side, one
# thread each: on 2 cores, four toy fine-tunes took 87 s that way and 194 s one at a time with two
# threads each (benchmarks/README.md). The base model's training alone keeps two threads (1.4x
# faster per step than one; nothing else can run beside it).
TORCH_GPU = 0 if config.get("device") == "cpu" else 1
TORCH_THREADS = 1 if config.get("device") == "cpu" else 2


wildcard_constraints:
    model=NAME,
    promptset=NAME,
    scorer=NAME,
    editor=NAME,
    layer="[0-9]+",
    corpus=NAME,
    variant="[A-Za-z0-9][A-Za-z0-9_.+@-]*",


def model_slice(wildcards):
    """Only this model's entry: editing another model's entry re-runs nothing here."""
    return canonical(config["models"][wildcards.model])


def promptset_slice(wildcards):
    return canonical(config["promptsets"][wildcards.promptset])


def scorer_slice(wildcards):
    return canonical(config["scorers"][wildcards.scorer])


def promptset_inputs(wildcards):
    """A CSV promptset's file (or a RoAD file) is an input, so editing it re-runs its samples."""
    entry = config["promptsets"][wildcards.promptset]
    if entry["source"] == "csv":
        return [via_downloads(entry["path"])]
    if entry["source"] == "road" and entry["road"]["file"] != "toy":
        return [via_downloads(entry["road"]["file"])]
    if "download" in entry:  # i2p, coco: sampled from a download
        return [manifest_path(entry["download"])]
    return []


def all_targets():
    out = []
    for ev in config["evaluations"]:
        for variant in ev["variants"]:
            for scorer in ev["scorers"]:
                out.append(
                    f"results/summaries/{ev['model']}/{variant}/{ev['promptset']}/{scorer}.csv"
                )
    for name, quality_set in config.get("quality_sets", {}).items():
        for model in quality_set["models"]:
            for variant in quality_set["variants"]:
                out.append(f"results/quality/{model}/{variant}/{name}.csv")
    return out


def editor_slice(wildcards):
    return canonical(config["editors"][wildcards.editor])


def variant_chain_inputs(wildcards):
    """Every variant.json a variant is composed from (base first): loading needs them all."""
    return [paths.variant_json(wildcards.model, str(v)) for v in variant_names.parse(wildcards.variant).chain]


def edit_inputs(wildcards):
    """The base model and the files the editor's method reads (editors.Editor.inputs)."""
    entry = config["editors"][wildcards.editor]
    extra = EDITORS.get(entry["method"]).inputs(wildcards.model, entry, config)
    return {"base": paths.variant_json(wildcards.model, "base"), **{k: via_downloads(v) for k, v in extra.items()}}


def editor_resolved_slice(wildcards):
    """What the editor needs from other sections (editors.Editor.resolved), e.g. a CLIP model spec."""
    entry = config["editors"][wildcards.editor]
    return canonical(EDITORS.get(entry["method"]).resolved(entry, config))


def sampling_settings_slice(wildcards):
    return canonical(config["models"][wildcards.model].get("sampling", {}))
