"""The edit stage: M_ed = E(M) for one `editors.<name>` entry, stored as a delta variant.

An editor is a plugin (editrobust.plugins) of class `Editor`, named by the entry's `method`:

| method       | module                 | edits                                                   |
|--------------|------------------------|---------------------------------------------------------|
| `uce_erase`  | `methods/uce_erase.py` | UNet cross-attention K/V (closed form, uce.py)          |
| `uce_debias` | `methods/uce_debias.py`| the same, iterated against a gender classifier (uce.py) |
| `refact`     | `methods/refact.py`    | one text-encoder MLP, rank one (refact.py)              |
| `esd`        | `methods/esd.py`       | UNet cross-attention or the rest, trained (ESD-x / -u)  |

A method module declares its config keys (`params`), the files it reads besides the base model
(`inputs`: ReFACT's cached statistic), what else it needs from the config (`resolved`: a CLIP
classifier's model spec) and `run(pipe, job) -> (delta, info)`. A **delta** is only the changed
tensors, `{component: {state-dict key: new tensor}}` (models/components.py). A method of your own is
one module with an `Editor` subclass, named in the config as `method: package.module:Class`.

Every edit is checked before anything builds on it (`edit_model`). A method reports in its info
an `Outcome`: whether it reached its own target, measured its own way (ReFACT's final p(new),
UCE's residual, the debias loop's gap). An update that changes nothing (below float rounding)
while the target was not already met is an error naming the editor, the tensors and the likely
cause; an edit that runs but misses its target is stored, marked (`"reached": false` in
variant.json, a warning in the job log, a mark in every table and figure that shows it), or with
`on_missed_target: error` refused.

Entry points (one per rule): `edit_model` and `refact_statistic`. This module imports no torch:
config validation reads the declarations.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from editrobust.plugins import Param, Plugin, Registry
from editrobust.variant_names import BASE, ed, then

log = logging.getLogger(__name__)

# A relative weight change below this is no change: float32 rounding of a weight is ~1e-7.
NOISE = 1e-6


class EditFailed(RuntimeError):
    """An edit that changed nothing although its target was not met, or (`on_missed_target:
    error`) one that missed its target; nothing is written."""


@dataclass
class Outcome:
    """Whether an edit reached its own target, as its method measures it."""

    reached: bool
    measure: str  # what was measured, e.g. "ReFACT's final p(new)"
    value: float
    threshold: float
    already_met: bool = False  # the unedited model met it: an empty or zero update is then right
    cause: str = ""  # the likely cause, when the target was missed

    def describe(self) -> str:
        return f"{self.measure} {self.value:.3g} (target {self.threshold:.3g})"


@dataclass
class EditJob:
    """What an editor's `run` gets besides the pipeline."""

    editor: str  # the config name of the edit, e.g. "erase_unsafe"
    entry: dict  # its config entry, defaults filled
    inputs: dict[str, Path] = field(default_factory=dict)  # the files of `Editor.inputs`, by name
    resolved: dict = field(default_factory=dict)  # what `Editor.resolved` returned
    sampling: dict = field(default_factory=dict)  # the model's sampling settings (SamplingSettings)
    device: str = "cpu"

    @property
    def text_length(self) -> dict:
        """FLUX: the T5 length used to embed concepts must be the one used to sample (T5 attends
        to padding), so editors that embed texts pass this on."""
        n = self.sampling.get("max_sequence_length")
        return {"max_sequence_length": n} if n is not None else {}

    def params(self, *exclude: str) -> dict:
        """The entry's own parameters: without `method`, the keys every editor takes (which
        edit_model handles) and the given keys."""
        return {k: v for k, v in self.entry.items()
                if k != "method" and k not in Editor.params and k not in exclude}


@dataclass
class EditWork:
    """What an edit computes on the GPU, in model passes (the cost estimate, `editrobust.cost`):
    images sampled at the model's sampling settings in float32 (a loop that measures its edit),
    single-row denoiser forwards without gradients, and single-row forward + backward passes of
    the denoiser. `bound`: the counts are an upper bound (a loop that may stop early)."""

    images: int = 0
    denoiser_forwards: int = 0
    denoiser_trains: int = 0
    bound: bool = False


class Editor(Plugin):
    """An editor: declared `params` (with the keys every editor takes, below), and the hooks below."""

    params = {
        "on_missed_target": Param({"enum": ["warn", "error"]}, "warn",
                                  doc="an edit that runs but misses its own target (see each method's measure) is "
                                      "stored and marked (`warn`), or refused (`error`)"),
    }

    @classmethod
    def inputs(cls, model: str, entry: Mapping, config: Mapping, parent: str = BASE) -> dict[str, str]:
        """Files the edit reads besides the model it edits (the variant `parent`: `base`, or a
        fine-tuned variant for a re-edit or an edit after a fine-tune), {name: path} (relative to
        the workdir)."""
        return {}

    @classmethod
    def resolved(cls, entry: Mapping, config: Mapping) -> dict:
        """Config the edit needs from other sections (given to the job as a param, so that
        changing it re-runs the edit), e.g. a CLIP classifier's model spec."""
        return {}

    @classmethod
    def changed_parameters(cls, pipe, entry: Mapping) -> int | None:
        """How many parameters the edit writes on a pipeline of these shapes (the pre-flight's disk
        estimate; `pipe` may live on the meta device); None: not known before it runs."""
        return None

    @classmethod
    def work(cls, entry: Mapping) -> EditWork:
        """The GPU work of one edit (`entry` with defaults filled); the default, nothing that
        counts: a closed form or a text-encoder optimisation, seconds beside sampling."""
        return EditWork()

    def run(self, pipe, job: EditJob) -> tuple[dict, dict]:
        """Edit `pipe` (float32, not modified in place) and return (delta, info for variant.json);
        put the method's `Outcome` in info["target"] so that the edit can be checked."""
        raise NotImplementedError


EDITORS = Registry("editors", "method", Editor, {
    "uce_erase": "editrobust.editors.methods.uce_erase:UceErase",
    "uce_debias": "editrobust.editors.methods.uce_debias:UceDebias",
    "refact": "editrobust.editors.methods.refact:Refact",
    "esd": "editrobust.editors.methods.esd:Esd",
})


def edit_model(parent_dir: str | Path, editor: str, entry: Mapping, out_dir: str | Path, *,
               inputs: Mapping[str, str | Path] | None = None, resolved: Mapping | None = None,
               sampling: Mapping | None = None, device: str = "cpu") -> dict:
    """The rules `edit_model` and `edit_model_after`: apply editor `editor` (config `entry`) to the
    variant in `parent_dir` (the base model; or a fine-tuned one: a re-edit `ed-E+ft-F+ed-E`, an
    edit after a fine-tune `ft-F+ed-E`) and write the delta variant `out_dir`, its sibling;
    returns its variant.json.

    The model is edited in float32 (UCE's closed form and ReFACT's optimisation), whatever dtype
    it is sampled in. The delta holds the edited tensors' new values, so it composes after any
    parent: loading replaces those tensors last."""
    import torch

    from editrobust.models.variants import load_pipeline, write_delta_variant

    method = EDITORS.get(entry["method"])
    job = EditJob(editor, method.with_defaults(entry), {k: Path(v) for k, v in (inputs or {}).items()},
                  dict(resolved or {}), dict(sampling or {}), device)
    parent_dir, out_dir = Path(parent_dir), Path(out_dir)
    if parent_dir.parent != out_dir.parent:
        raise ValueError(f"{out_dir}: a variant's parent must be its sibling, got {parent_dir}")
    pipe = load_pipeline(parent_dir, device=device, dtype=torch.float32)
    delta, info = method().run(pipe, job)
    outcome = info.pop("target", None)
    change = check_edit(editor, job.entry, pipe, delta, outcome, remedy=parent_dir.name != BASE)
    n_params = sum(t.numel() for tensors in delta.values() for t in tensors.values())
    log.info("%s changed %d tensors, %d parameters (largest relative change %.2e)", editor,
             sum(len(t) for t in delta.values()), n_params, change)
    return write_delta_variant(out_dir, delta, dict(
        name=then(parent_dir.name, ed(editor)), kind="edit", parent=parent_dir.name, method=entry["method"],
        params=job.entry, result=info,
        reached=outcome.reached if outcome else None, target=asdict(outcome) if outcome else None,
        relative_change=change))


def relative_change(pipe, delta: Mapping) -> float:
    """The largest ‖W_new − W_old‖ / ‖W_old‖ over the delta's tensors (0 for an empty delta)."""
    from editrobust.models.components import component

    largest = 0.0
    for comp, tensors in delta.items():
        state = component(pipe, comp).state_dict()
        for key, new in tensors.items():
            old = state[key].detach().float().cpu()
            largest = max(largest, float((new.float() - old).norm() / old.norm().clamp_min(1e-12)))
    return largest


def check_edit(editor: str, entry: Mapping, pipe, delta: Mapping, outcome: Outcome | None,
               remedy: bool = False) -> float:
    """Refuse an edit that changed nothing although its target was not met (or, with
    `on_missed_target: error`, one that missed its target); warn about a missed target otherwise.
    Returns the largest relative change of the delta's tensors.

    A `remedy` (the edit applied again after a fine-tune, or after one: a parent other than the
    base) that changes nothing is a result, not a broken edit: the method could not move the
    fine-tuned model toward its target (UCE debias keeping its unedited iteration 0). It is stored,
    marked as a missed target, like any edit that missed."""
    change = relative_change(pipe, delta)
    where = f"editors.{editor} (method {entry['method']})"
    tensors = ", ".join(f"{c}.{k}" for c, t in delta.items() for k in t) or "no tensor"
    if outcome is not None and outcome.already_met:
        if change <= NOISE:
            log.info("%s: the model already met the target (%s); the edit changes nothing", where, outcome.describe())
        return change
    if change <= NOISE and remedy and entry["on_missed_target"] != "error":
        log.warning("%s: the edit of a fine-tuned model changed nothing (largest relative change %.1e in %s)%s; "
                    "stored as a missed target", where, change, tensors, f": {outcome.describe()}" if outcome else "")
        return change
    if change <= NOISE:
        detail = f"; {outcome.describe()}" if outcome else ""
        cause = outcome.cause if outcome and outcome.cause else "its parameters leave nothing to change"
        raise EditFailed(f"{where}: the edit changed nothing (largest relative change {change:.1e} in {tensors}) "
                         f"although its target was not met{detail}. Likely cause: {cause}")
    if outcome is not None and not outcome.reached:
        message = f"{where} missed its target: {outcome.describe()}" + (f". {outcome.cause}" if outcome.cause else "")
        if entry["on_missed_target"] == "error":
            raise EditFailed(message + " (on_missed_target: error)")
        log.warning("%s; the edit is stored and marked in variant.json and in every table that shows it", message)
    return change


def refact_statistic(base_dir: str | Path, layer: int, corpus: str, out_path: str | Path, *,
                     corpus_dir: str | Path | None = None, device: str = "cpu") -> int:
    """The rule `refact_statistic`: ReFACT's second moment of the fc2 inputs of `layer` over the
    texts of `corpus` (methods/refact.py: `statistics_corpus`), cached as safetensors; returns the
    number of texts."""
    from .methods.refact import compute_fc2_statistic, statistics_corpus

    texts = statistics_corpus(corpus, corpus_dir)
    log.info("%d texts from corpus %s", len(texts), corpus)
    compute_fc2_statistic(base_dir, layer, texts, out_path, device=device)
    return len(texts)

