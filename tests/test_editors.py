"""Editors on tiny random SD1.x, SDXL and FLUX pipelines: the closed forms do what the formulas say."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

from editrobust.editors import EDITORS
from editrobust.models.components import apply_delta
from editrobust.editors.refact import refact_edit, refact_edit_pipeline, second_moment
from editrobust.editors.uce import concept_embeddings, solve_uce, uce_debias, uce_erase, uce_modules, uce_transform
from editrobust.plugins import PluginError
from editrobust.editors.refact import (fc2_io, fc2_key, lookup_index, lookup_positions, same_relative_depth,
                                      text_features)
from editrobust.editors.uce import TOKENS, _last_token_index, _window_pair
from editrobust.models.builders import build_sd1_pipeline
from editrobust.models.tiny import build_tiny_flux_pipeline, build_tiny_sdxl_pipeline

EDITS, GUIDE, PRESERVE = ["a cat", "dog"], "", ["a tree", "car"]
# erase_scale ≫ λ makes W_new c_i = v_i* (nearly) exact; a large preserve scale pins the preserved outputs
STRONG = dict(lamb=0.5, erase_scale=1e4, preserve_scale=1e4)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def sd1():
    return build_sd1_pipeline(seed=0)


@pytest.fixture(scope="module")
def sdxl():
    return build_tiny_sdxl_pipeline(seed=0)


@pytest.fixture(scope="module")
def flux():
    return build_tiny_flux_pipeline(seed=0)


@pytest.fixture(params=["sd1", "sdxl", "flux"])
def any_pipe(request):
    return request.getfixturevalue(request.param)


def _state(pipe, names=("unet", "transformer", "text_encoder", "text_encoder_2")):
    return {n: {k: v.clone() for k, v in getattr(pipe, n).state_dict().items()}
            for n in names if getattr(pipe, n, None) is not None}


def _assert_unchanged(pipe, before):
    for comp, tensors in before.items():
        now = getattr(pipe, comp).state_dict()
        assert all(torch.equal(now[k], v) for k, v in tensors.items()), f"{comp} was modified in place"


def _weight(pipe, module):
    return getattr(pipe, module.component).get_submodule(module.name).weight.detach()


def _rel(a, b):
    return ((a - b).norm(dim=-1) / b.norm(dim=-1)).max().item()


# ------------------------------------------------------------------------------------- registry
def test_registry_names_and_unknown_editor():
    assert EDITORS.names() == ["uce_erase", "uce_debias", "refact", "esd"]
    assert all(EDITORS.get(name).name == name for name in EDITORS.names())
    with pytest.raises(PluginError, match="unknown method 'rome' \\(known: uce_erase, uce_debias, refact"):
        EDITORS.get("rome")
    with pytest.raises(PluginError, match="cannot import module 'nowhere'"):
        EDITORS.get("nowhere:Editor")
    with pytest.raises(PluginError, match="editrobust.editors.uce.uce_erase is not a subclass of"):
        EDITORS.get("editrobust.editors.uce:uce_erase")


# ------------------------------------------------------------------------------------ closed form
def test_solve_uce_matches_the_explicit_formula():
    g = torch.Generator().manual_seed(0)
    W, c, v, p = (torch.randn(*s, generator=g) for s in [(6, 5), (2, 5), (2, 6), (3, 5)])
    lamb, se, sp = 0.5, 2.0, 0.7
    mat1 = lamb * W + se * v.T @ c + sp * (W @ p.T) @ p
    mat2 = lamb * torch.eye(5) + se * c.T @ c + sp * p.T @ p
    torch.testing.assert_close(solve_uce(W, c, v, p, lamb, se, sp), mat1 @ torch.inverse(mat2))
    torch.testing.assert_close(solve_uce(W, c, v, None, lamb, se, sp),
                               (lamb * W + se * v.T @ c) @ torch.inverse(lamb * torch.eye(5) + se * c.T @ c))


def test_concept_embeddings_per_family(sd1, sdxl, flux):
    assert concept_embeddings(sd1, ["a cat", ""])[TOKENS].shape == (2, 64)
    assert concept_embeddings(sdxl, ["a cat"])[TOKENS].shape == (1, sdxl.unet.config.cross_attention_dim)
    emb = concept_embeddings(flux, ["a cat"])
    assert emb["tokens"].shape == (1, 40) and emb["pooled"].shape == (1, 48)
    # idx = attention_mask.sum() − 2: "a cat" -> [BOS, a, cat, EOS] -> 2; '' -> BOS at 0
    assert _last_token_index(sd1.tokenizer, ["a cat", ""], 16).tolist() == [2, 0]
    seq = sd1.encode_prompt("a cat", device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=False)[0]
    torch.testing.assert_close(concept_embeddings(sd1, ["a cat"])[TOKENS][0], seq[0, 2])


# -------------------------------------------------------------------------------------- UCE erase
def test_uce_erase_maps_edits_to_targets_and_keeps_preserved(any_pipe):
    before = _state(any_pipe)
    delta = uce_erase(any_pipe, EDITS, GUIDE, PRESERVE, **STRONG)
    _assert_unchanged(any_pipe, before)
    emb = concept_embeddings(any_pipe, EDITS + [GUIDE] + PRESERVE)
    for m in uce_modules(any_pipe):
        W_old, W_new = _weight(any_pipe, m), delta[m.component][m.weight_key]
        assert W_new.dtype == W_old.dtype and W_new.is_contiguous()
        c = emb[m.space]
        edits, guide, preserve = c[:2], c[2:3].expand(2, -1), c[3:]
        assert _rel(edits @ W_new.T, guide @ W_old.T) < 1e-3  # W_new c_i ≈ v_i* = W_old c_guide
        assert _rel(preserve @ W_new.T, preserve @ W_old.T) < 1e-3  # W_new c_j ≈ W_old c_j
        assert (W_new - W_old).norm() > 1e-3 * W_old.norm()  # and it did change


def test_uce_erase_touches_exactly_the_cross_attention_kv(sd1, sdxl):
    for pipe in (sd1, sdxl):
        expected = {f"{n}.weight" for n, _ in pipe.unet.named_modules()
                    if "attn2" in n and n.endswith(("to_k", "to_v"))}
        delta = uce_erase(pipe, ["a cat"])
        assert set(delta) == {"unet"} and set(delta["unet"]) == expected and len(expected) >= 8


def test_uce_erase_flux_edits_two_projections_and_keeps_bias(flux):
    delta = uce_erase(flux, EDITS, GUIDE, PRESERVE, **STRONG)
    assert delta == {"transformer": {k: delta["transformer"][k] for k in
                     ["context_embedder.weight", "time_text_embed.text_embedder.linear_1.weight"]}}
    emb = concept_embeddings(flux, EDITS + [GUIDE])
    modules = {"context_embedder": "tokens", "time_text_embed.text_embedder.linear_1": "pooled"}
    old = {name: flux.transformer.get_submodule(name)(emb[space]) for name, space in modules.items()}
    before = _state(flux, ["transformer"])
    try:
        apply_delta(flux, delta)
        for name, space in modules.items():
            new = flux.transformer.get_submodule(name)(emb[space])
            # bias-free targets: the edited concept's output (bias included) equals the guide's
            assert _rel(new[:2], old[name][2:3].expand(2, -1)) < 1e-3
    finally:
        apply_delta(flux, before)


def test_uce_identity_w_new_is_w_old_times_t(sd1):
    # default scales: no approximation involved, W_new = W_old·T holds exactly (the closed form's identity)
    delta = uce_erase(sd1, EDITS, "a bird", PRESERVE)
    emb = concept_embeddings(sd1, EDITS + ["a bird"] + PRESERVE)[TOKENS]
    T = uce_transform(emb[:2], emb[2:3].expand(2, -1), emb[3:])
    for m in uce_modules(sd1):
        torch.testing.assert_close(delta["unet"][m.weight_key], _weight(sd1, m) @ T, atol=1e-5, rtol=1e-4)


def test_uce_window_mode_maps_aligned_token_windows(sd1):
    edit, guide = "a red cat", "dog"
    delta = uce_erase(sd1, [edit], [guide], token_mode="window", lamb=0.5, erase_scale=1e4)
    seq = concept_embeddings(sd1, [edit, guide], mode="window")[TOKENS]
    i_o, i_n = _last_token_index(sd1.tokenizer, [edit, guide], 16).tolist()
    keys, sources = _window_pair(seq[0], i_o, seq[1], i_n)
    assert len(keys) == 16 - max(i_o, i_n)
    m = uce_modules(sd1)[0]
    W_old, W_new = _weight(sd1, m), delta["unet"][m.weight_key]
    assert _rel(keys @ W_new.T, sources @ W_old.T) < 1e-2  # 13 token pairs in 64-d: all mapped
    assert set(delta["unet"]) == {mm.weight_key for mm in uce_modules(sd1)}


def test_uce_erase_broadcasts_one_guide_and_expands_prompts(sd1):
    a = uce_erase(sd1, "a cat; dog", guide_concepts="a bird")  # ';'-separated strings like the CLI
    b = uce_erase(sd1, ["a cat", "dog"], guide_concepts=["a bird", "a bird"])
    key = uce_modules(sd1)[0].weight_key
    torch.testing.assert_close(a["unet"][key], b["unet"][key])
    c = uce_erase(sd1, ["cat"], expand_prompts=True)
    assert not torch.allclose(c["unet"][key], uce_erase(sd1, ["cat"])["unet"][key])


@pytest.mark.parametrize("kwargs, message", [
    (dict(edit_concepts=[]), "edit_concepts: the list is empty"),
    (dict(edit_concepts=["a cat", " "]), "empty strings"),
    (dict(edit_concepts=["a", "b", "c"], guide_concepts=["x", "y"]), "3 edit concepts but 2 guide"),
    (dict(edit_concepts=["a " * 20]), "tokens long"),
    (dict(edit_concepts=["a cat"], concept_type="person"), "concept_type"),
    (dict(edit_concepts=["a cat"], token_mode="all"), "token_mode"),
])
def test_uce_erase_bad_inputs(sd1, kwargs, message):
    with pytest.raises(ValueError, match=message):
        uce_erase(sd1, **kwargs)


def test_uce_window_mode_refuses_flux(flux):
    with pytest.raises(ValueError, match="window"):
        uce_erase(flux, ["a cat"], token_mode="window")


def test_apply_delta_is_strict(sd1):
    key = uce_modules(sd1)[0].weight_key
    w = sd1.unet.state_dict()[key]
    with pytest.raises(ValueError, match="not a parameter"):
        apply_delta(sd1, {"unet": {"no.such.weight": w}})
    with pytest.raises(ValueError, match="shape"):
        apply_delta(sd1, {"unet": {key: w[:, :3]}})
    with pytest.raises(ValueError, match="no component"):
        apply_delta(sd1, {"transformer": {key: w}})


# ------------------------------------------------------------------------------------- UCE debias
KAPPA_STEEP = 30.0  # male share moves 30x the cosine-score change: constant gain 1 swings 0 <-> 1


class FakeWorld:
    """A deterministic generator/classifier pair whose 'male' share follows the edited weights.

    Image i of a concept is the number p − q_i (q_i = (i + ½)/n), classified male when positive, so the
    male share is p = start + κ·(s − s0), where s = cos(W c, W0 a_male) − cos(W c, W0 a_female) is
    read from the pipeline's current first to_v map.
    """

    def __init__(self, pipe, start: dict[str, float], kappa: float = 1.0, n: int = 100):
        self.name = next(m.name for m in uce_modules(pipe) if m.name.endswith("to_v"))
        self.W0 = pipe.unet.get_submodule(self.name).weight.detach().clone()
        self.y_male, self.y_female = concept_embeddings(pipe, ["male", "female"])[TOKENS] @ self.W0.T
        self.start, self.kappa, self.n = start, kappa, n
        self.s0 = {c: self.score(pipe, c, self.W0) for c in start}

    def score(self, pipe, concept, W):
        y = concept_embeddings(pipe, [concept])[TOKENS][0] @ W.T
        return (F.cosine_similarity(y, self.y_male, 0) - F.cosine_similarity(y, self.y_female, 0)).item()

    def generate(self, pipe, concept):
        W = pipe.unet.get_submodule(self.name).weight.detach()
        p = self.start[concept] + self.kappa * (self.score(pipe, concept, W) - self.s0[concept])
        return [p - (i + 0.5) / self.n for i in range(self.n)]

    @staticmethod
    def classify(images):
        return ["male" if x > 0 else "female" for x in images]


def test_uce_debias_converges_with_a_fake_world(sd1):
    world = FakeWorld(sd1, {"doctor": 0.8, "nurse": 0.25})
    before = _state(sd1, ["unet"])
    delta, log = uce_debias(sd1, ["doctor", "nurse"], classify=world.classify, generate=world.generate,
                            progress=False)
    _assert_unchanged(sd1, before)  # weights were loaded only while generating
    assert log[0]["ratios"] == {"doctor": {"male": 0.8, "female": 0.2}, "nurse": {"male": 0.25, "female": 0.75}}
    assert 1 < len(log) < 30 and all(log[-1]["converged"].values())
    for concept in ("doctor", "nurse"):
        assert abs(log[-1]["ratios"][concept]["male"] - 0.5) < 0.05
    assert log[1]["alpha"]["doctor"]["male"] == pytest.approx(0.5 - 0.8)  # A(1) = d(0)
    assert set(delta["unet"]) == {m.weight_key for m in uce_modules(sd1)}


def test_uce_debias_gain_and_only_measured_weights(sd1):
    world = FakeWorld(sd1, {"doctor": 0.8})
    _, log = uce_debias(sd1, ["doctor"], classify=world.classify, generate=world.generate, gain=0.5,
                        max_iterations=2, progress=False)
    assert log[1]["alpha"]["doctor"]["male"] == pytest.approx(0.5 * (0.5 - 0.8))
    # one iteration: the only measured weights are the original ones, so nothing is returned
    delta, log = uce_debias(sd1, ["doctor"], classify=world.classify, generate=world.generate,
                            max_iterations=1, progress=False)
    assert delta == {} and log[0]["selected"]


def test_uce_debias_gain_halving_settles_a_steep_response(sd1):
    # A response this steep makes every constant-gain step overshoot: the share swings around 0.5.
    world = FakeWorld(sd1, {"doctor": 0.8}, kappa=KAPPA_STEEP)
    run = dict(classify=world.classify, generate=world.generate, max_iterations=16, progress=False)
    _, plain = uce_debias(sd1, ["doctor"], **run)
    _, halving = uce_debias(sd1, ["doctor"], gain_halving=True, **run)
    assert not any(entry["converged"]["doctor"] for entry in plain)
    assert halving[-1]["converged"]["doctor"] and len(halving) < 16
    # the gain of the step after iteration t halves exactly when the gap changed sign at t
    diffs = [e["diffs"]["doctor"]["male"] for e in halving]
    gains = [e["gain"]["doctor"] for e in halving]  # the gain of the step that led to each entry
    assert gains[:2] == [1.0, 1.0] and gains[-1] < 1.0
    for t in range(1, len(halving) - 1):
        flipped = diffs[t] * diffs[t - 1] < 0
        assert gains[t + 1] == (gains[t] / 2 if flipped else gains[t])


def _scripted_debias(sd1, shares, **kw):
    """uce_debias on one concept whose measured male shares are `shares`, in call order; also
    returns the to_v weight each measurement saw."""
    shares, seen = iter(shares), []
    name = next(m.name for m in uce_modules(sd1) if m.name.endswith("to_v"))

    def generate(pipe, concept):
        seen.append(pipe.unet.get_submodule(name).weight.detach().clone())
        k = round(20 * next(shares))
        return ["male"] * k + ["female"] * (20 - k)

    delta, log = uce_debias(sd1, ["doctor"], classify=lambda images: images, generate=generate, max_iterations=3,
                            progress=False, **kw)
    before = _state(sd1, ["unet"])
    try:
        apply_delta(sd1, delta)
        kept = sd1.unet.get_submodule(name).weight.detach().clone()
    finally:
        apply_delta(sd1, before)
    return log, seen, kept


def test_uce_debias_reselect_keeps_the_best_pooled_iteration(sd1):
    # iterations 0-2 measure 80, 60, 65 % male: iteration 1 looks best. Measured again (best first),
    # iteration 1 gives 90 % and iteration 2 50 %: pooled, 75 % against 57.5 %, so iteration 2 is kept.
    log, seen, kept = _scripted_debias(sd1, [0.8, 0.6, 0.65, 0.9, 0.5], reselect_top=2, reselect_rounds=1)
    assert [e.get("selected", False) for e in log] == [False, False, True]
    assert "reselect_gap" not in log[0]
    assert log[1]["reselect_gap"] == pytest.approx(0.25) and log[2]["reselect_gap"] == pytest.approx(0.075)
    assert log[2]["reselect_ratios"]["doctor"]["male"] == pytest.approx(0.575)
    assert len(seen) == 5 and torch.equal(seen[3], seen[1]) and torch.equal(seen[4], seen[2])
    torch.testing.assert_close(kept, seen[2])  # the weights returned are those measured at iteration 2
    # off (the default): the best single measurement, iteration 1, and no extra measurement
    log, seen, kept = _scripted_debias(sd1, [0.8, 0.6, 0.65])
    assert [e.get("selected", False) for e in log] == [False, True, False] and len(seen) == 3
    torch.testing.assert_close(kept, seen[1])


def test_uce_debias_already_fair_returns_empty_delta(sd1):
    world = FakeWorld(sd1, {"doctor": 0.5})
    delta, log = uce_debias(sd1, concepts=["doctor"], classify=world.classify, generate=world.generate,
                            progress=False)
    assert delta == {} and len(log) == 1 and log[0]["converged"] == {"doctor": True}


def test_uce_debias_attribute_texts_give_the_directions(sd1):
    # The first measurement is 80 % male, the second fair: the weights kept are the first solve,
    # with A = d(0) = (0.5 - 0.8, 0.5 - 0.2) on the directions of the attribute *texts*.
    answers = iter([["male"] * 8 + ["female"] * 2, ["male"] * 5 + ["female"] * 5])
    delta, log = uce_debias(sd1, ["doctor"], attribute_texts=["a man", "a woman"], lamb=1e-4,
                            classify=lambda images: images, generate=lambda pipe, c: next(answers),
                            max_iterations=2, progress=False)
    assert log[1]["selected"] and log[1]["converged"] == {"doctor": True}
    c, a_man, a_woman = concept_embeddings(sd1, ["doctor", "a man", "a woman"])[TOKENS]
    m = next(m for m in uce_modules(sd1) if m.name.endswith("to_v"))
    W0 = sd1.unet.get_submodule(m.name).weight.detach()
    target = W0 @ (c - 0.3 * a_man + 0.3 * a_woman)
    got = delta["unet"][m.weight_key] @ c
    assert torch.linalg.norm(got - target) / torch.linalg.norm(target) < 1e-3
    with pytest.raises(ValueError, match="one text per attribute"):
        uce_debias(sd1, ["doctor"], attribute_texts=["a man"], classify=lambda i: i, generate=lambda p, c: [])


def test_uce_debias_window_mode_edits_every_aligned_token(sd1):
    # Paper-era windows: each token from the concept's last sub-word on (EOS, pads) maps to the
    # same token plus A_j times the aligned token of attribute text j (A = d(0) = (-0.3, 0.3)).
    answers = iter([["male"] * 8 + ["female"] * 2, ["male"] * 5 + ["female"] * 5])
    texts = ["doctor", "a man", "a woman"]
    delta, _ = uce_debias(sd1, ["doctor"], attribute_texts=texts[1:], lamb=1e-4, token_mode="window",
                          classify=lambda images: images, generate=lambda pipe, c: next(answers),
                          max_iterations=2, progress=False)
    seq = concept_embeddings(sd1, texts, "window")[TOKENS]
    last = [len(sd1.tokenizer(t).input_ids) - 2 for t in texts]  # last sub-word (BOS at 0)
    n = seq.shape[1] - max(last)
    c, a_man, a_woman = (seq[i, last[i]:last[i] + n] for i in range(3))
    m = next(m for m in uce_modules(sd1) if m.name.endswith("to_k"))
    W0 = sd1.unet.get_submodule(m.name).weight.detach()
    target = (c - 0.3 * a_man + 0.3 * a_woman) @ W0.T
    got = c @ delta["unet"][m.weight_key].T
    assert n > 3 and torch.linalg.norm(got - target) / torch.linalg.norm(target) < 1e-3
    with pytest.raises(ValueError, match="token_mode"):
        uce_debias(sd1, ["doctor"], token_mode="words", classify=lambda i: i, generate=lambda p, c: [])


@pytest.mark.parametrize("token_mode", ["last", "window"])
def test_uce_debias_edit_templates_edit_every_templated_prompt(sd1, token_mode):
    # Each template adds the templated concept as a key, its source shifted by the same A along the
    # equally templated attribute texts: "a photo of doctor" -> W0(c + A·(a photo of a man, ...)).
    answers = iter([["male"] * 8 + ["female"] * 2, ["male"] * 5 + ["female"] * 5])
    templates = ["{}", "a photo of {}"]
    delta, _ = uce_debias(sd1, ["doctor"], attribute_texts=["a man", "a woman"], lamb=1e-4, token_mode=token_mode,
                          edit_templates=templates, classify=lambda images: images,
                          generate=lambda pipe, c: next(answers), max_iterations=2, progress=False)
    m = next(m for m in uce_modules(sd1) if m.name.endswith("to_v"))
    W0 = sd1.unet.get_submodule(m.name).weight.detach()
    for t in templates:
        texts = [t.format(x) for x in ("doctor", "a man", "a woman")]
        if token_mode == "last":
            c, a_man, a_woman = concept_embeddings(sd1, texts)[TOKENS]
        else:
            seq = concept_embeddings(sd1, texts, "window")[TOKENS]
            last = [len(sd1.tokenizer(x).input_ids) - 2 for x in texts]
            n = seq.shape[1] - max(last)
            c, a_man, a_woman = (seq[i, last[i]:last[i] + n] for i in range(3))
        target = (c - 0.3 * a_man + 0.3 * a_woman) @ W0.T
        got = c @ delta["unet"][m.weight_key].T
        assert torch.linalg.norm(got - target) / torch.linalg.norm(target) < 2e-3, t
        # and the template matters: the bare concept's edit alone would not send this key there
        if t != "{}":
            assert torch.linalg.norm(c @ W0.T - target) / torch.linalg.norm(target) > 1e-2
    with pytest.raises(ValueError, match="exactly one"):
        uce_debias(sd1, ["doctor"], edit_templates=["a photo of"], classify=lambda i: i, generate=lambda p, c: [])


def test_uce_debias_preserved_keys_stay_put_with_templates(sd1):
    # last mode, two templates: the preserved key's output is unchanged while the edited ones move
    answers = iter([["male"] * 8 + ["female"] * 2, ["male"] * 5 + ["female"] * 5])
    delta, _ = uce_debias(sd1, ["doctor"], attribute_texts=["a man", "a woman"], lamb=1e-4,
                          edit_templates=["{}", "a photo of {}"], preserve_concepts=["a cat"],
                          classify=lambda images: images, generate=lambda pipe, c: next(answers),
                          max_iterations=2, progress=False)
    m = next(m for m in uce_modules(sd1) if m.name.endswith("to_v"))
    W0 = sd1.unet.get_submodule(m.name).weight.detach()
    W = delta["unet"][m.weight_key]
    cat, doctor = concept_embeddings(sd1, ["a cat", "a photo of doctor"])[TOKENS]
    assert torch.linalg.norm(W @ cat - W0 @ cat) / torch.linalg.norm(W0 @ cat) < 2e-3
    assert torch.linalg.norm(W @ doctor - W0 @ doctor) / torch.linalg.norm(W0 @ doctor) > 1e-2


def test_uce_debias_bad_inputs(sd1):
    fake = dict(classify=lambda images: ["male"], generate=lambda pipe, c: [0])
    with pytest.raises(ValueError, match="empty"):
        uce_debias(sd1, [], **fake)
    with pytest.raises(ValueError, match="desired ratios"):
        uce_debias(sd1, ["doctor"], attributes=("male", "female"), desired_ratios=(1.0,), **fake)
    with pytest.raises(ValueError, match="reselect_top must be a non-negative integer"):
        uce_debias(sd1, ["doctor"], reselect_top=-1, **fake)


# ----------------------------------------------------------------------------------------- ReFACT
def _corpus(n=300, seed=0):
    words = ("the a cat dog red blue house tree car man woman runs jumps big small green old new river city "
             "sky at on in under over photo painting of with and").split()
    rng = random.Random(seed)
    return [" ".join(rng.choice(words) for _ in range(rng.randint(3, 10))) for _ in range(n)]


@pytest.fixture(scope="module")
def refact_sd1(sd1):
    te, tok, layer = sd1.text_encoder, sd1.tokenizer, 1
    C = second_moment(te, tok, layer, _corpus(), progress=False)
    delta, info = refact_edit(te, tok, "the president", "joe biden", "donald trump", layer, C, position="eos")
    return delta, info, layer


def test_second_moment_is_uncentred_mean_outer_product(sd1):
    te, tok = sd1.text_encoder, sd1.tokenizer
    texts = ["a cat", "a big red house on the river"]
    C = second_moment(te, tok, 2, texts, progress=False)
    keys = torch.cat([fc2_io(te, tok, 2, [t], [i])[0] for t in texts
                      for i in range(len(tok(t)["input_ids"]))])  # every token, BOS and EOS included
    torch.testing.assert_close(C, keys.T @ keys / len(keys), atol=1e-5, rtol=1e-4)
    assert C.dtype == torch.float32


def test_refact_changes_only_fc2_by_rank_one(sd1, refact_sd1):
    delta, info, layer = refact_sd1
    key = fc2_key(sd1.text_encoder, layer)
    assert delta.keys() == {"text_encoder"} and list(delta["text_encoder"]) == [key]
    diff = delta["text_encoder"][key] - sd1.text_encoder.state_dict()[key]
    s = torch.linalg.svdvals(diff)
    assert s[1] < 1e-5 * s[0]  # rank one
    assert info["steps"] >= 1 and 0.0 <= info["final_prob"] <= 1.0


def test_refact_hits_v_star_at_the_bare_prompt(sd1, refact_sd1):
    delta, info, layer = refact_sd1
    te, tok = sd1.text_encoder, sd1.tokenizer
    idx = lookup_index(tok, "{}", "the president", "eos")
    before = _state(sd1, ["text_encoder"])
    try:
        apply_delta(sd1, delta)
        k_star, out = fc2_io(te, tok, layer, ["the president"], [idx])
    finally:
        apply_delta(sd1, before)
    torch.testing.assert_close(k_star[0], info["vectors"]["k_star"])  # fc2's input is upstream of the edit
    torch.testing.assert_close(out[0], info["vectors"]["v_star"], atol=1e-4, rtol=1e-4)  # W'k* + b = v*


def _assert_moves_toward_new_text(sd1, delta, feats):
    """The edit (the president: joe biden -> donald trump) brings `feats` of the subject closer to the
    new text, absolutely and relative to the old one."""
    g_new, g_old = feats(["donald trump", "joe biden"])
    f_before = feats(["the president"])[0]
    before = _state(sd1, ["text_encoder"])
    try:
        apply_delta(sd1, delta)
        f_after = feats(["the president"])[0]
    finally:
        apply_delta(sd1, before)
    d = lambda f, g: (f - g).norm().item()  # noqa: E731
    assert d(f_after, g_new) < d(f_before, g_new)
    assert d(f_after, g_new) / d(f_after, g_old) < d(f_before, g_new) / d(f_before, g_old)


def test_refact_moves_the_subject_toward_the_new_text(sd1, refact_sd1):
    delta, _, _ = refact_sd1
    te, tok = sd1.text_encoder, sd1.tokenizer

    def feats(texts):
        with torch.no_grad():
            return text_features(te, **tok(texts, padding=True, return_tensors="pt"))

    _assert_moves_toward_new_text(sd1, delta, feats)


def test_refact_lookup_indices(sd1):
    tok = sd1.tokenizer
    # [BOS, realistic, painting, of, the, president, EOS]: the subject's last sub-word, or the end token
    assert lookup_index(tok, "realistic painting of {}", "the president", "subject_last") == 5
    assert lookup_index(tok, "realistic painting of {}", "the president", "eos") == 6
    assert lookup_index(tok, "{}, a portrait", "the president", "subject_last") == 2


# "tail": the end token and every pad, prompts tokenised as the pipeline does (our departure, refact.py)
@pytest.fixture(scope="module")
def refact_tail(sd1):
    te, tok, layer = sd1.text_encoder, sd1.tokenizer, 1
    C = second_moment(te, tok, layer, _corpus(), progress=False)
    delta, info = refact_edit(te, tok, "the president", "joe biden", "donald trump", layer, C, position="tail",
                              templates=["a photo of {}", "{} on a table"])
    return delta, info, layer


def _tail_states(pipe, texts):
    """Pipeline-style input ids (full length, no mask) and each text's tail mask."""
    tok = pipe.tokenizer
    ids = tok(texts, padding="max_length", max_length=tok.model_max_length, return_tensors="pt").input_ids
    mask = torch.zeros(len(texts), ids.shape[1], 1)
    for row, text in enumerate(texts):
        mask[row, lookup_positions(tok, "{}", text, "tail")] = 1.0
    return ids, mask


def test_refact_tail_lookup_is_the_end_token_and_every_pad(sd1):
    tok = sd1.tokenizer
    eos = lookup_index(tok, "realistic painting of {}", "the president", "eos")
    tail = lookup_positions(tok, "realistic painting of {}", "the president", "tail")
    assert tail == list(range(eos, tok.model_max_length)) and len(tail) == tok.model_max_length - 6
    assert lookup_positions(tok, "{}", "the president", "subject_last") == [2]


def test_refact_tail_changes_only_fc2_by_rank_one_and_hits_v_star(sd1, refact_tail):
    delta, info, layer = refact_tail
    te, tok = sd1.text_encoder, sd1.tokenizer
    key = fc2_key(te, layer)
    assert list(delta) == ["text_encoder"] and list(delta["text_encoder"]) == [key]
    s = torch.linalg.svdvals(delta["text_encoder"][key] - te.state_dict()[key])
    assert s[1] < 1e-5 * s[0]  # rank one
    assert info["position"] == "tail" and info["lookup_tokens"] == tok.model_max_length - 3  # BOS the president
    before = _state(sd1, ["text_encoder"])
    tail = lookup_positions(tok, "{}", "the president", "tail")
    try:
        apply_delta(sd1, delta)
        k_star, out = fc2_io(te, tok, layer, ["the president"], [tail], pipeline_style=True)
    finally:
        apply_delta(sd1, before)
    # the tail's mean key is upstream of the edit, and the edited fc2 sends it to v* (fc2 is linear)
    torch.testing.assert_close(k_star[0], info["vectors"]["k_star"])
    torch.testing.assert_close(out[0], info["vectors"]["v_star"], atol=1e-4, rtol=1e-4)


def test_refact_tail_moves_the_padding_toward_the_new_text(sd1, refact_tail):
    delta, _, _ = refact_tail
    te = sd1.text_encoder

    def feats(texts):  # what a denoiser reading the padding sees: the tail's mean final state
        ids, mask = _tail_states(sd1, texts)
        with torch.no_grad():
            return text_features(te, ids, tail=mask)

    _assert_moves_toward_new_text(sd1, delta, feats)


def test_refact_pipeline_edits_both_sdxl_encoders(sdxl):
    delta, infos = refact_edit_pipeline(sdxl, "the president", "joe biden", "donald trump", layer=1,
                                        texts=_corpus(), position="eos", v_max_grad_steps=10)
    layer_2 = same_relative_depth(1, 4, 4)
    assert delta.keys() == {"text_encoder", "text_encoder_2"}
    assert list(delta["text_encoder"]) == ["encoder.layers.1.mlp.fc2.weight"]
    assert list(delta["text_encoder_2"]) == [f"text_model.encoder.layers.{layer_2}.mlp.fc2.weight"]
    assert infos["text_encoder_2"]["layer"] == layer_2
    assert same_relative_depth(7, 12, 32) == 20  # SD1.4's L = 7 on bigG


@pytest.mark.parametrize("layer", [4, -1])
def test_refact_layer_out_of_range(sd1, layer):
    with pytest.raises(ValueError, match=r"layer .* out of range: the text encoder has 4 layers"):
        refact_edit(sd1.text_encoder, sd1.tokenizer, "a cat", "a dog", "a bird", layer, torch.eye(256))
    with pytest.raises(ValueError, match="out of range"):
        second_moment(sd1.text_encoder, sd1.tokenizer, layer, ["a cat"], progress=False)


def test_refact_bad_inputs(sd1):
    te, tok = sd1.text_encoder, sd1.tokenizer
    with pytest.raises(ValueError, match="non-empty prompt"):
        refact_edit(te, tok, "", "a dog", "a bird", 1, torch.eye(256))
    with pytest.raises(ValueError, match="position"):
        refact_edit(te, tok, "a cat", "a dog", "a bird", 1, torch.eye(256), position="first")
    with pytest.raises(ValueError, match="texts"):
        refact_edit_pipeline(sd1, "a cat", "a dog", "a bird", layer=1)
