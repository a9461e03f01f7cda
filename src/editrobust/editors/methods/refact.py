"""`method: refact`: ReFACT (Arad, Orgad, Belinkov; NAACL 2024; technion-cs-nlp/ReFACT).

A rank-one edit of one text-encoder MLP (`mlp.fc2` of `layer`; refact.py), writing the edit of
one RoAD row (its Prompt, Old and New texts). It reads the layer's cached second moment of fc2
inputs (rule `refact_statistic`: once per model, layer and corpus, shared by every edit).

A **multi-edit model**: `road` may be a list of rows (all of one RoAD type). They are applied in
sequence to one model (refact.py: `refact_edit_sequence`): edit k is computed on the model that
carries edits 0..k-1, with the same statistic C of the parent model; the stored delta is the final
fc2 weight. variant.json's `result.edits` holds each row's record, with its p(new) measured again
on the final model (`final_model_prob`: a later edit may undo an earlier one); the target is
reached only if every row's final-model p(new) reaches `min_final_prob` (the lowest is reported,
with its row). Each row is evaluated on its own promptset from the same model (a table pairs the
editor with each row's promptset), so a fine-tune is paid once per model, not per edit.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from editrobust import paths
from editrobust.plugins import Param, reference_problems
from editrobust.variant_names import BASE

from .. import EditFailed, EditJob, Editor, Outcome
from ..prompts import REFACT_POSITIONS, REFACT_TEMPLATES

log = logging.getLogger(__name__)

TOY_CORPUS = "toy_captions"
# The built-in corpora (no download): captions of the toy base world, and its first 1,000 for
# profiling runs on real-size encoders (config/realsize.yaml: CLIP-L's layer-7 statistic over them
# took 17 s on the 2-core CPU, 20,000 would take about 20 times as long).
BUILTIN_CORPORA = {TOY_CORPUS: 20_000, "toy_captions_1k": 1_000}


class Refact(Editor):
    """ReFACT: a rank-one edit of one text-encoder MLP that writes one RoAD row's new fact."""

    name = "refact"
    params = {
        **Editor.params,
        "road": Param({"oneOf": [{"$ref": "#/$defs/road_row"},
                                 {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/road_row"}}]},
                      required=True,
                      doc="`{file, type, index}` as for promptsets: the edit's Prompt / Old / New; or a list of such "
                          "rows, all of one RoAD type: a multi-edit model, the rows edited in sequence"),
        "layer": Param({"type": "integer", "minimum": 0}, required=True,
                       doc="0-based encoder layer whose `mlp.fc2` is edited"),
        "statistics": Param({"$ref": "#/$defs/name"}, TOY_CORPUS,
                            doc="the corpus of the cached fc2 second moment: `toy_captions` (`toy_captions_1k`: its "
                                "first 1,000, for profiling), or a `downloads` entry of kind `wikitext103` whose "
                                "sampled lines are read"),
        "position": Param({"enum": list(REFACT_POSITIONS)}, "subject_last",
                          doc="the lookup: `subject_last` (the paper), `eos`, or `tail` (our departure for denoisers "
                              "that read the padding: the end token and every pad after it; refact.py)"),
        "templates": Param({"type": "array", "minItems": 1, "items": {"type": "string", "pattern": "\\{\\}"}},
                           list(REFACT_TEMPLATES),
                           doc="the contexts whose subject keys are averaged (ReFACT's 9 realistic-style templates); "
                               "a model trained on other captions, like the toy, needs its own caption style"),
        "v_lr": Param({"type": "number", "exclusiveMinimum": 0}, 0.05, doc="Adam step size of δ"),
        "v_max_grad_steps": Param({"type": "integer", "minimum": 1}, 100, doc="at most this many steps"),
        "v_prob_threshold": Param({"type": "number", "minimum": 0, "maximum": 1}, 0.99,
                                  doc="stop when the mean p(new) exceeds this"),
        "v_weight_decay": Param({"type": "number", "minimum": 0}, 0.1, doc="weight of ‖δ‖ / ‖m0‖² in the loss"),
        "clamp_norm_factor": Param({"type": "number", "exclusiveMinimum": 0}, 4.0, doc="‖δ‖ ≤ this × ‖m0‖"),
        "seed": Param({"type": "integer"}, 0, doc="pins anything stochastic in the optimisation"),
        "min_final_prob": Param({"type": "number", "minimum": 0, "maximum": 1}, 0.5,
                                doc="the target: the edited encoder's p(new) over {new, old} at the end of the value "
                                    "optimisation (the mean over prompts; every encoder of SDXL). ReFACT's code stops "
                                    "at v_prob_threshold or after v_max_grad_steps and keeps the edit either way; "
                                    "below 0.5 the edit did not even make the new text the likelier"),
    }

    @classmethod
    def problems(cls, name: str, entry: Mapping, config: Mapping) -> list[str]:
        out = []
        types = list(dict.fromkeys(row["type"] for row in road_rows(entry["road"])))
        if len(types) > 1:
            # a table reports a multi-edit model's rows in one group (its RoAD type): one type per model
            out.append(f"editors.{name}.road: a multi-edit entry's rows must all be of one RoAD type, got "
                       f"{' and '.join(types)}; make one editor per type")
        if entry["statistics"] in BUILTIN_CORPORA:
            return out
        return out + reference_problems(f"editors.{name}.statistics", entry["statistics"], config, "downloads",
                                        "wikitext103")

    @classmethod
    def inputs(cls, model: str, entry: Mapping, config: Mapping, parent: str = BASE) -> dict[str, str]:
        """The statistic of the model the edit starts from: a re-edit after a fine-tune that trained
        the text encoder needs the fine-tuned encoder's second moment, not the base's."""
        entry = cls.with_defaults(entry)
        out = {"stats": paths.fill(paths.REFACT_STATISTIC, model=model, variant=parent, layer=entry["layer"],
                                   corpus=entry["statistics"])}
        files = list(dict.fromkeys(row["file"] for row in road_rows(entry["road"]) if row["file"] != "toy"))
        for i, file in enumerate(files):
            out["road" if i == 0 else f"road_{i}"] = file
        return out

    @classmethod
    def changed_parameters(cls, pipe, entry):
        """One fc2 weight per edited encoder (SDXL: two); every layer's fc2 has the same shape."""
        from ..refact import edited_encoders, edited_weight

        return sum(edited_weight(encoder, 0).numel() for encoder in edited_encoders(pipe))

    def run(self, pipe, job: EditJob):
        from safetensors.torch import load_file

        from ..refact import refact_edit_pipeline

        moments = load_file(str(job.inputs["stats"]))
        # SDXL: the statistic file also holds the second encoder's (see compute_fc2_statistic)
        second = {"C_2": moments["C_2"], "layer_2": int(moments["layer_2"])} if "C_2" in moments else {}
        if not isinstance(job.entry["road"], Mapping):
            return self.run_sequence(pipe, job, moments, second)
        row = resolve_road_row(job.entry["road"])
        try:
            delta, per_component = refact_edit_pipeline(
                pipe, row["prompt"], row["old"], row["new"], job.entry["layer"], moments["C"], **second,
                **job.params("road", "layer", "statistics", "min_final_prob"))
        except ValueError as e:  # a layer or position that cannot work: say which edit, before optimising
            raise EditFailed(f"editors.{job.editor} (ReFACT, layer {job.entry['layer']}, position "
                             f"{job.entry['position']}): {e}") from None
        result = {c: {k: v for k, v in i.items() if k != "vectors"} for c, i in per_component.items()}
        log.info("ReFACT %r: %r -> %r: %s", row["prompt"], row["old"], row["new"], result)
        return delta, {"refact": result, "road_row": row, "target": refact_outcome(result, job.entry)}

    def run_sequence(self, pipe, job: EditJob, moments, second):
        """A multi-edit model: the rows of `road` edited in sequence (module docstring)."""
        from ..refact import refact_edit_sequence

        rows = [resolve_road_row(spec) for spec in job.entry["road"]]
        try:
            delta, records = refact_edit_sequence(
                pipe, [(r["prompt"], r["old"], r["new"]) for r in rows], job.entry["layer"], moments["C"], **second,
                **job.params("road", "layer", "statistics", "min_final_prob"))
        except ValueError as e:
            raise EditFailed(f"editors.{job.editor} (ReFACT, {len(rows)} edits, layer {job.entry['layer']}, position "
                             f"{job.entry['position']}): {e}") from None
        edits = []
        for i, (row, record) in enumerate(zip(rows, records)):
            result = {c: {k: v for k, v in info.items() if k != "vectors"} for c, info in record.items()}
            outcome = refact_outcome(result, job.entry, key="final_model_prob")
            log.info("ReFACT edit %d of %d, %r: %r -> %r: %s", i + 1, len(rows), row["prompt"], row["old"], row["new"],
                     result)
            edits.append({"road_row": row, "refact": result, "reached": outcome.reached,
                          "final_model_prob": outcome.value})
        return delta, {"edits": edits, "target": sequence_outcome(edits, job.entry)}


def refact_outcome(result: Mapping, entry: Mapping, key: str = "final_prob") -> Outcome:
    """The value optimisation's final p(new) (or another `key` of the record: a sequence's p(new) on the
    final model), lowest over the edited encoders."""
    final = min(r[key] for r in result.values())
    # the unedited encoder already preferred the new text past ReFACT's own stopping threshold
    already = all(r["steps"] == 0 and r["initial_prob"] > entry["v_prob_threshold"] for r in result.values())
    steps = max(r["steps"] for r in result.values())
    return Outcome(reached=final >= entry["min_final_prob"], measure="ReFACT's final p(new)", value=final,
                   threshold=entry["min_final_prob"], already_met=already,
                   cause=f"the value optimisation stopped after {steps} steps: more v_max_grad_steps, a larger v_lr "
                         "or clamp_norm_factor, or a layer whose output reaches the feature more directly")


def sequence_outcome(edits: list[dict], entry: Mapping) -> Outcome:
    """A multi-edit model reaches its target only if every row does: the lowest p(new) on the final
    model over the rows (and encoders), naming its row."""
    i = min(range(len(edits)), key=lambda j: edits[j]["final_model_prob"])
    worst, row = edits[i], edits[i]["road_row"]
    already = all(r["steps"] == 0 and r["initial_prob"] > entry["v_prob_threshold"]
                  for e in edits for r in e["refact"].values())
    steps = max(r["steps"] for r in worst["refact"].values())
    missed = [j for j, e in enumerate(edits) if not e["reached"]]
    return Outcome(reached=not missed, measure=f"ReFACT's p(new) on the final model, lowest of {len(edits)} edits "
                                                f"(row {i}, {row['type']} {row['prompt']!r} -> {row['new']!r})",
                   value=worst["final_model_prob"], threshold=entry["min_final_prob"], already_met=already,
                   cause=f"rows {missed} missed; row {i}'s value optimisation stopped after {steps} steps, or a later "
                         "edit of the sequence undid it: more v_max_grad_steps, a larger v_lr or clamp_norm_factor, "
                         "fewer rows per model, or another layer")


def road_rows(spec) -> list[Mapping]:
    """The RoAD row specs of an entry's `road`: one row, or a multi-edit entry's list."""
    return [spec] if isinstance(spec, Mapping) else list(spec)


def resolve_road_row(spec: Mapping) -> dict:
    """The edit texts of the RoAD row a config entry points at ({file, type, index}), lower-cased
    as ReFACT reads them: {type, prompt, old, new}."""
    from editrobust.promptsets import road_row

    row = road_row(spec)
    return {"type": row["Type"].lower(), "prompt": row["Prompt"].lower(), "old": row["Old"].lower(),
            "new": row["New"].lower()}


def statistics_corpus(name: str, path: str | Path | None = None) -> list[str]:
    """Texts for ReFACT's fc2 statistic. `toy_captions`: 20,000 captions of the toy base world
    (the toy's stand-in for WikiText-103 lines); any other name is a download whose `lines.txt`
    (one text per line; for WikiText-103, 100,000 sampled non-empty lines) is at `path`."""
    if name in BUILTIN_CORPORA:
        from editrobust.toyworld.captions import sample_base_world

        return sample_base_world(BUILTIN_CORPORA[TOY_CORPUS], seed=12345)[1][:BUILTIN_CORPORA[name]]
    if path is None:
        raise ValueError(f"statistics corpus {name!r}: not one of {', '.join(BUILTIN_CORPORA)}, and no lines file "
                         f"given")
    from editrobust.data.downloads import read_corpus_lines

    return read_corpus_lines(path)


def compute_fc2_statistic(base_dir: str | Path, layer: int, texts: list[str], out_path: str | Path,
                          device: str = "cpu", max_length: int | None = None) -> None:
    """ReFACT's uncentred second moment C of the fc2 inputs of `layer`, cached as safetensors."""
    import torch
    from safetensors.torch import save_file

    from editrobust.io import atomic_path
    from editrobust.models.variants import load_pipeline

    from editrobust.models.components import model_family
    from ..refact import num_layers, same_relative_depth, second_moment

    pipe = load_pipeline(base_dir, device=device, dtype=torch.float32)
    C = second_moment(pipe.text_encoder, pipe.tokenizer, layer, texts, max_length=max_length)
    tensors = {"C": C.float().contiguous().cpu(), "n_texts": torch.tensor(len(texts))}
    if model_family(pipe) == "sdxl":
        # SDXL's ReFACT edits both encoders; bigG's layer is at the same relative depth (one job
        # per (model, layer) still: the pair is one statistic)
        layer_2 = same_relative_depth(layer, num_layers(pipe.text_encoder), num_layers(pipe.text_encoder_2))
        C_2 = second_moment(pipe.text_encoder_2, pipe.tokenizer_2, layer_2, texts, max_length=max_length)
        tensors.update(C_2=C_2.float().contiguous().cpu(), layer_2=torch.tensor(layer_2))
    with atomic_path(out_path) as tmp:
        save_file(tensors, str(tmp))
