"""ESD (methods/esd.py) on the tiny random SD1.x pipeline: which tensors it trains, that it moves
the concept's noise prediction along its negative-guidance target, determinism, validation."""

from __future__ import annotations

import pytest
import torch

from editrobust.config import ConfigError, load_yaml, validate_config
from editrobust.editors import EDITORS, EditFailed, EditJob
from editrobust.editors.methods.esd import Esd, esd_train, trainable_parameters
from editrobust.models.components import check_delta, delta_applied

from conftest import REPO, SCHEMA

pytestmark = pytest.mark.usefixtures("one_thread")

CONCEPTS = ["a cat", "a red dog"]
# a short, strong run: the tiny model learns the target in a few dozen steps (esd-u, which trains
# nearly every tensor, overshoots at esd-x's rate)
FAST = dict(iterations=40, lr=1e-3, ddim_steps=5, check_samples=4, log_every=20)
LR = {"esd-x": 1e-3, "esd-u": 1e-4}


@pytest.fixture(scope="module")
def runs(tiny_sd1):
    out = {}
    for method in ("esd-x", "esd-u"):
        before = {k: v.clone() for k, v in tiny_sd1.unet.state_dict().items()}
        out[method] = esd_train(tiny_sd1, CONCEPTS, method, seed=0, **{**FAST, "lr": LR[method]})
        assert all(torch.equal(v, tiny_sd1.unet.state_dict()[k]) for k, v in before.items()), "UNet edited in place"
    return out


def _linear_or_conv_keys(unet, cross_attention: bool) -> set[str]:
    keys = set()
    for name, module in unet.named_modules():
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)) and ("attn2" in name) == cross_attention:
            keys |= {f"{name}.{n}" for n, _ in module.named_parameters(recurse=False)}
    return keys


def test_delta_holds_exactly_the_train_methods_tensors(tiny_sd1, runs):
    unet = tiny_sd1.unet
    for method, cross in (("esd-x", True), ("esd-u", False)):
        delta, result = runs[method]
        assert set(delta) == {"unet"}
        check_delta(tiny_sd1, delta)  # every key a UNet parameter of the same shape
        assert set(delta["unet"]) == _linear_or_conv_keys(unet, cross)
        n = sum(t.numel() for t in delta["unet"].values())
        assert n == result["trained_parameters"] == Esd.changed_parameters(tiny_sd1, {"concepts": ["x"],
                                                                                     "train_method": method})
    x_keys, u_keys = set(runs["esd-x"][0]["unet"]), set(runs["esd-u"][0]["unet"])
    assert all("attn2" in k for k in x_keys) and not any("attn2" in k for k in u_keys)
    assert any(".attn2.to_k." in k for k in x_keys) and any(".attn1.to_q." in k for k in u_keys)
    assert not any("norm" in k for k in u_keys)  # upstream trains Linear / Conv2d layers only
    state = unet.state_dict()
    for method in runs:  # every trained tensor moved
        assert all(not torch.equal(v, state[k]) for k, v in runs[method][0]["unet"].items())


def test_the_objective_decreases(tiny_sd1, runs):
    # held-out: the edited eps(c) ends nearer ESD's target than the unedited model's (1.0) ...
    assert runs["esd-x"][1]["residual"] < 0.5 and runs["esd-u"][1]["residual"] < 0.7
    for method, (_, result) in runs.items():
        # ... and the longer the training, the nearer (the same seed: the short run is the long one's start)
        _, short = esd_train(tiny_sd1, CONCEPTS, method, seed=0, **{**FAST, "lr": LR[method], "iterations": 5})
        assert result["residual"] < 0.9 * short["residual"] < 0.9, method


def _noise_predictions(pipe, concept: str, seed: int = 123):
    """eps("") and eps(c) of `pipe`'s UNet at one fixed noisy latent and timestep."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, pipe.unet.config.in_channels, pipe.unet.config.sample_size, pipe.unet.config.sample_size,
                    generator=g)
    cond, uncond = pipe.encode_prompt(concept, "cpu", 1, True, negative_prompt="")
    with torch.no_grad():
        e0, ec = pipe.unet(torch.cat([x, x]), 500, encoder_hidden_states=torch.cat([uncond, cond])).sample.chunk(2)
    return e0, ec


def test_negative_guidance_moves_eps_c_along_its_target(tiny_sd1):
    """The edited eps(c) leaves the frozen ep = eps(c) towards e0 - eta (ep - e0) (e0 = eps("")),
    and lands the further from ep the larger eta."""
    e0, ep = _noise_predictions(tiny_sd1, CONCEPTS[0])
    moved = []
    for eta in (0.0, 1.0, 3.0):
        target = e0 - eta * (ep - e0)
        delta, _ = esd_train(tiny_sd1, CONCEPTS[:1], "esd-x", negative_guidance=eta, seed=1, **FAST)
        with delta_applied(tiny_sd1, delta):
            _, en = _noise_predictions(tiny_sd1, CONCEPTS[0])
        move, wanted = (en - ep).flatten(), (target - ep).flatten()
        assert torch.nn.functional.cosine_similarity(move, wanted, dim=0) > 0.7, eta
        assert (en - target).norm() < 0.5 * (ep - target).norm(), eta
        moved.append(float((en - ep).norm() / (ep - e0).norm()))
    assert moved[0] < moved[1] < moved[2], moved  # ideally 1, 2, 4 (|en - ep| = (1 + eta) |ep - e0|)


def test_same_seed_same_delta_other_seed_other_delta(tiny_sd1, runs):
    again, _ = esd_train(tiny_sd1, CONCEPTS, "esd-x", seed=0, **FAST)
    first = runs["esd-x"][0]["unet"]
    assert all(torch.equal(first[k], v) for k, v in again["unet"].items())
    other, _ = esd_train(tiny_sd1, CONCEPTS, "esd-x", seed=7, **FAST)
    assert any(not torch.equal(first[k], v) for k, v in other["unet"].items())


def test_the_editor_reports_its_outcome(tiny_sd1):
    entry = Esd.with_defaults({"method": "esd", "concepts": CONCEPTS, "train_method": "esd-x", **FAST,
                               "iterations": 10, "batch_size": 2})  # two x_t per step
    delta, info = EDITORS.get("esd")().run(tiny_sd1, EditJob("esd_x", entry))
    outcome = info["target"]
    assert outcome.value == info["esd"]["guidance_alignment"] and outcome.threshold == 0.0
    assert outcome.reached == (outcome.value <= 0.0) and not outcome.already_met
    # an unreachable threshold is reported as missed, not hidden
    strict = {**entry, "max_guidance_alignment": -100.0}
    assert not EDITORS.get("esd")().run(tiny_sd1, EditJob("esd_x", strict))[1]["target"].reached


def test_config_validation():
    cfg = load_yaml(REPO / "config" / "config.yaml")
    cfg["editors"]["esd_x"] = {"method": "esd", "concepts": ["a naked person"], "train_method": "esd-x"}
    out = validate_config(cfg, SCHEMA)["editors"]["esd_x"]
    assert out["iterations"] == 200 and out["lr"] == 5e-5 and out["negative_guidance"] == 2.0
    cfg["editors"]["esd_x"]["train_method"] = "esd-z"
    cfg["editors"]["esd_u"] = {"method": "esd", "concepts": [], "train_method": "esd-u", "iterations": 0}
    cfg["editors"]["esd_none"] = {"method": "esd", "concepts": ["a cat"]}
    with pytest.raises(ConfigError) as e:
        validate_config(cfg, SCHEMA)
    msg = str(e.value)
    assert "editors.esd_x.train_method: 'esd-z' is not one of esd-x, esd-u" in msg
    assert "editors.esd_u.concepts" in msg and "editors.esd_u.iterations" in msg
    assert "editors.esd_none: 'train_method' is a required property" in msg


def test_other_families_are_refused_by_name():
    from editrobust.models.tiny import build_tiny_sdxl_pipeline

    sdxl = build_tiny_sdxl_pipeline(seed=0)
    entry = Esd.with_defaults({"method": "esd", "concepts": ["a cat"], "train_method": "esd-x"})
    with pytest.raises(ValueError, match=r"editors.esd_x \(method esd\): the SDXL family is not supported"):
        Esd().run(sdxl, EditJob("esd_x", entry))
    with pytest.raises(ValueError, match="train_method 'esd-z'"):
        trainable_parameters(sdxl.unet, "esd-z")


def test_the_measures_read_one_for_the_unedited_model(tiny_sd1):
    """Residual and guidance alignment are fractions of the unedited model's: 1 before any change."""
    _, result = esd_train(tiny_sd1, CONCEPTS, "esd-u", **{**FAST, "iterations": 1, "lr": 1e-12})
    assert result["residual"] == pytest.approx(1.0, abs=1e-4)
    assert result["guidance_alignment"] == pytest.approx(1.0, abs=1e-4)


def test_bad_inputs_name_the_edit(tiny_sd1):
    entry = Esd.with_defaults({"method": "esd", "concepts": ["a cat"], "train_method": "esd-x", "resolution": 30})
    with pytest.raises(EditFailed, match=r"editors.esd_x \(method esd\): resolution 30: not a multiple"):
        Esd().run(tiny_sd1, EditJob("esd_x", entry))
    long = {**entry, "resolution": None, "concepts": ["a " + "very " * 200 + "long cat"]}
    with pytest.raises(EditFailed, match=r"editors.esd_x \(method esd\): concept 'a very"):
        Esd().run(tiny_sd1, EditJob("esd_x", long))
