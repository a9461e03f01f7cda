"""The edit stage: M_ed = E(M) for one `editors.<name>` entry, stored as a delta variant.

An editor is a plugin (editrobust.plugins) of class `Editor`, named by the entry's `method`:

| method       | module                 | edits                                                   |
|--------------|------------------------|---------------------------------------------------------|
| `uce_erase`  | `methods/uce_erase.py` | UNet cross-attention K/V (closed form, uce.py)          |
| `uce_debias` | `methods/uce_debias.py`| the same, iterated against a gender classifier (uce.py) |
| `refact`     | `methods/refact.py`    | one text-encoder MLP, rank one (refact.py)              |

A method module declares its config keys (`params`), the files it reads besides the base model
(`inputs`: ReFACT's cached statistic), what else it needs from the config (`resolved`: a CLIP
classifier's model spec) and `run(pipe, job) -> (delta, info)`. A **delta** is only the changed
tensors, `{component: {state-dict key: new tensor}}` (models/components.py). A method of your own is
one module with an `Editor` subclass, named in the config as `method: package.module:Class`.

Entry points (one per rule): `edit_model` and `refact_statistic`. This module imports no torch:
config validation reads the declarations.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from editrobust.plugins import Plugin, Registry

log = logging.getLogger(__name__)


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
        """The entry's declared parameters, without `method` and the given keys."""
        return {k: v for k, v in self.entry.items() if k != "method" and k not in exclude}


class Editor(Plugin):
    """An editor: declared `params`, and the hooks below."""

    @classmethod
    def inputs(cls, model: str, entry: Mapping, config: Mapping) -> dict[str, str]:
        """Files the edit reads besides the base model, {name: path} (relative to the workdir)."""
        return {}

    @classmethod
    def resolved(cls, entry: Mapping, config: Mapping) -> dict:
        """Config the edit needs from other sections (given to the job as a param, so that
        changing it re-runs the edit), e.g. a CLIP classifier's model spec."""
        return {}

    def run(self, pipe, job: EditJob) -> tuple[dict, dict]:
        """Edit `pipe` (float32, not modified in place) and return (delta, info for variant.json)."""
        raise NotImplementedError


EDITORS = Registry("editors", "method", Editor, {
    "uce_erase": "editrobust.editors.methods.uce_erase:UceErase",
    "uce_debias": "editrobust.editors.methods.uce_debias:UceDebias",
    "refact": "editrobust.editors.methods.refact:Refact",
})


def edit_model(base_dir: str | Path, editor: str, entry: Mapping, out_dir: str | Path, *,
               inputs: Mapping[str, str | Path] | None = None, resolved: Mapping | None = None,
               sampling: Mapping | None = None, device: str = "cpu") -> dict:
    """The rule `edit_model`: apply editor `editor` (config `entry`) to the model in `base_dir`
    and write the delta variant `out_dir`; returns its variant.json.

    The model is edited in float32 (UCE's closed form and ReFACT's optimisation), whatever dtype
    it is sampled in."""
    import torch

    from editrobust.models.variants import load_pipeline, write_delta_variant

    method = EDITORS.get(entry["method"])
    job = EditJob(editor, method.with_defaults(entry), {k: Path(v) for k, v in (inputs or {}).items()},
                  dict(resolved or {}), dict(sampling or {}), device)
    pipe = load_pipeline(base_dir, device=device, dtype=torch.float32)
    delta, info = method().run(pipe, job)
    if not delta:
        log.warning("editor %s changed nothing (the model already met the target)", editor)
    n_params = sum(t.numel() for tensors in delta.values() for t in tensors.values())
    log.info("%s changed %d tensors, %d parameters", editor, sum(len(t) for t in delta.values()), n_params)
    return write_delta_variant(out_dir, delta, dict(name=f"ed-{editor}", kind="edit", parent="base",
                                                    method=entry["method"], params=job.entry, result=info))


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

