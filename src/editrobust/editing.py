"""The edit stage: M_ed = E(M, ψ) for one configured editor, stored as a delta variant.

An `editors.<name>` config entry names a `method` (a key of `editrobust.editors.EDITORS`) and its
parameters; this module turns the entry into the editor's call (the toy oracle as the debias
classifier, the cached fc2 statistic for ReFACT, the RoAD row for the edit texts) and writes
`results/models/<model>/ed-<name>/` with only the changed tensors.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from editrobust.editors import model_family, refact_edit_pipeline, uce_debias, uce_erase
from editrobust.models.variants import load_pipeline, write_delta_variant
from editrobust.sampling import SamplingSettings, generate

log = logging.getLogger(__name__)

UCE_ERASE_KEYS = ("edit_concepts", "guide_concepts", "preserve_concepts", "lamb", "erase_scale", "preserve_scale",
                  "expand_prompts", "concept_type", "token_mode")
UCE_DEBIAS_KEYS = ("concepts", "attributes", "desired_ratios", "max_iterations", "max_diff", "lamb", "edit_scale",
                   "preserve_scale", "preserve_concepts", "gain", "attribute_texts",
                   "token_mode", "edit_templates", "gain_halving", "reselect_top", "reselect_rounds")
REFACT_KEYS = ("position", "templates", "v_lr", "v_max_grad_steps", "v_prob_threshold", "v_weight_decay", "clamp_norm_factor",
               "seed")
# The toy oracle's gender words -> UCE's attribute words.
ORACLE_GENDER = {"man": "male", "woman": "female"}


def _pick(entry: dict, keys) -> dict:
    return {k: entry[k] for k in keys if k in entry}


def toy_oracle_classifier(images) -> list[str | None]:
    from editrobust.toyworld.oracle import label_images

    return [ORACLE_GENDER.get(lab["gender"]) for lab in label_images(images)]


def debias_generator(entry: dict, sampling: SamplingSettings):
    """`generate(pipe, concept)` for the debias loop: a fixed set of seeds per iteration, so the
    loop is reproducible (UCE's script samples unseeded)."""
    n = entry.get("images_per_iteration", 16)
    # the prompts measured are those edited: `prompt_template`, else the edit templates in turn
    templates = [entry["prompt_template"]] if "prompt_template" in entry else entry.get("edit_templates", ["{}"])
    counter = {"calls": 0}

    def gen(pipe, concept):
        counter["calls"] += 1
        first = 10_000 + 1_000 * counter["calls"]  # disjoint from evaluation seeds
        prompts = [templates[i % len(templates)].format(concept) for i in range(n)]
        return generate(pipe, prompts, list(range(first, first + n)), sampling, progress=False)

    return gen


def run_edit(base_dir: str | Path, editor: str, entry: dict, out_dir: str | Path, *, sampling: dict | None = None,
             road_row: dict | None = None, stats: str | Path | None = None, device: str = "cpu",
             clip_model: dict | None = None) -> dict:
    """Apply editor `editor` (config `entry`) to the model in `base_dir`; write the delta variant.

    The model is edited in float32 (UCE's closed form and ReFACT's optimisation), whatever dtype it
    is sampled in. `clip_model` is the resolved spec of a CLIP debias classifier."""
    pipe = load_pipeline(base_dir, device=device, dtype=torch.float32)
    method = entry["method"]
    info: dict = {}
    # FLUX: the T5 length used to embed concepts must be the one used to sample (T5 attends to padding)
    text_length = _pick((sampling or {}), ("max_sequence_length",))
    if method == "uce_erase":
        delta = uce_erase(pipe, **_pick(entry, UCE_ERASE_KEYS), **text_length)
    elif method == "uce_debias":
        classifier = entry.get("classifier", "oracle")
        if classifier == "oracle":
            classify = toy_oracle_classifier
        else:
            if clip_model is None:
                raise ValueError(f"editors.{editor}.clip_model: the CLIP debias classifier needs a CLIP model")
            classify = clip_gender_classifier(clip_model, entry.get("classifier_texts"), device=device)
        delta, iterations = uce_debias(pipe, classify=classify,
                                       generate=debias_generator(entry, SamplingSettings.from_dict(sampling)),
                                       **_pick(entry, UCE_DEBIAS_KEYS), **text_length)
        for it in iterations:
            log.info("debias iteration %d: %s", it["iteration"],
                     {c: round(r.get("female", 0.0), 3) for c, r in it["ratios"].items()})
        for it in iterations:
            if "reselect_gap" in it:
                pooled = {c: round(r.get("female", 0.0), 3) for c, r in it["reselect_ratios"].items()}
                log.info("debias iteration %d measured again: pooled mean gap %.3f, female %s", it["iteration"],
                         it["reselect_gap"], pooled)
        log.info("debias keeps iteration %d", next(it["iteration"] for it in iterations if it.get("selected")))
        info["iterations"] = iterations
    elif method == "refact":
        if road_row is None or stats is None:
            raise ValueError(f"editors.{editor}: ReFACT needs its RoAD row and the fc2 statistic")
        from safetensors.torch import load_file

        moments = load_file(str(stats))
        # SDXL: the statistic file also holds the second encoder's (see compute_fc2_statistic)
        second = {"C_2": moments["C_2"], "layer_2": int(moments["layer_2"])} if "C_2" in moments else {}
        delta, per_component = refact_edit_pipeline(pipe, road_row["prompt"], road_row["old"], road_row["new"],
                                                    entry["layer"], moments["C"], **second,
                                                    **_pick(entry, REFACT_KEYS))
        info["refact"] = {c: {k: v for k, v in i.items() if k != "vectors"} for c, i in per_component.items()}
        info["road_row"] = road_row
        log.info("ReFACT %r: %r -> %r: %s", road_row["prompt"], road_row["old"], road_row["new"], info["refact"])
    else:
        raise ValueError(f"editors.{editor}.method: unknown method {method!r}")
    if not delta:
        log.warning("editor %s changed nothing (the model already met the target)", editor)
    n_params = sum(t.numel() for tensors in delta.values() for t in tensors.values())
    log.info("%s changed %d tensors, %d parameters", editor, sum(len(t) for t in delta.values()), n_params)
    return write_delta_variant(out_dir, delta, dict(name=f"ed-{editor}", kind="edit", parent="base", method=method,
                                                    params=entry, result=info))


def compute_fc2_statistic(base_dir: str | Path, layer: int, texts: list[str], out_path: str | Path,
                          device: str = "cpu", max_length: int | None = None) -> None:
    """ReFACT's uncentred second moment C of the fc2 inputs of `layer`, cached as safetensors."""
    from safetensors.torch import save_file

    from editrobust.editors import second_moment
    from editrobust.io import atomic_path

    pipe = load_pipeline(base_dir, device=device, dtype=torch.float32)
    C = second_moment(pipe.text_encoder, pipe.tokenizer, layer, texts, max_length=max_length)
    tensors = {"C": C.float().contiguous().cpu(), "n_texts": torch.tensor(len(texts))}
    if model_family(pipe) == "sdxl":
        # SDXL's ReFACT edits both encoders; bigG's layer is at the same relative depth (one job
        # per (model, layer) still: the pair is one statistic)
        from editrobust.editors.refact import num_layers, same_relative_depth

        layer_2 = same_relative_depth(layer, num_layers(pipe.text_encoder), num_layers(pipe.text_encoder_2))
        C_2 = second_moment(pipe.text_encoder_2, pipe.tokenizer_2, layer_2, texts, max_length=max_length)
        tensors.update(C_2=C_2.float().contiguous().cpu(), layer_2=torch.tensor(layer_2))
    with atomic_path(out_path) as tmp:
        save_file(tensors, str(tmp))


def statistics_corpus(name: str, path: str | Path | None = None) -> list[str]:
    """Texts for ReFACT's fc2 statistic. `toy_captions`: 20,000 captions of the toy base world
    (the toy's stand-in for WikiText-103 lines); any other name is a download whose `lines.txt`
    (one text per line; for WikiText-103, 100,000 sampled non-empty lines) is at `path`."""
    if name == "toy_captions":
        from editrobust.toyworld.captions import sample_base_world

        return sample_base_world(20_000, seed=12345)[1]
    if path is None:
        raise ValueError(f"statistics corpus {name!r}: not toy_captions, and no lines file given")
    from editrobust.data.downloads import read_corpus_lines

    return read_corpus_lines(path)


def clip_gender_classifier(spec: dict, texts: dict | None = None, device: str = "cpu"):
    """UCE debias's classifier on real models: zero-shot CLIP between two texts, argmax, mapped to
    the attribute words (`{male: "a man", female: "a woman"}` by default, UCE's CLIP_classify.py)."""
    import numpy as np

    from editrobust.scoring.embeddings import compute_image_embeddings, load_clip

    texts = dict(texts or {"male": "a man", "female": "a woman"})
    clip = load_clip(spec, device=device)
    text_emb = clip.encode_texts(list(texts.values())).numpy()
    attributes = np.array(list(texts), dtype=object)

    def classify(images) -> list[str]:
        img = compute_image_embeddings(clip, list(images))
        return list(attributes[(img @ text_emb.T).argmax(axis=1)])

    return classify


def resolve_road_row(spec: dict) -> dict:
    """The edit texts of the RoAD row a config entry points at ({file, type, index}), lower-cased
    as ReFACT reads them: {type, prompt, old, new}."""
    from editrobust.promptsets import road_row

    row = road_row(spec)
    return {"type": row["Type"].lower(), "prompt": row["Prompt"].lower(), "old": row["Old"].lower(),
            "new": row["New"].lower()}
