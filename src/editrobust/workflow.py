"""The rules' input, param and target functions, for one validated config.

Rule files (workflow/rules/*.smk) are wiring: each rule's inputs and params are one call into a
`Rules` object built once from the config (`R = Rules(config)` in common.smk), so the logic that
turns a config into a job is here, where tests reach it. Params are canonical JSON slices of the
config (config.canonical): a job re-runs when the slice it reads changes, and only then.

Every torch rule takes its device, threads and `gpu` resource from here the same way
(`device`, `torch_threads`, `torch_gpu`); a job script reads the device with runtime.job_device,
which fails loudly when a rule holding the `gpu` resource passes none.
"""

from __future__ import annotations

import functools
import glob
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from editrobust import paths
from editrobust import variant_names as vn
from editrobust.config import canonical
from editrobust.data.downloads import download_for_path, manifest_path
from editrobust.data.finetune_datasets import dataset_inputs
from editrobust.editors import EDITORS
from editrobust.report import resolve as resolve_figure
from editrobust.report import input_paths as figure_input_paths
from editrobust.report.spec import kit_index_paths, kit_labels_paths
from editrobust.scoring import SCORERS, clip_model_spec
from editrobust.tables import TABLES, edit_records
from editrobust.tables import input_paths as table_input_paths
from editrobust.tables import resolve as resolve_table
from editrobust.tables.power import power_path
from editrobust.tables.power import supports as power_supports

# Where labels come back: changing it must not re-blind an annotation kit.
KIT_OUTPUT_ONLY = ("returned", "scorer")
FIGURE_CATEGORIES = {"grid": "Sample grids", "bars": "Figures", "persistence": "Persistence", "league": "Robustness"}


def declared_checkpoints(outputs: Sequence[str], final: str) -> list[int]:
    """The steps of the `@<step>` checkpoints a fine-tune job declares besides its `final`
    variant.json: what it writes (workflow/scripts/finetune_model.py)."""
    final = os.path.normpath(final)
    return sorted(vn.parse(Path(p).parent.name).checkpoint for p in outputs if os.path.normpath(p) != final)


class Rules:
    """Input, param and target functions of the workflow's rules (methods taking `wildcards`)."""

    def __init__(self, config: Mapping):
        self.config = config
        self.device = config["device"]
        # Jobs that run torch models hold the `gpu` token (`--resources gpu=1`), so on a GPU they
        # run one at a time. On the CPU (`device: cpu`, the toy default) they hold none and run side
        # by side, one thread each: on 2 cores, four toy fine-tunes took 87 s that way and 194 s one
        # at a time with two threads each (benchmarks/README.md). Thread counts change float
        # reductions, and so the numbers: they are part of what a run is.
        self.torch_gpu = 0 if self.device == "cpu" else 1
        self.torch_threads = 1 if self.device == "cpu" else 2

    def section(self, name: str) -> Mapping:
        return self.config.get(name) or {}

    # --- files --------------------------------------------------------------------------------------
    def via_downloads(self, path: str) -> str:
        """A config path inside resources/datasets/<download>/ depends on that download's manifest
        (written last, after every file was verified); any other path on itself."""
        return download_for_path(str(path), self.section("downloads")) or str(path)

    def variant_chain(self, wildcards) -> list[str]:
        """Every variant.json a variant is composed from (base first): loading needs them all."""
        return [paths.variant_json(wildcards.model, str(v)) for v in vn.parse(wildcards.variant).chain]

    # --- models and downloads -------------------------------------------------------------------------
    def model_slice(self, wildcards) -> str:
        """Only this model's entry: editing another model's entry re-runs nothing here."""
        return canonical(self.config["models"][wildcards.model])

    def sampling_slice(self, wildcards) -> str:
        """The model's sampling settings (SamplingSettings)."""
        return canonical(self.config["models"][wildcards.model].get("sampling", {}))

    def base_model_inputs(self, wildcards) -> dict:
        """A hub model's base variant records its verified snapshot."""
        if self.config["models"][wildcards.model]["kind"] == "hub":
            return {"snapshot": paths.fill(paths.HUB_SNAPSHOT, model=wildcards.model)}
        return {}

    def hub_model_slice(self, wildcards) -> str:
        entry = self.config["models"][wildcards.model]
        if entry["kind"] != "hub":
            raise ValueError(f"models.{wildcards.model} is not a hub model (kind {entry['kind']})")
        return canonical(entry)

    def download_slice(self, wildcards) -> str:
        return canonical(self.config["downloads"][wildcards.download])

    def download_inputs(self, wildcards) -> dict:
        """A COCO image download needs the ids of its COCO promptset."""
        entry = self.config["downloads"][wildcards.download]
        if entry["kind"] == "coco_images":
            return {"promptset": paths.fill(paths.PROMPTSET, promptset=entry["promptset"])}
        return {}

    # --- edits ------------------------------------------------------------------------------------------
    def editor_slice(self, wildcards) -> str:
        return canonical(self.config["editors"][wildcards.editor])

    def edit_inputs(self, wildcards) -> dict:
        """The model the edit starts from (`chain`: its variant.json files, base first; the base
        for `ed-E`, the fine-tuned variant `{parent}` for `{parent}+ed-E`) and the files the
        editor's method reads (editors.Editor.inputs)."""
        entry = self.config["editors"][wildcards.editor]
        parent = getattr(wildcards, "parent", vn.BASE)
        extra = EDITORS.get(entry["method"]).inputs(wildcards.model, entry, self.config, parent)
        chain = [paths.variant_json(wildcards.model, str(v)) for v in vn.parse(parent).chain]
        return {"chain": chain, **{k: self.via_downloads(v) for k, v in extra.items()}}

    def editor_resolved_slice(self, wildcards) -> str:
        """What the editor needs from other sections (editors.Editor.resolved), e.g. a CLIP model spec."""
        entry = self.config["editors"][wildcards.editor]
        return canonical(EDITORS.get(entry["method"]).resolved(entry, self.config))

    def statistic_corpus_inputs(self, wildcards) -> list[str]:
        """ReFACT's statistic reads a downloaded corpus (WikiText-103 lines) unless it is the toy's."""
        if wildcards.corpus in self.section("downloads"):
            return [manifest_path(wildcards.corpus)]
        return []

    # --- fine-tunes ---------------------------------------------------------------------------------------
    def dataset_inputs(self, wildcards) -> list[str]:
        return sorted({self.via_downloads(p) for p in dataset_inputs(self.config["datasets"][wildcards.dataset])})

    def dataset_slice(self, wildcards) -> str:
        return canonical(self.config["datasets"][wildcards.dataset])

    def finetune_output(self, finetuner: str, parent: str) -> str:
        """The variant.json pattern of `finetuner` applied to the variant `parent` (a pattern itself,
        e.g. "ed-{editor}"): the output of the job of every such variant whose checkpoints nothing
        reads (`checkpointed_finetunes` are the others)."""
        return paths.fill(paths.VARIANT_JSON, variant=vn.then(parent, vn.ft(finetuner)))

    # --- checkpoints: saved only where something reads them ------------------------------------------
    def _consumed_files(self) -> list[str]:
        """Every file of a variant that a target of the config reads: figures' and tables' inputs,
        the evaluations' and quality sets' outputs (all_targets), the annotation kits' image sets."""
        out = []
        for name in self.section("figures"):
            out += figure_input_paths(self.figure_spec(name))
        for name in self.section("tables"):
            out += table_input_paths(self.table_spec(name))
        out += self.all_targets()
        for name in self.section("annotation_kits"):
            out += kit_index_paths(self.kit_spec(name))
        return out

    @functools.cached_property
    def checkpoints_read(self) -> dict[tuple[str, str], list[int]]:
        """{(model, fine-tuned variant): the steps of its `@<step>` checkpoints that something reads}
        (a persistence figure's points, an evaluation of `<variant>@<step>`). A fine-tune writes
        exactly these: a finetuner's `save_every` says where checkpoints may be, not that every
        edited fine-tune of a grid (92 per fine-tuner on the paper's SD1.4) saves them."""
        steps: dict[tuple[str, str], set[int]] = {}
        for path in self._consumed_files():
            found = paths.model_variant(path)
            if found is None:
                continue
            model, name = found
            variant = vn.parse(name)
            if variant.checkpoint is not None:
                steps.setdefault((model, str(vn.Variant(variant.steps))), set()).add(variant.checkpoint)
        return {key: sorted(s) for key, s in sorted(steps.items())}

    def checkpointed_finetunes(self, finetuner: str) -> list[dict]:
        """The fine-tune jobs of `finetuner` that also write checkpoints, one per (model, variant) of
        `checkpoints_read`: {rule (its name), generic (the rule it takes over from), model, variant,
        chain (the parent's variant.json files, base first), final, checkpoints (variant.json files)}.
        Each is a rule of its own with these concrete outputs, ordered before the generic rule
        (`finetune_<F>` / `finetune_<F>_edited`), whose job would write the same final variant."""
        out = []
        for (model, name), steps in self.checkpoints_read.items():
            variant = vn.parse(name)
            if variant.last != vn.Step(vn.FINETUNE, finetuner):
                continue
            editors = variant.parent.editors
            generic = f"finetune_{finetuner}" + ("_edited" if editors else "")
            out.append(dict(
                rule="_".join([generic, "checkpoints", model, *editors]),
                generic=generic, model=model, variant=name,
                chain=[paths.variant_json(model, str(v)) for v in variant.parent.chain],
                final=paths.variant_json(model, name),
                checkpoints=[paths.variant_json(model, vn.at_step(name, s)) for s in steps]))
        return out

    def finetuner_params(self, finetuner: str) -> dict:
        """The finetuner's entry and its dataset's entry, canonical: changing either re-runs only
        this finetuner's variants. Functions of the wildcards, so that Snakemake does not read the
        braces of a prompt template ("a photo of {identifier} {class_name}") as wildcards."""
        entry = self.config["finetuners"][finetuner]
        dataset = canonical({"name": entry["dataset"], "entry": self.config["datasets"][entry["dataset"]]})
        return dict(finetuner=lambda wildcards: canonical(entry), dataset=lambda wildcards: dataset)

    def latent_cache(self, finetuner: str) -> str:
        return paths.fill(paths.LATENT_CACHE, dataset=self.config["finetuners"][finetuner]["dataset"])

    # --- promptsets, sampling, scoring ------------------------------------------------------------------
    def promptset_slice(self, wildcards) -> str:
        return canonical(self.config["promptsets"][wildcards.promptset])

    def promptset_inputs(self, wildcards) -> list[str]:
        """A CSV promptset's file (or a RoAD file) is an input, so editing it re-runs its samples."""
        entry = self.config["promptsets"][wildcards.promptset]
        if entry["source"] == "csv":
            return [self.via_downloads(entry["path"])]
        if entry["source"] == "road" and entry["road"]["file"] != "toy":
            return [self.via_downloads(entry["road"]["file"])]
        if "download" in entry:  # i2p, coco: sampled from a download
            return [manifest_path(entry["download"])]
        return []

    def clip_model_slice(self, wildcards) -> str:
        """A `clip_models` entry plus its name: what the embeddings and the CLIP scorers load."""
        return canonical(clip_model_spec(self.config, wildcards.clip_model))

    def scorer_slice(self, wildcards) -> str:
        """The scorer's entry with what it names elsewhere resolved (scoring.Scorer.resolved: a CLIP
        model's spec), so changing the CLIP weights re-runs its scores."""
        entry = self.config["scorers"][wildcards.scorer]
        return canonical({**entry, **SCORERS.get(entry["kind"]).resolved(entry, self.config)})

    def score_inputs(self, wildcards) -> dict:
        """The image set's index and the files its scorer reads (scoring.Scorer.inputs)."""
        w = wildcards
        entry = self.config["scorers"][w.scorer]
        extra = SCORERS.get(entry["kind"]).inputs(w.model, w.variant, w.promptset, entry, self.config)
        return {"index": paths.samples_index(w.model, w.variant, w.promptset), **extra}

    # --- quality --------------------------------------------------------------------------------------
    def quality_slice(self, wildcards) -> str:
        """The quality set's entry with its CLIP model spec resolved; `models`/`variants` only say
        what `all` builds, so they are left out (adding a variant re-runs nothing)."""
        entry = {k: v for k, v in self.config["quality_sets"][wildcards.quality_set].items()
                 if k not in ("models", "variants")}
        if entry.get("clip_score") is not None:
            name = entry["clip_score"]["clip_model"]
            entry["clip_score"] = {**entry["clip_score"], "clip_model": clip_model_spec(self.config, name)}
        return canonical(entry)

    def quality_inputs(self, wildcards) -> dict:
        entry = self.config["quality_sets"][wildcards.quality_set]
        image_set = dict(model=wildcards.model, variant=wildcards.variant, promptset=entry["promptset"])
        out = {"index": paths.fill(paths.SAMPLES_INDEX, **image_set)}
        if entry.get("fid") is not None:
            ref = entry["reference"]
            out["reference"] = (self.via_downloads(ref["path"]) if ref["source"] == "dir"
                                else paths.fill(paths.REFERENCE, quality_set=wildcards.quality_set))
        if entry.get("clip_score") is not None:
            out["embeddings"] = paths.fill(paths.EMBEDDINGS, **image_set, clip_model=entry["clip_score"]["clip_model"])
        return out

    def reference_slice(self, wildcards) -> str:
        return canonical(self.config["quality_sets"][wildcards.quality_set]["reference"])

    # --- tables and figures -----------------------------------------------------------------------------
    def _resolved(self, section: str, name: str, resolve) -> dict:
        entries = self.section(section)
        if name not in entries:
            raise KeyError(f"no {section[:-1]} {name!r} in the config's {section} (defined: {', '.join(entries) or 'none'})")
        return resolve(entries[name], self.config)

    def table_spec(self, name: str) -> dict:
        """The table's config slice (its kind's TableKind.resolve)."""
        return self._resolved("tables", name, resolve_table)

    def table_inputs(self, wildcards) -> list[str]:
        """Exactly the score (or quality) files this table reads, and the records of the edits it
        shows (an edit that missed its target marks its cells)."""
        spec = self.table_spec(wildcards.table)
        return table_input_paths(spec) + list(edit_records(spec).values())

    def table_slice(self, wildcards) -> str:
        return canonical(self.table_spec(wildcards.table))

    def power_slice(self, wildcards) -> str:
        """The seed-planning targets (`power`, defaults from the schema when absent)."""
        return canonical(self.section("power"))

    def figure_spec(self, name: str) -> dict:
        """The figure's config slice (its kind's FigureKind.resolve)."""
        return self._resolved("figures", name, resolve_figure)

    def figure_inputs(self, wildcards) -> list[str]:
        return figure_input_paths(self.figure_spec(wildcards.figure))

    def figure_slice(self, wildcards) -> str:
        return canonical(self.figure_spec(wildcards.figure))

    def figure_category(self, wildcards) -> str:
        return FIGURE_CATEGORIES.get(self.config["figures"][wildcards.figure]["kind"], "Figures")

    def figure_labels(self, wildcards) -> dict:
        return {"figure": wildcards.figure, "kind": self.config["figures"][wildcards.figure]["kind"]}

    # --- annotation kits -----------------------------------------------------------------------------------
    def kit_spec(self, name: str) -> dict:
        """The kit's entry with its name-dependent default (`returned`: annotations/<name>)."""
        entry = dict(self.config["annotation_kits"][name])
        entry.setdefault("returned", paths.fill(paths.KIT_RETURNED, kit=name))
        return entry

    def kit_inputs(self, wildcards) -> list[str]:
        return kit_index_paths(self.kit_spec(wildcards.kit))

    def kit_slice(self, wildcards) -> str:
        """What the blinded kit is made of (not where its labels go back: that must not re-blind it)."""
        return canonical({k: v for k, v in self.kit_spec(wildcards.kit).items() if k not in KIT_OUTPUT_ONLY})

    def kit_labels(self, name: str) -> dict[str, str]:
        """{variant: labels file} of the kit's human scorer (its `labels` template filled in)."""
        spec = self.kit_spec(name)
        return kit_labels_paths(spec, self.config["scorers"][spec["scorer"]]["labels"])

    def returned_annotations(self, name: str) -> list[str]:
        """Every annotator's CSV in the kit's `returned` folder: dropping one in re-runs the ingest."""
        return sorted(glob.glob(os.path.join(self.kit_spec(name)["returned"], "*.csv")))

    # --- targets -------------------------------------------------------------------------------------------
    def all_targets(self) -> list[str]:
        """What `snakemake` alone builds: each evaluation's summaries and each quality set's files."""
        out = []
        for ev in self.config["evaluations"]:
            for variant in ev["variants"]:
                for scorer in ev["scorers"]:
                    out.append(paths.fill(paths.SUMMARY, model=ev["model"], variant=variant,
                                          promptset=ev["promptset"], scorer=scorer))
        for name, quality_set in self.section("quality_sets").items():
            for model in quality_set["models"]:
                for variant in quality_set["variants"]:
                    out.append(paths.quality(model, variant, name))
        return out

    def _own_target(self, table: str | None) -> str | None:
        """The named target that builds the table (None: `tables`), see TableKind.own_target."""
        entry = self.section("tables").get(table) if table else None
        return TABLES.get(entry["kind"]).own_target if entry else None

    def table_targets(self, target: str | None = None) -> list[str]:
        """The tables `snakemake tables` builds (target None), or those of a kind's own target."""
        return [paths.table(name, ext) for name in self.section("tables") if self._own_target(name) == target
                for ext in paths.TABLE_EXTENSIONS]

    def power_targets(self) -> list[str]:
        """The seed-planning tables (`snakemake power`) of every table whose kind supports them."""
        return [power_path(name, ext) for name in self.section("tables")
                if power_supports(self.table_spec(name)) for ext in paths.POWER_EXTENSIONS]

    def figure_targets(self, target: str | None = None) -> list[str]:
        """The figures `snakemake figures` builds (target None: those not drawn from a table of a
        kind with its own target), or those drawn from that target's tables."""
        return [paths.figure(name, ext) for name, entry in self.section("figures").items()
                if self._own_target(entry.get("table")) == target for ext in ("png", "pdf")]

    def own_target_names(self) -> list[str]:
        """The named targets of the config's table kinds that have one (e.g. `robustness`)."""
        return sorted({t for name in self.section("tables") if (t := self._own_target(name)) is not None})

    def own_targets(self, target: str) -> list[str]:
        """What a table kind's own named target builds (e.g. `snakemake robustness`)."""
        return self.table_targets(target) + self.figure_targets(target)

    def kit_targets(self) -> list[str]:
        return [paths.fill(paths.KIT_KEY, kit=name) for name in self.section("annotation_kits")]
