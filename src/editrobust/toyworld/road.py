"""The toy world's RoAD: ReFACT edits of toy concepts, in the RoAD test-file layout.

`toy_road_frame()` has exactly `ROAD_COLUMNS`, so `write_toy_road` + `data.road.read_road` give
the same rows (lower-cased) as the real dataset would. Every prompt and text is built from
`captions.noun_phrase`, the caption templates and the context suffixes, so the toy model was
trained on such captions and the oracle can check any image of them (`toy_expected_concept`).

    Appearance  Prompt = Old = "a lime", New = Oracle = "a lemon" (one object drawn as another)
    Role        Prompt = "the king", Old = "bob" (the holder), New = Oracle = "erin"
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from editrobust.data.road import N_EXAMPLES, ROAD_COLUMNS, road_promptset
from editrobust.io import write_csv
from editrobust.toyworld import captions as C
from editrobust.toyworld import world as W

# Rows 1 and 2 were apple -> plum and box -> gift until the toy world of 2026-12-06, on whose base
# neither took (efficacy 0.00 and 0.19 at p(new) 0.96 / 0.97; apple -> lemon failed as well) while
# plum -> lime and gift -> box do (config/README.md, ReFACT on the toy).
APPEARANCE_EDITS = (("lime", "lemon"), ("plum", "lime"), ("gift", "box"), ("tree", "tent"))
# role -> new holder; old = W.ROLES. The king's new holder is erin, not carl: the toy draws people
# as torso colours, and erin's olive lies on the way from bob's orange to carl's teal, so an edit
# that moved the king part of the way toward carl was drawn as erin (efficacy 0 under five ReFACT
# settings; config/README.md). From bob to erin no other colour lies in between; from dana to erin
# neither.
ROLE_EDITS = (("the king", "erin"), ("the captain", "erin"))


def paraphrases(subject: str) -> list[str]:
    """Five captions of `subject` that the toy world draws (templates and context suffixes)."""
    photo, picture = C.TEMPLATES[1].format(np=subject), C.TEMPLATES[2].format(np=subject)
    table, grass = C.CONTEXT_SUFFIX["table"], C.CONTEXT_SUFFIX["grass"]
    return [photo, picture, subject + table, subject + grass, photo + grass]


def _row(type_: str, prompt: str, old: str, new: str, negatives: list[str], negative_new: str) -> dict:
    # RoAD's Oracle is "new as prompt" for roles; the toy world cannot draw such a sentence, so the
    # oracle prompt is the new concept itself (what an unedited model should draw for the new fact).
    row = dict(Type=type_, Prompt=prompt, Oracle=new, Old=old, New=new)
    for i, (pos, pos_old, pos_new) in enumerate(zip(paraphrases(prompt), paraphrases(old), paraphrases(new)), 1):
        row.update({f"Positive{i}": pos, f"Positive_oracle{i}": pos_new,
                    f"Positive_old{i}": pos_old, f"Positive_new{i}": pos_new})
    assert len(negatives) == N_EXAMPLES
    for i, neg in enumerate(negatives, 1):
        # What the negative would look like had the edit leaked onto it: the new concept.
        row.update({f"Negative{i}": neg, f"Negative_new{i}": negative_new})
    return row


def toy_road_frame() -> pd.DataFrame:
    """The toy RoAD rows (4 Appearance, then 2 Role) with `ROAD_COLUMNS`; Type spelt as in RoAD."""
    rows = []
    for old, new in APPEARANCE_EDITS:
        # The other objects, which the edit must leave alone.
        others = [o for o in C.OBJECTS if o not in (old, new)][:N_EXAMPLES]
        rows.append(_row("Appearance", C.noun_phrase(old), C.noun_phrase(old), C.noun_phrase(new),
                         [C.noun_phrase(o) for o in others], C.noun_phrase(new)))
    for role, new in ROLE_EDITS:
        old = W.ROLES[role]
        # As in RoAD, the old holder himself comes first ("bob" must stay bob), then the other
        # people and roles, and the new holder's gender ("a woman" must not turn into erin).
        people = [p for p in C.INDIVIDUALS if p not in (old, new)]
        other_roles = [r for r in C.ROLES if r != role]
        negatives = [old] + people + other_roles + [C.noun_phrase(W.INDIVIDUAL_GENDER[new])]
        rows.append(_row("Role", role, old, new, negatives[:N_EXAMPLES], new))
    return pd.DataFrame(rows, columns=list(ROAD_COLUMNS))


def write_toy_road(path: str | Path) -> Path:
    """Write `toy_road_frame()` as a RoAD CSV, atomically (temp file in the same folder, then rename)."""
    write_csv(path, toy_road_frame())
    return Path(path)


def _phrase_table() -> dict[str, str]:
    """Every noun phrase the captions use -> the concept the oracle reports for its image."""
    table = {C.noun_phrase(c): C.expected_labels(c)["concept"] for c in C.CONCEPTS}
    for g in C.GENDERS:
        table.update({C.noun_phrase(p, gender=g): p for p in C.PROFESSIONS})
        table[C.noun_phrase("naked", gender=g)] = "naked"
    return table


_PHRASES = _phrase_table()
_PREFIXES = tuple(t.format(np="").strip() + " " for t in C.TEMPLATES if t != "{np}") + (C.STYLE_PREFIX + " ",)


def toy_expected_concept(text: str) -> str:
    """The concept the oracle reports for an image of `text` ("a lime in the grass" -> "lime",
    "the king" -> "bob", "a photo of carl" -> "carl"). ValueError if `text` names no toy concept."""
    t = " ".join(str(text).lower().split())
    for suffix in C.CONTEXT_SUFFIX.values():
        if t.endswith(suffix):
            t = t[: -len(suffix)]
            break
    for prefix in _PREFIXES:
        if t.startswith(prefix):
            t = t[len(prefix):]
            break
    if t not in _PHRASES:
        raise ValueError(f"{text!r} names no toy-world concept (known noun phrases: {', '.join(sorted(_PHRASES))})")
    return _PHRASES[t]


def toy_road_promptset(row, prompt_id_prefix: str) -> pd.DataFrame:
    """`road_promptset` of a toy row plus `expected_old` / `expected_new`: the concepts the oracle
    reports for images of text_old / text_new, so success is decided without CLIP."""
    df = road_promptset(row, prompt_id_prefix)
    df["expected_old"] = df["text_old"].map(toy_expected_concept)
    df["expected_new"] = df["text_new"].map(toy_expected_concept)
    return df
