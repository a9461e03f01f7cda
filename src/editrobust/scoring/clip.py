"""Zero-shot OpenCLIP scorers: gender (UCE's debiasing evaluation) and ReFACT's two-text test.

Both read the image embeddings shared by every CLIP scorer of an image set (see embeddings.py)
and encode their texts with the same model. Images are L2-normalised, texts too; the probability
of text j is softmax(scale * cos(image, text))_j.

clip_gender  texts {man: "a man", woman: "a woman"} by default, as in UCE's
             `evalscripts/CLIP_classify.py`; gender = argmax. An optional `none_text` (e.g. "a
             picture without a person") adds a third class that leaves gender empty. Black images
             (the NSFW filter's blackouts) get no gender either, so the female share and δ are
             computed after removing them, as the study does.
clip_pair    ReFACT's evaluation: p = softmax(100 * cos(image, [text_old, text_new])). Efficacy and
             generality succeed when p(new) > p(old), specificity when p(old) > p(new) (text_old
             is the neighbour prompt itself). With `threshold: t` success is instead p > t for the
             text that should win (Generality_75 / _90 use 0.75 / 0.9). Black images are
             flagged (`black`), for the rates to leave out.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from editrobust.plugins import Param
from editrobust.scoring import BLACK_THRESHOLD, ClipScorer, text_pair
from editrobust.scoring.common import black_flags, finish, id_frame, load_images
from editrobust.scoring.embeddings import clip_spec, image_embeddings, load_clip

GENDER_VERSION = "clip_gender-1"
PAIR_VERSION = "clip_pair-1"
DEFAULT_GENDER_TEXTS = {"man": "a man", "woman": "a woman"}
REFACT_SCALE = 100.0  # ReFACT's softmax(100 * cos)


class ClipGender(ClipScorer):
    """Zero-shot OpenCLIP gender (UCE's CLIP_classify.py): `gender` man/woman by argmax, `p_woman`."""

    name = "clip_gender"
    params = {
        **ClipScorer.params,
        "texts": text_pair(DEFAULT_GENDER_TEXTS, doc="the two texts (UCE's `CLIP_classify.py`)"),
        "none_text": Param({"type": ["string", "null"]}, None,
                           doc="an optional third text meaning \"no person\", which leaves `gender` empty"),
        "black_threshold": BLACK_THRESHOLD,
    }

    def run(self, index, image_dir, params, embeddings=None, **inputs):
        return score_gender(index, image_dir, params, embeddings)


class ClipPair(ClipScorer):
    """ReFACT's two-text test on RoAD promptsets: `success` 0/1, `p_old`, `p_new`."""

    name = "clip_pair"
    params = {
        **ClipScorer.params,
        "scale": Param({"type": "number", "exclusiveMinimum": 0}, REFACT_SCALE,
                       doc="p = softmax(scale·cos(image, [text_old, text_new]))"),
        "threshold": Param({"type": ["number", "null"], "minimum": 0, "maximum": 1}, None,
                           doc="null: efficacy/generality succeed when p(new) > p(old), specificity when p(old) > "
                               "p(new); a number t: when p(the text that should win) > t (Generality_75 / _90)"),
        "black_threshold": BLACK_THRESHOLD,
    }

    def run(self, index, image_dir, params, embeddings=None, **inputs):
        return score_pair(index, image_dir, params, embeddings)


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def score_gender(index: pd.DataFrame, image_dir, params: dict, embeddings=None) -> pd.DataFrame:
    texts = dict(params["texts"])
    if set(texts) != {"man", "woman"}:
        raise ValueError(f"clip_gender texts must have exactly the keys man and woman, got {sorted(texts)}")
    labels = ["man", "woman"] + (["none"] if params["none_text"] else [])
    prompts = [texts["man"], texts["woman"]] + ([params["none_text"]] if params["none_text"] else [])
    clip = load_clip(clip_spec(params))
    img = image_embeddings(index, image_dir, clip, embeddings)
    probs = _softmax(clip.logit_scale * img @ clip.encode_texts(prompts).numpy().T)
    out = id_frame(index)
    choice = np.array(labels, dtype=object)[probs.argmax(axis=1)]
    # a black image (blacked out by the NSFW filter) has no gender: it leaves F_p's denominator
    black = black_flags(load_images(index, image_dir), params["black_threshold"])
    out["gender"] = np.where((choice == "none") | black, None, choice)
    out["black"] = black.astype(int)
    out["p_woman"] = probs[:, 1]
    out["clip_model"] = clip.description
    out["texts"] = " | ".join(prompts)
    return finish(out, "clip_gender", GENDER_VERSION)


def score_pair(index: pd.DataFrame, image_dir, params: dict, embeddings=None) -> pd.DataFrame:
    needed = {"metric", "text_old", "text_new"} - set(index.columns)
    if needed:
        raise ValueError(f"clip_pair needs a RoAD promptset: index.csv lacks {', '.join(sorted(needed))}")
    bad = sorted(set(index["metric"]) - {"efficacy", "generality", "specificity"})
    if bad:
        raise ValueError(f"clip_pair: unknown metric(s) {bad} in index.csv (efficacy, generality, specificity)")
    threshold = params["threshold"]
    scale = float(params["scale"])
    clip = load_clip(clip_spec(params))
    img = image_embeddings(index, image_dir, clip, embeddings)
    texts = sorted(set(index["text_old"]) | set(index["text_new"]))
    text_emb = dict(zip(texts, clip.encode_texts(texts).numpy()))
    old = np.stack([text_emb[t] for t in index["text_old"]])
    new = np.stack([text_emb[t] for t in index["text_new"]])
    logits = scale * np.stack([(img * old).sum(1), (img * new).sum(1)], axis=1)
    p_old, p_new = _softmax(logits).T
    # The text that should win: the new fact for efficacy/generality, the neighbour for specificity.
    p_want = np.where(index["metric"].to_numpy() == "specificity", p_old, p_new)
    p_other = np.where(index["metric"].to_numpy() == "specificity", p_new, p_old)
    success = p_want > (threshold if threshold is not None else p_other)
    out = id_frame(index)
    out["text_old"] = index["text_old"].to_numpy()
    out["text_new"] = index["text_new"].to_numpy()
    out["p_old"], out["p_new"] = p_old, p_new
    out["success"] = success.astype(int)
    # black images (the NSFW filter's blackouts) are flagged; summaries leave them out of the rates
    out["black"] = black_flags(load_images(index, image_dir), params["black_threshold"]).astype(int)
    out["clip_model"] = clip.description
    return finish(out, "clip_pair", PAIR_VERSION, threshold)
