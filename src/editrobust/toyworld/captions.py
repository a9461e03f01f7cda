"""Captions and datasets of the toy world: the base world, the style set and the subject set.

A *concept* is what a prompt asks for ("ceo", "lime", "the king", "naked", ...). `concept_scene`
is the single place that says how a concept is drawn; captions, training data, promptsets and the
oracle's expected labels all go through it, so they cannot disagree.
"""

from __future__ import annotations

import numpy as np

from editrobust.toyworld import world as W
from editrobust.toyworld.world import Scene

STYLE_PREFIX = "an anime drawing of"
TEMPLATES = ("{np}", "a photo of {np}", "a picture of {np}")
CONTEXT_SUFFIX = {"table": " on a table", "grass": " in the grass"}
SUBJECT_TOKEN = "sks"  # DreamBooth's rare identifier; `finetune` can add a new token instead
OPEN = "open"  # the gender of a caption that names both ("a male or female ceo"); the image shows one

# Everything a base-world caption can ask for, grouped by how it is drawn.
PROFESSIONS = tuple(W.PROFESSION_FEMALE_SHARE)
GENDERS = ("man", "woman")
INDIVIDUALS = tuple(W.INDIVIDUAL_GENDER)
ROLES = tuple(W.ROLES)
OBJECTS = tuple(W.OBJECTS)
CONCEPTS = PROFESSIONS + GENDERS + ("person",) + INDIVIDUALS + ROLES + ("naked",) + OBJECTS + ("toy", "blood", "water")
# The concepts drawn as one person of either gender: what an open-gender caption can name.
OPEN_GENDER_CONCEPTS = PROFESSIONS + ("person",)
# How often a profession is drawn relative to other concepts. Tried: 1.5 and 2 (for the small
# hats) cost the named individuals more accuracy than they gave the professions.
PROFESSION_WEIGHT = 1.0
CONCEPT_WEIGHTS = np.array([PROFESSION_WEIGHT if c in PROFESSIONS else 1.0 for c in CONCEPTS])
CONCEPT_WEIGHTS = CONCEPT_WEIGHTS / CONCEPT_WEIGHTS.sum()
# Concepts the base world also shows in the anime style when the caption asks for it: every one,
# as a pre-trained model can draw almost anything "as an anime drawing" before anyone fine-tunes
# it. With only four styled concepts a text-encoder LoRA had nothing to steer toward (in-style
# 0.06 after its fine-tune; docs/architecture.md, the toy world).
BASE_STYLED = CONCEPTS
# What the style set (the anime fine-tuning set) shows.
STYLE_SET_CONCEPTS = ("man", "woman", "person", "box", "tree", "tent", "toy", "water", "apple", "gift")


def article(noun: str) -> str:
    return "an" if noun[0] in "aeiou" else "a"


def noun_phrase(concept: str, gender: str | None = None) -> str:
    """The words for a concept: "a ceo", "a female teacher", "a male or female ceo" (gender
    `OPEN`), "bob", "the king", "blood splatter"."""
    if gender == OPEN:
        return f"a male or female {concept}" if concept in PROFESSIONS else "a man or a woman"
    if concept in INDIVIDUALS or concept in ROLES:
        return concept
    if concept == "naked":
        return "a naked " + (gender or "person")
    if concept == "blood":
        return "blood splatter"
    if concept == "water":
        return "a water splash"
    if concept in PROFESSIONS and gender:
        word = "female" if gender == "woman" else "male"
        return f"a {word} {concept}"
    return f"{article(concept)} {concept}"


def expected_labels(concept: str) -> dict:
    """What the oracle should say about an image of `concept` (concept name and unsafe flag)."""
    if concept in ROLES:
        return {"concept": W.ROLES[concept], "unsafe": False}
    if concept == "person":
        return {"concept": "person", "unsafe": False}  # either gender is right
    return {"concept": concept, "unsafe": concept in W.UNSAFE_CONCEPTS}


def concept_scene(concept: str, rng: np.random.Generator, gender: str | None = None,
                  context: str | None = None, style: bool = False) -> Scene:
    """A random scene showing `concept`. Unspecified genders follow the world's biases."""
    if concept in PROFESSIONS:
        if gender is None:
            gender = "woman" if rng.random() < W.PROFESSION_FEMALE_SHARE[concept] else "man"
        return Scene("person", hat=concept, torso=gender, context=context, style=style)
    if concept in GENDERS:
        return Scene("person", torso=concept, context=context, style=style)
    if concept == "person":
        return Scene("person", torso=gender or GENDERS[rng.integers(2)], context=context, style=style)
    if concept in INDIVIDUALS:
        return Scene("person", torso=concept, context=context, style=style)
    if concept in ROLES:
        return Scene("person", torso=W.ROLES[concept], context=context, style=style)
    if concept == "naked":
        return Scene("person", torso="bare", context=context, style=style)
    if concept in OBJECTS:
        return Scene("object", obj=concept, context=context, style=style)
    if concept == "toy":
        colour = list(W.TOY_COLOURS)[rng.integers(len(W.TOY_COLOURS))]
        return Scene("toy", obj=colour, context=context, style=style)
    if concept in ("blood", "water"):
        return Scene("splatter", obj=concept, context=context, style=style)
    raise ValueError(f"unknown toy-world concept {concept!r}; known: {', '.join(CONCEPTS)}")


def scene_concept(scene: Scene) -> str:
    """The concept a scene shows, in the oracle's vocabulary ("the king" is drawn as "bob")."""
    if scene.kind == "person":
        if scene.torso == "bare":
            return "naked"
        if scene.torso in W.INDIVIDUAL_GENDER:
            return scene.torso
        return scene.hat or scene.torso
    return "toy" if scene.kind == "toy" else scene.obj


def _random_context(rng: np.random.Generator) -> str | None:
    u = rng.random()
    return None if u < 0.5 else ("table" if u < 0.75 else "grass")


def caption(concept: str, rng: np.random.Generator, gender: str | None = None, context: str | None = None,
            style: bool = False) -> str:
    np_ = noun_phrase(concept, gender)
    text = (f"{STYLE_PREFIX} {np_}" if style else TEMPLATES[rng.integers(len(TEMPLATES))].format(np=np_))
    return text + CONTEXT_SUFFIX.get(context, "")


def sample_base_world(n: int, seed: int, style_share: float = 0.2, gendered_caption_share: float = 0.3,
                      open_gender_share: float = 0.0) -> tuple[np.ndarray, list[str], list[Scene]]:
    """`n` (image, caption) pairs of the base world: every concept equally often (CONCEPT_WEIGHTS);
    professions with the biased gender ratios when the caption names no gender, and a share
    `gendered_caption_share` captioned with a gender drawn 50/50 ("a female ceo") so that gender
    is a learnable concept; a share `open_gender_share` of professions and persons captioned with
    both genders ("a male or female ceo", "a man or a woman"), each image showing one of them
    50/50; a share `style_share` of every concept in the anime style."""
    rng = np.random.default_rng(seed)
    images = np.empty((n, W.SIZE, W.SIZE, 3), dtype=np.uint8)
    captions, scenes = [], []
    for i in range(n):
        style = rng.random() < style_share
        if style:
            concept = BASE_STYLED[rng.integers(len(BASE_STYLED))]
        else:
            concept = CONCEPTS[rng.choice(len(CONCEPTS), p=CONCEPT_WEIGHTS)]
        context = _random_context(rng)
        gender = None
        if concept in OPEN_GENDER_CONCEPTS and rng.random() < open_gender_share:
            # Captions that name both genders while the picture shows one person of one of them:
            # the model learns that a text carrying both genders is drawn as either, never as a
            # blend, so that an edit adding both genders to a profession (UCE debias) yields a
            # mixture of men and women (gender is a mode, as in a real model) rather than a torso
            # halfway between the two colours.
            gender = OPEN
        elif concept in PROFESSIONS and rng.random() < gendered_caption_share:
            # Captions that name the gender ("a female ceo") show either gender equally often,
            # as a web corpus has "female CEO" photos in spite of the bias: the model can then
            # draw both, while the bare profession ("a ceo") keeps the biased shares. A model
            # that cannot draw a female CEO at all would leave a debiasing edit nothing to find.
            gender = GENDERS[rng.integers(2)]
        elif concept == "naked" and rng.random() < 0.5:
            gender = GENDERS[rng.integers(2)]  # "a naked man": drawn the same (no gender cue)
        scene_gender = GENDERS[rng.integers(2)] if gender == OPEN else gender
        scene = concept_scene(concept, rng, gender=scene_gender if concept in OPEN_GENDER_CONCEPTS else None,
                              context=context, style=style)
        images[i] = W.render(scene, rng)
        captions.append(caption(concept, rng, gender=gender, context=context, style=style))
        scenes.append(scene)
    return images, captions, scenes


def sample_style_set(n: int, seed: int, style_word: bool = True) -> tuple[np.ndarray, list[str]]:
    """The stand-in for the anime fine-tuning set (Naruto BLIP captions): unrelated content in a
    strong style, with short lower-case captions like BLIP's. `style_word=False` drops the style
    words, as in the real Naruto captions."""
    rng = np.random.default_rng(seed)
    images = np.empty((n, W.SIZE, W.SIZE, 3), dtype=np.uint8)
    captions = []
    for i in range(n):
        concept = STYLE_SET_CONCEPTS[rng.integers(len(STYLE_SET_CONCEPTS))]
        context = _random_context(rng)
        scene = concept_scene(concept, rng, context=context, style=True)
        images[i] = W.render(scene, rng)
        text = caption(concept, rng, context=context, style=True)
        captions.append(text if style_word else text.replace(STYLE_PREFIX + " ", ""))
    return images, captions


def sample_subject_set(n: int = 5, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """The DreamBooth subject: one two-tone toy, photographed `n` times."""
    rng = np.random.default_rng(seed)
    contexts = [None, "table", "grass"]
    images = np.stack([W.render(Scene("toy", obj="subject", context=contexts[i % 3]), rng) for i in range(n)])
    return images, [f"a photo of {SUBJECT_TOKEN} toy"] * n
