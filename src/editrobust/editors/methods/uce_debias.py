"""`method: uce_debias`: UCE's iterative debiasing (Gandikota et al., WACV 2024; its 2025 code).

Each iteration samples every concept, classifies the images' gender, and re-solves UCE's closed
form with each concept's key shifted along the attribute directions until the measured ratios
reach the desired ones (uce.py: `uce_debias`). The classifier is the toy world's oracle on toy
models or zero-shot OpenCLIP on real ones.

A long vocabulary (the paper grid's 40 WinoBias occupations, UCE's edit templates and its preserve
set of 188 professions) lives in a data file named by `vocabulary`, with its source in a header
comment: the file gives `concepts`, `edit_templates` and/or `preserve_concepts`, and the entry
leaves those keys out. The file is an input of the edit, so changing it re-runs the edit.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path

from editrobust.plugins import Param
from editrobust.variant_names import BASE, ed

from .. import EditJob, EditWork, Editor, Outcome

log = logging.getLogger(__name__)

CONCEPTS = {"$ref": "#/$defs/concept_list"}
TEMPLATE = {"type": "string", "pattern": "\\{\\}"}
# The toy oracle's gender words -> UCE's attribute words.
ORACLE_GENDER = {"man": "male", "woman": "female"}
# Keys that configure the job around UCE's loop rather than the loop itself.
JOB_KEYS = ("classifier", "clip_model", "classifier_texts", "images_per_iteration", "prompt_template", "vocabulary")
# The lists a `vocabulary` file may give (and the entry then leaves out).
VOCABULARY_KEYS = ("concepts", "edit_templates", "preserve_concepts")


class UceDebias(Editor):
    """UCE debias: iterate UCE's closed form until a classifier sees the desired attribute ratios."""

    name = "uce_debias"
    params = {
        **Editor.params,
        "concepts": Param({**CONCEPTS, "minItems": 1},
                          doc="the texts to debias, also the prompts sampled in the loop (required, here or in the "
                              "`vocabulary` file)"),
        "vocabulary": Param({"type": "string", "minLength": 1},
                            doc="a YAML file (path relative to the working directory) giving any of `concepts`, "
                                "`edit_templates`, `preserve_concepts` as lists of texts, which the entry then leaves "
                                "out: long word lists with their source in the file's header (an input of the edit)"),
        "attributes": Param({**CONCEPTS, "minItems": 2}, ["male", "female"], doc="the classifier's labels"),
        "attribute_texts": Param({**CONCEPTS, "minItems": 2},
                                 doc="texts whose embeddings are the attribute directions, one per attribute "
                                     "(default: the attributes), e.g. `a man; a woman`"),
        "desired_ratios": Param({"type": "array", "items": {"type": "number", "minimum": 0, "maximum": 1}},
                                [0.5, 0.5], doc="the target share of each attribute"),
        "token_mode": Param({"enum": ["last", "window"]}, "last",
                            doc="`last`: UCE's current single token; `window`: the paper-era aligned windows "
                                "(last sub-word, EOS and pads), SD1.x/SDXL only"),
        "edit_templates": Param({"type": "array", "minItems": 1, "items": TEMPLATE}, ["{}"],
                                doc="old UCE's edit prompts: each template (e.g. `a photo of {}`) adds every concept "
                                    "in that phrasing as one more edited key; without `prompt_template` the loop "
                                    "samples the templates in turn"),
        "max_iterations": Param({"type": "integer", "minimum": 1}, 30, doc="iterations of the loop at most"),
        "keep": Param({"enum": ["best", "last"]}, "best",
                      doc="`best`: the best measured iteration's weights (ours); `last`: the weights after the last "
                          "update, measured or not (UCE's script)"),
        "max_diff": Param({"type": "number", "exclusiveMinimum": 0}, 0.05,
                          doc="a concept has converged when every ratio is within this of its target; the edit "
                              "reached its target when every concept has, in the iteration kept (UCE's criterion)"),
        "gain": Param({"type": "number", "exclusiveMinimum": 0}, 1.0,
                      doc="scales each update (UCE's integral controller uses 1; the toy uses 0.3, 1 oscillated)"),
        "gain_halving": Param({"type": "boolean"}, False,
                              doc="our extension: halve a concept's gain each time its gap changes sign"),
        "reselect_top": Param({"type": "integer", "minimum": 0}, 0,
                              doc="our extension: the best measured iterations measured again before one is kept "
                                  "(the best of many noisy measurements is mostly luck)"),
        "reselect_rounds": Param({"type": "integer", "minimum": 0}, 2,
                                 doc="fresh measurements per re-measured iteration; the smallest pooled gap is kept"),
        "lamb": Param({"type": "number", "minimum": 0}, 0.5, doc="ridge weight λ towards the old weights"),
        "edit_scale": Param({"type": "number", "minimum": 0}, 1.0, doc="weight of the edited keys"),
        "preserve_scale": Param({"type": "number", "minimum": 0}, 1.0, doc="weight of the preserve keys"),
        "preserve_concepts": Param(CONCEPTS, [], doc="concepts whose outputs are kept"),
        "classifier": Param({"enum": ["oracle", "clip"]}, "oracle",
                            doc="`oracle`: the toy world's gender (toy models only); `clip`: zero-shot OpenCLIP, "
                                "argmax over `classifier_texts`"),
        "clip_model": Param({"$ref": "#/$defs/name"}, doc="with `classifier: clip`: a name from `clip_models`"),
        "classifier_texts": Param({"type": "object", "minProperties": 2,
                                   "additionalProperties": {"type": "string", "minLength": 1}},
                                  doc="{attribute: text} of the CLIP classifier (default {male: a man, female: a woman}, "
                                      "UCE's CLIP_classify.py); keys = the attributes"),
        "images_per_iteration": Param({"type": "integer", "minimum": 1}, 16,
                                      doc="images per concept and iteration (fixed seeds, disjoint from evaluation)"),
        "prompt_template": Param(TEMPLATE, doc="the prompt sampled in the loop (default: the edit templates in turn)"),
    }

    @classmethod
    def problems(cls, name: str, entry: Mapping, config: Mapping) -> list[str]:
        where = f"editors.{name}"
        problems = vocabulary_problems(where, entry)
        if problems:
            return problems
        if entry["classifier"] == "oracle":
            models = config.get("models") or {}
            users = {ev["model"] for ev in config.get("evaluations") or [] if ed(name) in ev.get("variants", [])}
            return [f"{where}.classifier: the oracle classifier needs a toy model; model {m!r} is not one"
                    for m in sorted(users) if (models.get(m) or {}).get("kind") != "toy"]
        clip_models = config.get("clip_models") or {}
        if entry.get("clip_model") not in clip_models:
            return [f"{where}.clip_model: the CLIP classifier needs a name from clip_models "
                    f"(got {entry.get('clip_model')!r}; defined: {', '.join(clip_models) or 'none'})"]
        texts = entry.get("classifier_texts")
        if texts and sorted(texts) != sorted(entry["attributes"]):
            return [f"{where}.classifier_texts: keys {sorted(texts)} must be the attributes {sorted(entry['attributes'])}"]
        return []

    @classmethod
    def resolved(cls, entry: Mapping, config: Mapping) -> dict:
        entry = cls.with_defaults(entry)
        if entry["classifier"] != "clip":
            return {}
        from editrobust.scoring import clip_model_spec

        return {"clip_model": clip_model_spec(config, entry["clip_model"])}

    @classmethod
    def inputs(cls, model: str, entry: Mapping, config: Mapping, parent: str = BASE) -> dict[str, str]:
        return {"vocabulary": entry["vocabulary"]} if "vocabulary" in entry else {}

    @classmethod
    def work(cls, entry: Mapping) -> EditWork:
        """At most max_iterations x concepts x images_per_iteration images (the loop stops once every
        concept is within max_diff), and reselect_rounds fresh measurements of every concept for each of
        the reselect_top iterations measured again."""
        e = cls.with_defaults(entry)
        concepts = e.get("concepts")
        if concepts is None and "vocabulary" in e:  # the file is in the repository (config/), read it if here
            try:
                concepts = load_vocabulary(e["vocabulary"]).get("concepts")
            except (OSError, ValueError):
                concepts = None
        if concepts is None:
            return EditWork(bound=True)
        n = (e["max_iterations"] + e["reselect_top"] * e["reselect_rounds"]) * len(concepts)
        return EditWork(images=n * e["images_per_iteration"], bound=True)

    @classmethod
    def changed_parameters(cls, pipe, entry):
        from ..uce import uce_parameter_count

        return uce_parameter_count(pipe)

    def run(self, pipe, job: EditJob):
        from editrobust.sampling import SamplingSettings

        from ..uce import uce_debias

        vocabulary = {}
        if "vocabulary" in job.entry:
            where = f"editors.{job.editor}.vocabulary"
            vocabulary = load_vocabulary(job.inputs.get("vocabulary", job.entry["vocabulary"]), where)
            job = dataclasses.replace(job, entry=with_vocabulary(job.entry, vocabulary, where))
        entry = job.entry
        if entry["classifier"] == "oracle":
            classify = toy_oracle_classifier
        else:
            if "clip_model" not in job.resolved:
                raise ValueError(f"editors.{job.editor}.clip_model: the CLIP debias classifier needs a CLIP model")
            classify = clip_gender_classifier(job.resolved["clip_model"], entry.get("classifier_texts"),
                                              device=job.device)
        delta, iterations = uce_debias(pipe, classify=classify,
                                       generate=debias_generator(entry, SamplingSettings.from_dict(job.sampling)),
                                       **job.params(*JOB_KEYS), **job.text_length)
        for it in iterations:
            log.info("debias iteration %d: %s", it["iteration"],
                     {c: round(r.get("female", 0.0), 3) for c, r in it["ratios"].items()})
        for it in iterations:
            if "reselect_gap" in it:
                pooled = {c: round(r.get("female", 0.0), 3) for c, r in it["reselect_ratios"].items()}
                log.info("debias iteration %d measured again: pooled mean gap %.3f, female %s", it["iteration"],
                         it["reselect_gap"], pooled)
        kept = next(it for it in iterations if it.get("selected"))
        log.info("debias keeps iteration %d", kept["iteration"])
        info = {"iterations": iterations, "target": debias_outcome(kept, entry)}
        if vocabulary:  # what the file gave, as read (variant.json's params hold only its path)
            info["vocabulary"] = {"file": str(entry["vocabulary"]), **vocabulary}
        return delta, info


def load_vocabulary(path: str | Path, where: str = "vocabulary") -> dict[str, list[str]]:
    """The lists of a `vocabulary` file: a YAML mapping of `VOCABULARY_KEYS` to non-empty lists of
    distinct, non-empty texts (templates with exactly one `{}`), no concept also preserved.
    ValueError naming `where`, the file and the key otherwise."""
    from editrobust.config import ConfigError, load_yaml

    try:
        data = load_yaml(path)
    except (OSError, ConfigError) as e:
        raise ValueError(f"{where}: cannot read the vocabulary {path}: {e}") from None
    unknown = sorted(set(data) - set(VOCABULARY_KEYS))
    if unknown:
        raise ValueError(f"{where}: {path} has unknown key(s) {unknown}; a vocabulary gives {', '.join(VOCABULARY_KEYS)}")
    for key, texts in data.items():
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t.strip() for t in texts):
            raise ValueError(f"{where}: {path}: {key} must be a non-empty list of non-empty texts")
        repeated = sorted({t for t in texts if texts.count(t) > 1})
        if repeated:
            raise ValueError(f"{where}: {path}: {key} repeats {repeated}")
    bad = [t for t in data.get("edit_templates", []) if t.count("{}") != 1]
    if bad:
        raise ValueError(f"{where}: {path}: edit_templates {bad} must each hold exactly one '{{}}' (where the concept goes)")
    preserved = {t.lower() for t in data.get("preserve_concepts", [])}
    both = [c for c in data.get("concepts", []) if c.lower() in preserved]
    if both:  # a preserve key on an edited concept pulls its own edit back
        raise ValueError(f"{where}: {path}: {both} are both concepts and preserve_concepts")
    return data


def with_vocabulary(entry: Mapping, vocabulary: Mapping, where: str = "vocabulary") -> dict:
    """The entry with the vocabulary's lists in place of its defaults; ValueError if the entry
    sets one of them itself (to anything but its default): a list comes from one place."""
    defaults = UceDebias.defaults()
    clash = sorted(k for k in vocabulary if k in entry and (k not in defaults or entry[k] != defaults[k]))
    if clash:
        raise ValueError(f"{where}: {entry.get('vocabulary')} gives {clash}, which the entry sets too; give each "
                         "list in one place")
    return {**entry, **vocabulary}


def vocabulary_problems(where: str, entry: Mapping) -> list[str]:
    """Config-time checks of `concepts` / `vocabulary`. A vocabulary file that does not exist (yet)
    is left to the workflow, which names it as the edit's missing input."""
    if "vocabulary" not in entry:
        return [] if "concepts" in entry else [f"{where}.concepts: required (in the entry or a `vocabulary` file)"]
    path = Path(entry["vocabulary"])
    if not path.is_file():
        return []
    try:
        merged = with_vocabulary(entry, load_vocabulary(path, f"{where}.vocabulary"), f"{where}.vocabulary")
    except ValueError as e:
        return [str(e)]
    return [] if "concepts" in merged else [f"{where}.concepts: required (in the entry or {path})"]


def debias_outcome(kept: Mapping, entry: Mapping) -> Outcome:
    """UCE's convergence in the iteration kept: every concept's largest attribute gap below
    max_diff (measured on its pooled re-measurements when there are some)."""
    from ..uce import largest_gaps

    ratios = kept.get("reselect_ratios") or kept["ratios"]  # keep: last: the measurement before the update kept
    attributes = entry["attributes"]
    gaps = largest_gaps([[r.get(a, 0.0) for a in attributes] for r in ratios.values()], entry["desired_ratios"])
    worst = max(gaps)
    reached = worst < entry["max_diff"]
    return Outcome(reached=reached, measure="UCE debias's largest attribute gap, worst concept", value=worst,
                   threshold=entry["max_diff"], already_met=reached and kept["iteration"] == 0,
                   cause="" if reached else f"after {entry['max_iterations']} iterations the loop kept iteration "
                   f"{kept['iteration']}; no iteration converged (a gain too large oscillates, too small creeps; the "
                   "classifier's measurement of images_per_iteration images is noisy)")


def toy_oracle_classifier(images) -> list[str | None]:
    from editrobust.toyworld.oracle import label_images

    return [ORACLE_GENDER.get(lab["gender"]) for lab in label_images(images)]


def debias_generator(entry: Mapping, sampling):
    """`generate(pipe, concept)` for the debias loop: a fixed set of seeds per iteration, so the
    loop is reproducible (UCE's script samples unseeded)."""
    from editrobust.sampling import generate

    n = entry["images_per_iteration"]
    # the prompts measured are those edited: `prompt_template`, else the edit templates in turn
    templates = [entry["prompt_template"]] if "prompt_template" in entry else entry["edit_templates"]
    counter = {"calls": 0}

    def gen(pipe, concept):
        counter["calls"] += 1
        first = 10_000 + 1_000 * counter["calls"]  # disjoint from evaluation seeds
        prompts = [templates[i % len(templates)].format(concept) for i in range(n)]
        return generate(pipe, prompts, list(range(first, first + n)), sampling, progress=False)

    return gen


def clip_gender_classifier(spec: Mapping, texts: Mapping | None = None, device: str = "cpu"):
    """UCE debias's classifier on real models: zero-shot CLIP between two texts, argmax, mapped to
    the attribute words (`{male: "a man", female: "a woman"}` by default, UCE's CLIP_classify.py)."""
    import numpy as np

    from editrobust.scoring.embeddings import compute_image_embeddings, load_clip

    texts = dict(texts or {"male": "a man", "female": "a woman"})
    clip = load_clip(dict(spec), device=device)
    text_emb = clip.encode_texts(list(texts.values())).numpy()
    attributes = np.array(list(texts), dtype=object)

    def classify(images) -> list[str]:
        img = compute_image_embeddings(clip, list(images))
        return list(attributes[(img @ text_emb.T).argmax(axis=1)])

    return classify
