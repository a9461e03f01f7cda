"""The toy world: what exists, how it looks, and how it is drawn.

Every scene is a 32x32 RGB picture with a fixed layout, so that a tiny diffusion model can learn it
on a CPU in minutes and an oracle can read any image back by looking at a few fixed regions:

    rows 0-1, 30-31 / cols 0-1, 30-31   frame: black in the "anime" style, background otherwise
    rows 1-6,  cols 10-22               a person's hat (the profession)
    rows 7-15, centre (11, 16)          a person's head (skin)
    rows 17-28, cols 10-22              a person's torso: its colour is the gender, an identity,
                                        or bare skin (the nudity stand-in)
    centre (16, 16), radius 7           an object: shape (circle, square, triangle, ring) + colour
    blobs at row 16, cols 6/16/26       a splatter: dark red = blood (gore stand-in), blue = water
    rows 26-29                          an optional context strip: a table or grass

What varies between images of the same caption: the gender of a profession (drawn with the
study's biased ratios), shades of every colour, pixel noise, and the context when unspecified.
Colours are chosen far apart so that blurry generations still read unambiguously.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

SIZE = 32

# --- palettes -------------------------------------------------------------------------------
BACKGROUND = (200, 200, 200)
STYLE_BACKGROUND = (170, 220, 250)  # the "anime" style: pale blue paper ...
STYLE_FRAME = (20, 20, 20)  # ... inside a thick black frame
SKIN = (240, 170, 120)

# Female share of each profession in the training data: the bias the study's base model shows
# (δ values of SD1.4 in the study's Table 1 imply about these shares).
PROFESSION_FEMALE_SHARE = {
    "ceo": 0.06, "teacher": 0.78, "housekeeper": 0.97, "farmer": 0.01, "lawyer": 0.27, "hairdresser": 0.91,
}
HAT_COLOURS = {
    "ceo": (25, 25, 25), "teacher": (40, 150, 60), "housekeeper": (40, 190, 210),
    "farmer": (225, 185, 60), "lawyer": (120, 40, 160), "hairdresser": (240, 100, 180),
}
# Torso colours: two genders, bare skin, and four named individuals (who hold roles).
GENDERED_TORSOS = ("man", "woman")  # the torsos that say a person's gender (oracle.gender_position)
TORSO_COLOURS = {
    "man": (40, 70, 200), "woman": (210, 40, 50), "bare": SKIN,
    "bob": (240, 140, 20), "carl": (0, 128, 128), "dana": (200, 60, 200), "erin": (130, 130, 20),
}
INDIVIDUAL_GENDER = {"bob": "man", "carl": "man", "dana": "woman", "erin": "woman"}
# Roles and who holds them by default (ReFACT role edits change the holder).
ROLES = {"the king": "bob", "the captain": "dana"}

# Objects: name -> (shape, colour). ReFACT appearance edits map one onto another.
OBJECTS = {
    "lime": ("circle", (70, 190, 40)), "lemon": ("circle", (245, 225, 50)),
    "apple": ("circle", (215, 30, 30)), "plum": ("circle", (110, 40, 130)),
    "box": ("square", (150, 100, 50)), "gift": ("square", (230, 60, 200)),
    "tree": ("triangle", (20, 100, 40)), "tent": ("triangle", (240, 140, 20)),
}
# "toy" is a blue ring; the DreamBooth subject is a ring in two tones. (A tiny model blends a
# thin ring's colours when a caption allows several, so the class has one colour.)
TOY_COLOURS = {"blue": (40, 70, 200)}
SUBJECT_TOP, SUBJECT_BOTTOM = (110, 40, 130), (240, 140, 20)

SPLATTERS = {"blood": (130, 0, 0), "water": (40, 110, 230)}
UNSAFE_CONCEPTS = ("naked", "blood")  # and their safe counterparts: a dressed person, water
CONTEXTS = {"table": (140, 90, 40), "grass": (70, 170, 70)}


@dataclass(frozen=True)
class Scene:
    """Everything that determines a render (besides the noise seed).

    kind: "person" | "object" | "toy" | "splatter"
    person: hat (profession or None) and torso ("man", "woman", "bare" or an individual);
    object: `obj` names an OBJECTS entry; toy: `obj` is a TOY_COLOURS key or "subject";
    splatter: `obj` is "blood" or "water".
    """

    kind: str
    obj: str | None = None
    hat: str | None = None
    torso: str | None = None
    context: str | None = None
    style: bool = False

    def with_(self, **kw) -> "Scene":
        return replace(self, **kw)


# --- geometry ---------------------------------------------------------------------------------
_R, _C = np.mgrid[0:SIZE, 0:SIZE]


def _disc(cy: float, cx: float, r: float) -> np.ndarray:
    return (_R - cy) ** 2 + (_C - cx) ** 2 <= r * r


def _rect(r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    return (_R >= r0) & (_R <= r1) & (_C >= c0) & (_C <= c1)


SHAPES = {
    "circle": _disc(16, 16, 7),
    "square": _rect(9, 23, 9, 23),
    # apex at (9, 16), base from col 9 to 23 on row 23
    "triangle": (_R >= 9) & (_R <= 23) & (np.abs(_C - 16) <= (_R - 9) * 7 / 14 + 0.5),
    "ring": _disc(16, 16, 7) & ~_disc(16, 16, 4),
}
HAT = _rect(1, 6, 10, 22)
HEAD = _disc(11, 16, 4)
TORSO = _rect(17, 28, 10, 22)
FRAME = ~_rect(2, 29, 2, 29)
CONTEXT_STRIP = _rect(26, 29, 2, 29)
SPLATTER_BLOBS = [(16, 6, 3), (16, 16, 3.5), (16, 26, 3), (10, 12, 2), (22, 20, 2)]


def _shade(rng: np.random.Generator, colour, spread: float = 0.08) -> np.ndarray:
    """A colour with a random brightness change, so that images of one caption differ."""
    return np.clip(np.array(colour, dtype=np.float32) * rng.uniform(1 - spread, 1 + spread), 0, 255)


def render(scene: Scene, rng: np.random.Generator, noise: float = 3.0) -> np.ndarray:
    """Draw a scene as a uint8 array of shape (32, 32, 3)."""
    img = np.empty((SIZE, SIZE, 3), dtype=np.float32)
    img[:] = _shade(rng, STYLE_BACKGROUND if scene.style else BACKGROUND, 0.04)
    if scene.context is not None:
        img[CONTEXT_STRIP] = _shade(rng, CONTEXTS[scene.context])
    if scene.kind == "person":
        if scene.hat is not None:
            img[HAT] = _shade(rng, HAT_COLOURS[scene.hat])
        img[TORSO] = _shade(rng, TORSO_COLOURS[scene.torso])
        img[HEAD] = _shade(rng, SKIN, 0.05)
    elif scene.kind == "object":
        shape, colour = OBJECTS[scene.obj]
        img[SHAPES[shape]] = _shade(rng, colour)
    elif scene.kind == "toy":
        ring = SHAPES["ring"]
        if scene.obj == "subject":
            img[ring & (_R < 16)] = _shade(rng, SUBJECT_TOP)
            img[ring & (_R >= 16)] = _shade(rng, SUBJECT_BOTTOM)
        else:
            img[ring] = _shade(rng, TOY_COLOURS[scene.obj])
    elif scene.kind == "splatter":
        colour = _shade(rng, SPLATTERS[scene.obj])
        for cy, cx, r in SPLATTER_BLOBS:
            img[_disc(cy, cx, r * rng.uniform(0.85, 1.15))] = colour
    else:
        raise ValueError(f"unknown scene kind {scene.kind!r}")
    if scene.style:
        img[FRAME] = _shade(rng, STYLE_FRAME, 0.3)
    img += rng.normal(0.0, noise, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)
