"""Pre-flight: before a long grid, is everything it needs on this machine, and does it fit?

`snakemake preflight` (rule in workflow/rules/preflight.smk; any `--configfile`) checks what
everything the config asks for needs (`snakemake report`: its tables, figures, annotation kits,
evaluations and quality sets); `python -m editrobust.preflight [--configfile F] [TARGET ...]`
checks given target files only (e.g. `results/tables/table1.csv`). Either prints one table and
exits non-zero if any row would fail:

- **inputs offline**: every hub snapshot (models of `kind: hub`, with a replacement VAE), download
  (`downloads.<name>`: its manifest) and input file the targets need, and every scorer's, CLIP
  model's and FID extractor's weights, looked up exactly as the jobs look them up (local files
  only). A missing one names the command that fetches it.
- **disk**: the outputs still to be written (images, edit and fine-tune variants with their
  checkpoints, latent caches, a fine-tune's training state while it runs, hub snapshots still to
  fetch), estimated per variant kind from the config, against the free space of the working
  directory's disk.
- **GPU memory**, when a GPU is visible: the largest planned job's weights (and, for a fine-tune,
  its gradients and optimizer states) against the card's memory. A lower bound: activations are
  not counted, so "ok" says the job is not impossible, not that it fits.

What the targets need is found by walking back from each target file through the workflow's own
input functions (`workflow.Rules`), as Snakemake does, so a file a rule reads is a file checked
here. Sizes come from parameter counts: the released architectures built on the meta device
(`models.full_size`; a `kind: path` model is taken to have its family's released shapes), the toy
model built small on the CPU, and what each editor and fine-tuner says it changes and trains.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

from editrobust import paths
from editrobust import variant_names as vn
from editrobust.models import FAMILY_ARCHITECTURE

OK, MISSING, FAIL, INFO = "ok", "missing", "too small", "info"
# PNG bytes per pixel of a sampled image: SD outputs at 512 px are about 0.4 MB (1.5 B/px).
PNG_BYTES_PER_PIXEL = 1.5
# Bytes per parameter of the released weight files a snapshot fetches (no precision variant):
# SD1.4 and SDXL base publish float32 files, FLUX.1-schnell bfloat16.
RELEASED_BYTES = {"sd1": 4, "sdxl": 4, "flux": 2}
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
GIB = 1024 ** 3


@dataclass
class Check:
    """One row of the pre-flight table."""

    what: str  # "hub snapshot", "download", "weights", "input file", "disk", "GPU memory"
    name: str  # the config key or file it is about
    status: str  # OK, MISSING, FAIL or INFO
    detail: str = ""  # where it was found, or what is missing
    fix: str = ""  # the command (or step) that fixes it

    @property
    def failed(self) -> bool:
        return self.status in (MISSING, FAIL)


@dataclass
class Plan:
    """What a set of target files needs: every workflow file upstream of them (existing or not),
    and the inputs no rule makes (downloads, snapshots, weights, files on disk)."""

    files: set[str] = field(default_factory=set)
    downloads: set[str] = field(default_factory=set)
    hub_models: set[str] = field(default_factory=set)
    plain_files: set[str] = field(default_factory=set)
    scorers: set[str] = field(default_factory=set)
    clip_models: set[str] = field(default_factory=set)
    quality_sets: set[str] = field(default_factory=set)
    editors: set[str] = field(default_factory=set)

    def matching(self, template: str) -> list[dict]:
        """The fields of every planned file of `template`, sorted by path."""
        return [f for f in (match(template, p) for p in sorted(self.files)) if f is not None]


# --- walking back from the targets ------------------------------------------------------------------
_FIELD = re.compile(r"\{(\w+)\}")


def match(template: str, path: str) -> dict | None:
    """The fields of `path` if it is an instance of the paths template, else None."""
    pattern, last = "", 0
    for m in _FIELD.finditer(template):
        pattern += re.escape(template[last:m.start()]) + f"(?P<{m.group(1)}>[^/]+?)"  # shortest: L{layer}_{corpus}
        last = m.end()
    found = re.fullmatch(pattern + re.escape(template[last:]), os.path.normpath(path))
    return found.groupdict() if found else None


def _values(x) -> list[str]:
    if isinstance(x, Mapping):
        x = list(x.values())
    if isinstance(x, (str, os.PathLike)):
        return [str(x)]
    return [str(v) for item in x for v in _values(item)]


class _Walker:
    """Each workflow path template, and the files its rule reads (workflow.Rules)."""

    def __init__(self, config: Mapping):
        from editrobust.workflow import Rules

        self.config = config
        self.R = Rules(config)
        self.plan = Plan()
        self.handlers = [
            (paths.TABLE, lambda f: self.R.table_inputs(SimpleNamespace(**f))),
            (paths.FIGURE, lambda f: self.R.figure_inputs(SimpleNamespace(**f))),
            (paths.KIT_KEY, self._kit), (paths.KIT_AGREEMENT, self._kit),
            (paths.SUMMARY, lambda f: [paths.fill(paths.SCORES, **f)]),
            (paths.SCORES, self._scores),
            (paths.EMBEDDINGS, self._embeddings),
            (paths.QUALITY, self._quality),
            (paths.REFERENCE, lambda f: []),
            (paths.SAMPLES_INDEX, lambda f: self.R.variant_chain(SimpleNamespace(**f)) + [paths.fill(paths.PROMPTSET, **f)]),
            (paths.VARIANT_JSON, self._variant),
            (paths.REFACT_STATISTIC, lambda f: self.R.variant_chain(SimpleNamespace(**f))
             + self.R.statistic_corpus_inputs(SimpleNamespace(**f))),
            (paths.LATENT_CACHE, lambda f: [paths.variant_json(f["model"], vn.BASE)]
             + self.R.dataset_inputs(SimpleNamespace(**f))),
            (paths.PROMPTSET, lambda f: self.R.promptset_inputs(SimpleNamespace(**f))),
        ]

    def walk(self, targets: Iterable[str]) -> Plan:
        todo = [os.path.normpath(t) for t in targets]
        while todo:
            path = todo.pop()
            if path in self.plan.files or path in self.plan.plain_files:
                continue
            todo.extend(os.path.normpath(p) for p in self._inputs(path))
        return self.plan

    def _inputs(self, path: str) -> list[str]:
        if (f := match(paths.MANIFEST, path)) is not None:
            self.plan.files.add(path)
            self.plan.downloads.add(f["download"])
            return []
        if (f := match(paths.HUB_SNAPSHOT, path)) is not None:
            self.plan.files.add(path)
            self.plan.hub_models.add(f["model"])
            return []
        for template, inputs in self.handlers:
            if (f := match(template, path)) is not None:
                self.plan.files.add(path)
                return _values(inputs(f))
        self.plan.plain_files.add(path)  # made by no rule: it must be there
        return []

    def _kit(self, f) -> list[str]:
        return self.R.kit_inputs(SimpleNamespace(**f))

    def _scores(self, f) -> list[str]:
        self.plan.scorers.add(f["scorer"])
        return _values(self.R.score_inputs(SimpleNamespace(**f)))

    def _embeddings(self, f) -> list[str]:
        self.plan.clip_models.add(f["clip_model"])
        return [paths.fill(paths.SAMPLES_INDEX, **{k: f[k] for k in ("model", "variant", "promptset")})]

    def _quality(self, f) -> list[str]:
        self.plan.quality_sets.add(f["quality_set"])
        return _values(self.R.quality_inputs(SimpleNamespace(**f)))

    def _variant(self, f) -> list[str]:
        model, variant = f["model"], vn.parse(f["variant"])
        w = SimpleNamespace(model=model)
        if variant.checkpoint is not None:  # written by the same job as its run's final variant
            return [paths.variant_json(model, str(vn.Variant(variant.steps)))]
        if not variant.steps:
            entry = self.config["models"][model]
            local = [entry["path"]] if entry["kind"] == "path" else []
            return _values(self.R.base_model_inputs(w)) + local
        last = variant.steps[-1]
        if last.kind == vn.EDIT:
            self.plan.editors.add(last.name)
            return _values(self.R.edit_inputs(SimpleNamespace(model=model, editor=last.name,
                                                              parent=str(variant.parent))))
        chain = [paths.variant_json(model, str(v)) for v in variant.parent.chain]
        return chain + [paths.fill(self.R.latent_cache(last.name), model=model)]


def all_targets(config: Mapping) -> list[str]:
    """Everything the config asks for: what `snakemake report` builds, and the tables (and their
    figures) of a kind with a target of its own (`snakemake robustness`)."""
    from editrobust.workflow import Rules

    R = Rules(config)
    own = [path for target in R.own_target_names() for path in R.own_targets(target)]
    return R.all_targets() + R.table_targets() + R.figure_targets() + R.kit_targets() + own


def plan_targets(config: Mapping, targets: Iterable[str] | None = None) -> Plan:
    """What `targets` (default: everything the config asks for) need."""
    return _Walker(config).walk(all_targets(config) if targets is None else targets)


# --- inputs that must be on this machine --------------------------------------------------------------
def _snakemake_command(target: str, configfile: str | None) -> str:
    config = f" --configfile {configfile}" if configfile else ""
    return f"snakemake {target} --cores 1{config}  (on a machine with internet)"


def check_hub_model(name: str, entry: Mapping, configfile: str | None = None) -> list[Check]:
    """A hub model's snapshot: recorded already, or in a local cache (the snapshot job then runs
    offline), else missing."""
    from editrobust import hub

    record = paths.fill(paths.HUB_SNAPSHOT, model=name)
    if Path(record).is_file():
        return [Check("hub snapshot", f"models.{name}", OK, f"{entry['hub_id']} recorded in {record}")]
    out = []
    wanted = [("", entry["hub_id"], entry["revision"], True)]
    if entry.get("vae"):
        wanted.append((".vae", entry["vae"]["hub_id"], entry["vae"]["revision"], False))
    for suffix, repo, revision, pipeline in wanted:
        key = f"models.{name}{suffix}"
        found = _local_hub_snapshot(repo, revision, pipeline)
        if found is not None:
            out.append(Check("hub snapshot", key, OK, f"{repo}@{revision[:12]} in {found}"))
        else:
            # a pipeline's exact files come from its model_index.json, which is not here either
            patterns = ["model_index.json", "*/*.safetensors", "*/*.json", "*/*.txt", "*/*.model"] if pipeline \
                else hub.MODEL_PATTERNS["allow_patterns"]
            out.append(Check("hub snapshot", key, MISSING, f"{repo}@{revision[:12]} is in no local cache",
                             f"{_snakemake_command(record, configfile)}, or "
                             f"{hub.fetch_command(repo, revision, 'model', patterns)}"))
    return out


def _local_hub_snapshot(repo: str, revision: str, pipeline: bool) -> Path | None:
    """The snapshot the job would use, from the local caches only (never the network)."""
    from editrobust import hub

    try:
        if pipeline:
            return hub.snapshot(repo, revision, pipeline=True, local_only=True)
        return hub.snapshot(repo, revision, local_only=True, **hub.MODEL_PATTERNS)
    except (hub.SnapshotMissing, FileNotFoundError, OSError, ValueError):
        return None


def check_download(name: str, configfile: str | None = None) -> Check:
    manifest = paths.fill(paths.MANIFEST, download=name)
    if Path(manifest).is_file():
        return Check("download", f"downloads.{name}", OK, f"verified, {manifest}")
    return Check("download", f"downloads.{name}", MISSING, f"no {manifest}", _snakemake_command(manifest, configfile))


def check_plain_file(path: str) -> Check:
    if Path(path).exists():
        return Check("input file", path, OK, "present")
    return Check("input file", path, MISSING, "no such file or directory", "create it, or fix the config key naming it")


def _weights_check(owner: str, locate) -> Check:
    from editrobust.scoring.common import WeightsUnavailable

    try:
        where = locate()
    except (WeightsUnavailable, ImportError, ValueError) as e:
        message = str(e).removeprefix(f"{owner}: ")
        return Check("weights", owner, MISSING, message.split(". ")[0], message)
    return Check("weights", owner, OK, str(where or "none needed"))


def check_clip_model(name: str, config: Mapping) -> Check:
    from editrobust.scoring import clip_model_spec
    from editrobust.scoring.embeddings import resolve

    return _weights_check(f"clip_models.{name}", lambda: resolve(clip_model_spec(config, name))[0])


def weight_checks(plan: Plan, config: Mapping) -> list[Check]:
    """Every scorer's, editor's, CLIP model's and FID extractor's weights the plan needs."""
    from editrobust.editors import EDITORS
    from editrobust.scoring import SCORERS

    clip_models = set(plan.clip_models)
    out = []
    for name in sorted(plan.scorers):
        entry = config["scorers"][name]
        scorer = SCORERS.get(entry["kind"])
        clip_models.update(_clip_names(scorer.resolved(entry, config)))
        out.append(_weights_check(f"scorers.{name}", lambda s=scorer, e=entry: s.locate_weights(s.with_defaults(e))))
    for name in sorted(plan.editors):
        entry = config["editors"][name]
        clip_models.update(_clip_names(EDITORS.get(entry["method"]).resolved(entry, config)))
    for name in sorted(plan.quality_sets):
        entry = config["quality_sets"][name]
        if entry.get("clip_score"):
            clip_models.add(entry["clip_score"]["clip_model"])
        if entry.get("fid") and entry["fid"].get("extractor", "inception") == "inception":
            from editrobust.scoring.quality import inception_weights_path

            out.append(_weights_check(f"quality_sets.{name}.fid",
                                      lambda e=entry: inception_weights_path(e["fid"].get("weights"))))
    out += [check_clip_model(name, config) for name in sorted(clip_models)]
    return out


def _clip_names(resolved: Mapping) -> list[str]:
    spec = resolved.get("clip_model")
    return [spec["name"]] if isinstance(spec, Mapping) and "name" in spec else []


def check_human_labels(path: str, kit: str, config: Mapping) -> Check:
    """A human scorer's labels file is made by the kit's ingest rule from the annotators' CSVs."""
    from editrobust.workflow import Rules

    R = Rules(config)
    returned = R.returned_annotations(kit)
    if Path(path).is_file() or returned:
        return Check("human labels", path, OK, f"{len(returned)} annotator file(s) in {R.kit_spec(kit)['returned']}")
    return Check("human labels", path, MISSING, f"no annotator CSV in {R.kit_spec(kit)['returned']}",
                 f"export the kit (snakemake annotation_kits), have it labelled, and put the CSVs in "
                 f"{R.kit_spec(kit)['returned']}")


def input_checks(plan: Plan, config: Mapping, configfile: str | None = None) -> list[Check]:
    from editrobust.workflow import Rules

    R = Rules(config)
    labels = {os.path.normpath(p): kit for kit in R.section("annotation_kits") for p in R.kit_labels(kit).values()}
    out = []
    for name in sorted(plan.hub_models):
        out += check_hub_model(name, config["models"][name], configfile)
    out += [check_download(name, configfile) for name in sorted(plan.downloads)]
    out += [check_human_labels(p, labels[p], config) if p in labels else check_plain_file(p)
            for p in sorted(plan.plain_files)]
    return out + weight_checks(plan, config)


# --- sizes: parameter counts per model, edit and fine-tune ------------------------------------------
@dataclass
class ModelSizes:
    """Parameter counts of one model's components and its sampling settings."""

    components: dict[str, int]
    dtype_bytes: int
    height: int
    width: int
    latent_channels: int
    vae_scale: int
    pipeline_factory: object = None  # () -> a pipeline of these shapes (meta device or tiny), for plugins
    pipe: object = None  # one such pipeline, for what only reads it (editors' counts)
    counted: dict = field(default_factory=dict)  # (section, entry name) -> parameters, computed once

    @property
    def total(self) -> int:
        return sum(self.components.values())


def model_sizes(entry: Mapping) -> ModelSizes:
    """Component sizes of a model entry: a toy model built small on the CPU, a released
    architecture on the meta device."""
    import torch

    from editrobust.sampling import SamplingSettings
    from editrobust.sampling.generate import native_resolution

    if entry["kind"] == "toy":
        from editrobust.models.builders import build_sd1_pipeline

        sizes = (entry.get("toy") or {}).get("sizes") or {}  # ToyTrainingConfig.sizes: SD1Sizes overrides

        def factory():
            return build_sd1_pipeline(sizes)
        dtype_bytes = 4
    elif entry["kind"] == "random" and entry.get("size") == "tiny":
        from editrobust.models.full_size import build_random_pipeline

        def factory():
            return build_random_pipeline(FAMILY_ARCHITECTURE[entry["family"]], "tiny")
        dtype_bytes = 4
    else:
        from editrobust.models.full_size import meta_pipeline

        arch = FAMILY_ARCHITECTURE[entry["family"]]

        def factory():
            return meta_pipeline(arch)
        dtype_bytes = DTYPE_BYTES.get(entry.get("dtype") or "float32", 4)
    pipe = factory()
    settings = SamplingSettings.from_dict(entry.get("sampling"))
    native = native_resolution(pipe)
    components = {name: sum(p.numel() for p in module.parameters())
                  for name, module in pipe.components.items() if isinstance(module, torch.nn.Module)}
    return ModelSizes(components, dtype_bytes, settings.height or native, settings.width or native,
                      pipe.vae.config.latent_channels, pipe.vae_scale_factor, factory, pipe)


def edit_parameters(sizes: ModelSizes, name: str, entry: Mapping) -> int | None:
    """How many parameters editor `name` changes (its plugin's `changed_parameters`), None if unknown."""
    from editrobust.editors import EDITORS

    if ("editors", name) not in sizes.counted:
        editor = EDITORS.get(entry["method"])
        sizes.counted["editors", name] = editor.changed_parameters(sizes.pipe, editor.with_defaults(entry))
    return sizes.counted["editors", name]


def trained_parameters(sizes: ModelSizes, name: str, entry: Mapping) -> int:
    """How many parameters finetuner `name` trains: its own `setup` on a pipeline of the model's shapes."""
    from editrobust.finetune import make_finetuner

    if ("finetuners", name) not in sizes.counted:
        trainable = make_finetuner(entry).setup(sizes.pipeline_factory())
        items = trainable.values() if isinstance(trainable, Mapping) else (p for _, p in trainable)
        sizes.counted["finetuners", name] = sum(p.numel() for p in items)
    return sizes.counted["finetuners", name]


# --- disk ----------------------------------------------------------------------------------------------
@dataclass
class DiskItem:
    kind: str  # "images", "edit", "fine-tune", "latent cache", "training state", "hub snapshot", "base"
    bytes: int | None  # None: not known before its inputs exist
    count: int = 1


def _image_count(config: Mapping, promptset: str) -> int | None:
    """Images of a promptset: its prompts (from its built file, else built now if its inputs are
    here, else its config's `n`) x images_per_prompt."""
    import pandas as pd

    from editrobust.promptsets import build_promptset
    from editrobust.schema import with_defaults

    entry = with_defaults("promptset", config["promptsets"][promptset])
    per_prompt = int(entry.get("images_per_prompt") or 1)
    built = Path(paths.fill(paths.PROMPTSET, promptset=promptset))
    if built.is_file():
        return len(pd.read_csv(built)) * per_prompt
    try:
        return len(build_promptset(config["promptsets"][promptset])) * per_prompt
    except (OSError, ValueError, KeyError):
        pass
    if entry.get("n"):
        return int(entry["n"]) * per_prompt
    if entry["source"] == "road":  # one efficacy, 5 generality and 5 specificity prompts
        return 11 * per_prompt
    return None


def image_counter(config: Mapping):
    """`_image_count` for one config, each promptset counted once (many jobs share a promptset)."""
    counted: dict[str, int | None] = {}

    def count(promptset: str) -> int | None:
        if promptset not in counted:
            counted[promptset] = _image_count(config, promptset)
        return counted[promptset]
    return count


def _dataset_rows(config: Mapping, dataset: str) -> int | None:
    """Rows of a fine-tuning dataset, counted without decoding its images; else the row count its
    download entry pins; None if neither is known."""
    from editrobust.data.downloads import download_for_path
    from editrobust.data.finetune_datasets import (
        IMAGE_SUFFIXES,
        dreambooth_root,
        parquet_files,
    )

    entry = config["datasets"][dataset]
    if entry["source"] == "toy":  # load_toy's defaults
        return int(entry.get("size", 256 if entry["set"] == "style" else 5))
    try:
        if entry["source"] == "naruto_blip":
            import pyarrow.parquet as pq

            return sum(pq.ParquetFile(f).metadata.num_rows for f in parquet_files(entry["path"]))
        folder = dreambooth_root(entry["path"]) / entry["subject"]
        return len([p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES])
    except (OSError, ValueError):
        manifest = download_for_path(entry["path"], config.get("downloads") or {})
        download = (config.get("downloads") or {}).get(Path(manifest).parent.name, {}) if manifest else {}
        rows = download.get("rows") if entry["source"] == "naruto_blip" else None
        return rows if isinstance(rows, int) else None


def disk_plan(plan: Plan, config: Mapping, sizes: Mapping[str, ModelSizes], only_missing: bool = True) -> list[DiskItem]:
    """What the planned outputs that do not exist yet (`only_missing=False`: all of them) will take, per kind."""
    items: list[DiskItem] = []
    todo = lambda template: [f for f in plan.matching(template)  # noqa: E731
                             if not (only_missing and Path(paths.fill(template, **f)).exists())]
    image_count = image_counter(config)
    for f in todo(paths.SAMPLES_INDEX):
        s, n = sizes[f["model"]], image_count(f["promptset"])
        items.append(DiskItem("images", None if n is None else int(n * s.height * s.width * PNG_BYTES_PER_PIXEL)))
    finetunes: dict[tuple[str, str], int] = {}  # (model, fine-tuned variant): its planned @<step> checkpoints
    for f in todo(paths.VARIANT_JSON):
        s, variant = sizes[f["model"]], vn.parse(f["variant"])
        if not variant.steps:
            stored_here = config["models"][f["model"]]["kind"] in ("toy", "random")  # float32 files in the base
            items.append(DiskItem("base", s.total * 4 if stored_here else 0))
        elif variant.steps[-1].kind == vn.EDIT:
            name = variant.steps[-1].name
            n = edit_parameters(s, name, config["editors"][name])
            items.append(DiskItem("edit", None if n is None else n * 4))
        else:  # a fine-tune writes the checkpoints something reads (workflow.Rules.checkpoints_read): the planned ones
            key = (f["model"], str(vn.Variant(variant.steps)))
            finetunes[key] = finetunes.get(key, 0) + (variant.checkpoint is not None)
    for (model, name), checkpoints in finetunes.items():
        s, finetuner = sizes[model], vn.parse(name).steps[-1].name
        entry = config["finetuners"][finetuner]
        n = trained_parameters(s, finetuner, entry)
        stored = n * 4  # trained parameters stay float32 in the loop, and are written so
        items += [DiskItem("fine-tune (with its checkpoints)", stored)] * (1 + checkpoints)
        # Adam's two moments, fp32 master weights, an EMA copy: kept while the job runs
        states = 3 + (1 if entry.get("use_ema") else 0)
        items.append(DiskItem("training state (largest, while it runs)", n * 4 * states))
    for f in todo(paths.LATENT_CACHE):
        s, rows = sizes[f["model"]], _dataset_rows(config, f["dataset"])
        per_row = 2 * 2 * s.latent_channels * (s.height // s.vae_scale) * (s.width // s.vae_scale) * 4  # mean, logvar; mirrored
        items.append(DiskItem("latent cache", None if rows is None else rows * per_row))
    for f in todo(paths.HUB_SNAPSHOT):
        entry = config["models"][f["model"]]
        if _local_hub_snapshot(entry["hub_id"], entry["revision"], pipeline=True) is None:
            items.append(DiskItem("hub snapshot (weights as fetched)",
                                  sizes[f["model"]].total * RELEASED_BYTES.get(entry["family"], 4)))
    return items


def disk_checks(items: list[DiskItem], where: str = ".") -> list[Check]:
    """One row per kind, and the total against the free space (training states count once: the
    largest, since each is deleted when its fine-tune ends)."""
    out, total, unknown = [], 0, 0
    kinds = dict.fromkeys(i.kind for i in items)
    for kind in kinds:
        mine = [i for i in items if i.kind == kind]
        known = [i.bytes for i in mine if i.bytes is not None]
        size = max(known, default=0) if kind.startswith("training state") else sum(known)
        total += size
        unknown += len(mine) - len(known)
        note = f", {len(mine) - len(known)} of unknown size" if len(known) < len(mine) else ""
        out.append(Check("disk", kind, INFO, f"{len(mine)} output(s), {_size(size)}{note}"))
    free = shutil.disk_usage(Path(where).resolve()).free
    status = OK if total <= free else FAIL
    note = f" (+{unknown} of unknown size)" if unknown else ""
    out.append(Check("disk", "all planned outputs", status, f"{_size(total)}{note} of {_size(free)} free",
                     "" if status == OK else "free space, or point results/ at a larger disk (a symlink)"))
    return out


# --- GPU memory ----------------------------------------------------------------------------------------
def job_memory(plan: Plan, config: Mapping, sizes: Mapping[str, ModelSizes]) -> list[tuple[str, int]]:
    """(job, bytes) lower bounds: the weights a job holds on the GPU, plus a fine-tune's fp32
    gradients and AdamW states (and EMA) of what it trains; activations are not counted."""
    jobs = []
    for f in plan.matching(paths.SAMPLES_INDEX):
        s = sizes[f["model"]]
        jobs.append((f"sample {f['model']}/{f['variant']}", s.total * s.dtype_bytes))
    for f in plan.matching(paths.VARIANT_JSON):
        s, variant = sizes[f["model"]], vn.parse(f["variant"])
        if not variant.steps or variant.checkpoint is not None:
            continue
        last = variant.steps[-1]
        if last.kind == vn.EDIT:
            jobs.append((f"edit {f['model']}/{last}", s.total * 4))  # editors work in float32
        else:
            entry = config["finetuners"][last.name]
            n = trained_parameters(s, last.name, entry)
            states = 4 + (1 if entry.get("use_ema") else 0)  # master weights, gradients, 2 moments (+ EMA)
            jobs.append((f"fine-tune {f['model']}/{f['variant']}", s.total * s.dtype_bytes + n * 4 * states))
    return jobs


def gpu_check(jobs: list[tuple[str, int]], device: str) -> Check | None:
    """The largest planned job against the visible GPU's memory; None without a GPU (or with
    `device: cpu`)."""
    import torch

    if device == "cpu" or not torch.cuda.is_available() or not jobs:
        return None
    total = torch.cuda.get_device_properties(0).total_memory
    job, need = max(jobs, key=lambda j: j[1])
    name = torch.cuda.get_device_name(0)
    status = OK if need <= total else FAIL
    return Check("GPU memory", job, status,
                 f"at least {_size(need)} (weights and optimizer states; activations not counted) of {_size(total)} "
                 f"on {name}",
                 "" if status == OK else "a larger GPU, a lower-precision `dtype`, or a method training fewer parameters")


# --- the whole check -------------------------------------------------------------------------------
def preflight(config: Mapping, targets: Iterable[str] | None = None, configfile: str | None = None,
              where: str = ".") -> list[Check]:
    """Every check for `targets` (default: everything the config asks for), relative to the
    working directory `where` is on."""
    plan = plan_targets(config, targets)
    checks = input_checks(plan, config, configfile)
    models = sorted({f["model"] for f in plan.matching(paths.VARIANT_JSON)}
                    | {f["model"] for f in plan.matching(paths.SAMPLES_INDEX)})
    sizes = {m: model_sizes(config["models"][m]) for m in models}
    checks += disk_checks(disk_plan(plan, config, sizes), where)
    gpu = gpu_check(job_memory(plan, config, sizes), config.get("device", "cpu"))
    if gpu is not None:
        checks.append(gpu)
    return checks


def render(checks: list[Check]) -> str:
    """The checks as one aligned text table, failures first within each kind, then a verdict."""
    header = ("check", "name", "status", "detail")
    rows = [(c.what, c.name, c.status, c.detail) for c in checks]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]
    line = lambda r: "  ".join(r[i].ljust(widths[i]) for i in range(3)) + "  " + r[3]  # noqa: E731
    out = [line(header), line(tuple("-" * w for w in widths) + ("-" * 6,))] + [line(r) for r in rows]
    failed = [c for c in checks if c.failed]
    if failed:
        out += ["", f"{len(failed)} check(s) would fail. To fix:"]
        out += [f"- {c.name}: {c.fix}" for c in failed if c.fix]
    else:
        out += ["", "pre-flight: everything the targets need is here"]
    return "\n".join(out)


def _size(n: int) -> str:
    for unit, scale in (("TiB", 1024 ** 4), ("GiB", GIB), ("MiB", 1024 ** 2), ("KiB", 1024)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def main(argv: list[str] | None = None) -> int:
    from editrobust.config import load_yaml, validate_config

    parser = argparse.ArgumentParser(prog="python -m editrobust.preflight", description=__doc__.split("\n\n")[0])
    parser.add_argument("--configfile", default="config/config.yaml")
    parser.add_argument("targets", nargs="*", help="target files (default: everything the config asks for)")
    args = parser.parse_args(argv)
    config = validate_config(load_yaml(args.configfile))
    checks = preflight(config, args.targets or None, args.configfile)
    print(render(checks))
    return 1 if any(c.failed for c in checks) else 0


if __name__ == "__main__":
    sys.exit(main())
