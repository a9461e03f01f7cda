"""Fine-tuners on tiny random SD1.x / SDXL / FLUX pipelines: what trains, what is stored, resume, errors."""

import re

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from editrobust.data.finetune_datasets import load_finetune_dataset
from editrobust.finetune import finetune_model, make_finetuner
from editrobust.finetune.loop import train
from editrobust.finetune.latents import encode_dataset, load_latent_cache, save_latent_cache
from editrobust.finetune.objectives import tokenize
from editrobust.models.base import prepare_base_model
from editrobust.models.variants import load_pipeline, read_variant, write_delta_variant
from editrobust.io import write_json

pytestmark = pytest.mark.usefixtures("one_thread")
STYLE = {"name": "style", "entry": {"source": "toy", "set": "style", "size": 12, "seed": 1}}
SUBJECT = {"name": "subject", "entry": {"source": "toy", "set": "subject", "size": 3}}


def _cache(pipe, dataset, path):
    save_latent_cache(encode_dataset(pipe.vae, load_finetune_dataset(dataset["name"], dataset["entry"]), 32), path)
    return path


@pytest.fixture(scope="module")
def sd1(tiny_sd1, tmp_path_factory):
    root = tmp_path_factory.mktemp("ft_sd1")
    tiny_sd1.save_pretrained(root / "checkpoint", safe_serialization=True)
    prepare_base_model("tiny", {"kind": "path", "path": str(root / "checkpoint")}, root / "tiny" / "base")
    return dict(root=root, base=root / "tiny" / "base", style=_cache(tiny_sd1, STYLE, root / "style.safetensors"),
                subject=_cache(tiny_sd1, SUBJECT, root / "subject.safetensors"))


def _finetune(env, variant, entry, parent="base", cache="style", dataset=STYLE):
    out = env["root"] / "tiny" / variant
    finetune_model(env["root"] / "tiny" / parent, variant, entry, dataset, env[cache], out,
                 env["root"] / "state" / variant)
    return out


def _state(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def _same(a, b):
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def _changed_keys(before, module):
    after = module.state_dict()
    return {k for k in before if not torch.equal(before[k], after[k])}


def _te_out(pipe, prompts=("an anime drawing of a box", "a photo of a lime")):
    ids = tokenize(pipe.tokenizer, list(prompts))
    with torch.no_grad():
        return pipe.text_encoder(ids)[0]


# ------------------------------------------------------------------------------------- SD1.x
def test_full_trains_only_the_unet_and_stores_it_as_a_delta(sd1, tiny_sd1):
    out = _finetune(sd1, "ft-full", {"method": "full", "dataset": "style", "steps": 2, "batch": 2, "lr": 1e-3})
    assert sorted(p.name for p in out.iterdir()) == ["training_log.csv", "unet.safetensors", "variant.json"]
    info = read_variant(out)
    assert (info["parent"], info["kind"], info["method"], info["steps"]) == ("base", "finetune", "full", 2)
    assert info["params"]["train_text_encoder"] is False and info["dataset"]["name"] == "style"
    assert set(info["checksums"]) == {"training_log.csv", "unet.safetensors"} and "torch" in info["versions"]
    pipe = load_pipeline(out)
    assert _same(_state(pipe.text_encoder), tiny_sd1.text_encoder.state_dict())
    assert _same(_state(pipe.vae), tiny_sd1.vae.state_dict())
    assert _changed_keys(tiny_sd1.unet.state_dict(), pipe.unet)  # the UNet moved
    assert not (sd1["root"] / "state" / "ft-full").exists()  # the training state is gone after success


@pytest.mark.parametrize("method", ["lora", "dora"])
def test_adapter_methods_train_only_the_adapter_and_load_in_plain_diffusers(sd1, tiny_sd1, method, tmp_path):
    pipe = load_pipeline(sd1["base"])
    unet_before, te_before = _state(pipe.unet), _state(pipe.text_encoder)
    m = make_finetuner({"method": method, "dataset": "style", "steps": 3, "batch": 2, "rank": 2, "alpha": 4,
                     **({"lr": 1e-2} if method == "lora" else {})})
    out = sd1["root"] / "tiny" / f"ft-{method}"  # a sibling of the base, as the parent chain needs
    train(pipe, m, load_latent_cache(sd1["style"]), out, tmp_path / "state", {"parent": "base", "kind": "finetune"})
    assert _same(_state(pipe.unet), unet_before)  # frozen, though gradients flowed through it
    te_after = pipe.text_encoder.state_dict()
    base_keys = {k.replace(".base_layer", "") for k in te_after if "lora_" not in k}
    assert base_keys == set(te_before)
    assert all(torch.equal(te_after[k], te_before[k.replace(".base_layer", "")]) for k in te_after if "lora_" not in k)
    trained = [n for n, p in pipe.text_encoder.named_parameters() if p.requires_grad]
    assert trained and all("lora_" in n for n in trained)
    assert any("lora_magnitude_vector" in n for n in trained) == (method == "dora")
    pipe.text_encoder.eval()
    in_memory = _te_out(pipe)
    assert not torch.allclose(in_memory, _te_out(tiny_sd1))  # the adapter changed the encoder

    files = sorted(p.name for p in out.iterdir())
    assert files == ["pytorch_lora_weights.safetensors", "training_log.csv", "variant.json"]
    keys = load_file(out / "pytorch_lora_weights.safetensors")
    assert all(k.startswith("text_encoder.") for k in keys)
    assert any("lora_linear_layer.up" in k for k in keys)
    assert any(k.endswith("lora_magnitude_vector") for k in keys) == (method == "dora")
    log = np.genfromtxt(out / "training_log.csv", delimiter=",", names=True)
    if method == "dora":  # Prodigy's d·lr is logged, not the constant lr 1.0
        assert np.all(log["lr"] > 0) and np.all(log["lr"] < 1.0)

    plain = load_pipeline(sd1["base"])
    plain.load_lora_weights(str(out))
    if method == "lora":  # the standard format: plain diffusers reproduces the trained encoder
        torch.testing.assert_close(_te_out(plain), in_memory, rtol=0, atol=1e-5)
    fused = load_pipeline(out)  # composed: adapter loaded (DoRA magnitudes fixed up) and fused
    assert not any("lora" in k for k in fused.text_encoder.state_dict())
    # fused != unfused bit for bit (peft#1904), but within float rounding
    torch.testing.assert_close(_te_out(fused), in_memory, rtol=1e-4, atol=1e-4)
    assert _same(_state(fused.unet), tiny_sd1.unet.state_dict())


def test_edit_then_lora_composes_the_whole_chain(sd1, tiny_sd1):
    key = "encoder.layers.0.mlp.fc2.weight"
    edited = tiny_sd1.text_encoder.state_dict()[key] * 1.5
    unet_key = "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"
    unet_edit = tiny_sd1.unet.state_dict()[unet_key] * 0.5
    write_delta_variant(sd1["root"] / "tiny" / "ed-x", {"text_encoder": {key: edited}, "unet": {unet_key: unet_edit}},
                        {"parent": "base", "kind": "edit", "method": "test"})
    out = _finetune(sd1, "ed-x+ft-lora", {"method": "lora", "dataset": "style", "steps": 2, "batch": 2, "lr": 1e-2},
                    parent="ed-x")
    assert read_variant(out)["parent"] == "ed-x"
    pipe = load_pipeline(out)
    assert torch.equal(pipe.unet.state_dict()[unet_key], unet_edit)  # the edit's UNet tensor is there
    ed = load_pipeline(sd1["root"] / "tiny" / "ed-x")
    assert not torch.allclose(_te_out(pipe), _te_out(ed))  # and the adapter on top of it
    # the fused LoRA delta rides on the edited fc2 weight, which the adapter does not target
    assert torch.equal(pipe.text_encoder.state_dict()[key], edited)


def test_dreambooth_with_prior_preservation_trains_the_unet_on_the_identifier(sd1, tiny_sd1):
    entry = {"method": "dreambooth", "dataset": "subject", "steps": 2, "batch": 1, "lr": 1e-3,
             "with_prior_preservation": True, "num_class_images": 2, "class_sampling": {"steps": 2}}
    m = make_finetuner(entry)
    pipe = load_pipeline(sd1["base"])
    cache = load_latent_cache(sd1["subject"])
    m.prepare(pipe, cache, torch.Generator().manual_seed(0))
    assert (m.instance_text, m.class_text) == ("a photo of sks toy", "a photo of toy")
    latents, prompts = m.batch(cache, torch.Generator().manual_seed(0))
    assert prompts == ["a photo of sks toy", "a photo of toy"] and len(latents) == 2
    assert m.reduce(torch.tensor([1.0, 3.0])) == 4.0  # instance + λ·prior

    out = _finetune(sd1, "ft-db", entry, cache="subject", dataset=SUBJECT)
    assert read_variant(out)["components"] == ["unet"]
    ft = load_pipeline(out)
    assert _changed_keys(tiny_sd1.unet.state_dict(), ft.unet)
    assert _same(_state(ft.text_encoder), tiny_sd1.text_encoder.state_dict())


@pytest.mark.parametrize("entry", [
    {"method": "full", "lr": 1e-3, "use_ema": True, "ema_decay": 0.9, "lr_warmup_steps": 2},
    {"method": "dora", "rank": 2},
], ids=["full-ema-warmup", "dora-prodigy"])
def test_resume_after_a_kill_gives_the_same_weights_as_an_uninterrupted_run(sd1, entry, tmp_path):
    entry = dict(entry, dataset="style", steps=4, batch=2, checkpoint_every=2, save_every=2, random_flip=True)
    root = tmp_path / "tiny"
    base = sd1["base"]
    (root).mkdir()

    def finetune(variant, on_step=None):
        pipe = load_pipeline(base)
        info = {"parent": "base", "kind": "finetune"}
        return train(pipe, make_finetuner(entry), load_latent_cache(sd1["style"]), root / variant,
                     tmp_path / "state" / variant, info, fingerprint_value="fp", on_step=on_step)

    finetune("ft-a")

    def kill(step):
        if step == 3:
            raise KeyboardInterrupt("simulated kill")

    with pytest.raises(KeyboardInterrupt):
        finetune("ft-b", on_step=kill)
    assert not (root / "ft-b").exists() and (tmp_path / "state" / "ft-b" / "state.pt").exists()
    finetune("ft-b")  # resumes from step 2
    for name in ("ft-a", "ft-b"):
        assert not (tmp_path / "state" / name).exists()
    for variant in ("", "@2"):
        files = sorted(p.name for p in (root / f"ft-a{variant}").glob("*.safetensors"))
        assert files
        for f in files:
            a, b = load_file(root / f"ft-a{variant}" / f), load_file(root / f"ft-b{variant}" / f)
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f
    log_a = np.genfromtxt(root / "ft-a" / "training_log.csv", delimiter=",", names=True)
    log_b = np.genfromtxt(root / "ft-b" / "training_log.csv", delimiter=",", names=True)
    assert np.array_equal(log_a["loss"], log_b["loss"]) and list(log_b["step"]) == [1, 2, 3, 4]


def test_the_checkpoints_written_are_the_ones_asked_for_and_never_change_the_final_variant(sd1, tmp_path):
    """The workflow asks for checkpoints only where something reads them (workflow.Rules.checkpoints_read)."""
    entry = {"method": "full", "dataset": "style", "steps": 4, "batch": 2, "lr": 1e-3, "save_every": 1}

    def finetune(variant, checkpoints):
        return train(load_pipeline(sd1["base"]), make_finetuner(entry), load_latent_cache(sd1["style"]),
                     tmp_path / variant, tmp_path / "state" / variant, {"parent": "base"}, checkpoints=checkpoints)

    finetune("ft-none", [])
    finetune("ft-two", [2])
    finetune("ft-all", None)  # the library default: every multiple of save_every
    written = sorted(p.name for p in tmp_path.iterdir() if "@" in p.name)
    assert written == ["ft-all@1", "ft-all@2", "ft-all@3", "ft-two@2"]
    a, b = load_file(tmp_path / "ft-none" / "unet.safetensors"), load_file(tmp_path / "ft-two" / "unet.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match=r"checkpoints \[4\] are not steps between 0 and its 4 steps"):
        finetune("ft-bad", [2, 4])


def test_a_state_saved_for_other_parameters_is_not_resumed(sd1, tmp_path):
    entry = {"method": "lora", "dataset": "style", "steps": 3, "batch": 2, "checkpoint_every": 1, "lr": 1e-2}

    def finetune(fp, on_step=None):
        return train(load_pipeline(sd1["base"]), make_finetuner(entry), load_latent_cache(sd1["style"]),
                     tmp_path / "ft", tmp_path / "state", {}, fingerprint_value=fp, on_step=on_step)

    def kill(step):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        finetune("old", on_step=kill)
    finetune("new")
    assert list(np.genfromtxt(tmp_path / "ft" / "training_log.csv", delimiter=",", names=True)["step"]) == [1, 2, 3]


def test_a_nan_loss_raises_naming_step_method_and_variant_and_leaves_nothing(sd1, tmp_path):
    cache = load_latent_cache(sd1["style"])
    cache.mean[3] = float("nan")
    cache.mean_flip[3] = float("nan")
    entry = {"method": "full", "dataset": "style", "steps": 50, "batch": 4, "checkpoint_every": 1, "save_every": 1}
    with pytest.raises(FloatingPointError, match=r"fine-tune ft-nan \(full\): loss is nan at step (\d+) \((last "
                                                 r"finite loss [0-9.]+ at step \d+|no finite step before it)\); the "
                                                 r"state of the last finite step is kept in .*last_finite_state.pt") as err:
        train(load_pipeline(sd1["base"]), make_finetuner(entry), cache, tmp_path / "ft-nan", tmp_path / "state", {})
    assert not (tmp_path / "ft-nan").exists()
    assert not list(tmp_path.glob("ft-nan@*")) and not list(tmp_path.glob(".*tmp"))
    # the last finite state stays for diagnosis, finite, and is not what a re-run resumes from
    kept = torch.load(tmp_path / "state" / "last_finite_state.pt", map_location="cpu", weights_only=True)
    step = int(re.search(r"at step (\d+) ", str(err.value)).group(1))
    assert kept["step"] == step - 1 and all(torch.isfinite(t).all() for t in kept["params"].values())


def test_a_non_finite_gradient_or_weight_stops_the_fine_tune_before_anything_is_written(sd1, tmp_path, monkeypatch):
    from editrobust.finetune.full import FullFinetune

    entry = {"method": "full", "dataset": "style", "steps": 3, "batch": 2}
    setup = FullFinetune.setup

    def poisoned_gradient(self, pipe):  # a finite loss whose gradient is not
        named = setup(self, pipe)
        named[0][1].register_hook(lambda grad: grad * float("inf"))
        return named

    monkeypatch.setattr(FullFinetune, "setup", poisoned_gradient)
    with pytest.raises(FloatingPointError, match=r"fine-tune ft-g \(full\): the gradient norm is (inf|nan) at step 1 "
                                                 r"\(no finite step before it\)"):
        train(load_pipeline(sd1["base"]), make_finetuner(entry), load_latent_cache(sd1["style"]), tmp_path / "ft-g",
              tmp_path / "state_g", {})
    assert not (tmp_path / "ft-g").exists()

    monkeypatch.setattr(FullFinetune, "setup", setup)
    make_optimizer = FullFinetune.make_optimizer

    def overflowing(self, params):  # a step that overflows a weight
        optimizer = make_optimizer(self, params)

        def overflow(*_):
            with torch.no_grad():
                params[0].view(-1)[0] = float("inf")

        optimizer.register_step_post_hook(overflow)
        return optimizer

    monkeypatch.setattr(FullFinetune, "make_optimizer", overflowing)
    with pytest.raises(FloatingPointError, match=r"a trained weight is no longer finite at step 1.*no longer finite, "
                                                 r"so only an earlier checkpoint's state"):
        train(load_pipeline(sd1["base"]), make_finetuner(entry), load_latent_cache(sd1["style"]), tmp_path / "ft-w",
              tmp_path / "state_w", {})
    assert not (tmp_path / "ft-w").exists() and not (tmp_path / "state_w" / "last_finite_state.pt").exists()


def test_bad_method_or_parameter_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown method 'qlora'"):
        make_finetuner({"method": "qlora", "dataset": "x", "steps": 1})
    with pytest.raises(ValueError, match=r"'lora': unknown parameter\(s\) use_ema"):
        make_finetuner({"method": "lora", "dataset": "x", "steps": 1, "use_ema": True})


def test_latent_cache_is_keyed_by_dataset_index(sd1, tiny_sd1):
    ds = load_finetune_dataset("style", STYLE["entry"])
    cache = load_latent_cache(sd1["style"])
    assert cache.captions == ds.captions and len(cache) == 12
    from editrobust.finetune.latents import encode_posteriors, images_to_tensor
    mean, logvar = encode_posteriors(tiny_sd1.vae, images_to_tensor(np.stack(ds.images[5:6])))
    torch.testing.assert_close(cache.mean[5:6], mean, atol=2e-3, rtol=2e-3)  # stored as float16
    mean_f, _ = encode_posteriors(tiny_sd1.vae, images_to_tensor(np.stack(ds.images[5:6])[:, :, ::-1]))
    torch.testing.assert_close(cache.mean_flip[5:6], mean_f, atol=2e-3, rtol=2e-3)
    g = torch.Generator().manual_seed(0)
    z = cache.sample(torch.tensor([5, 5]), torch.tensor([False, True]), g)
    assert z.shape == (2, *cache.mean.shape[1:])


# ------------------------------------------------------------------------------ SDXL and FLUX
def _save_base(pipe, path):
    pipe.save_pretrained(path, safe_serialization=True)
    write_json(path / "variant.json", {"kind": "base", "parent": None, "source": {"type": "toy"}})


@pytest.fixture(scope="module", params=["sdxl", "flux"])
def other_family(request, tmp_path_factory):
    from editrobust.models.tiny import build_tiny_flux_pipeline, build_tiny_sdxl_pipeline

    pipe = build_tiny_sdxl_pipeline() if request.param == "sdxl" else build_tiny_flux_pipeline()
    root = tmp_path_factory.mktemp(request.param)
    _save_base(pipe, root / "tiny" / "base")
    return dict(family=request.param, pipe=pipe, root=root, base=root / "tiny" / "base",
                style=_cache(pipe, STYLE, root / "style.safetensors"))


def test_full_finetune_on_sdxl_and_flux_trains_only_the_denoiser(other_family):
    env, pipe = other_family, other_family["pipe"]
    out = _finetune(env, "ft-full", {"method": "full", "dataset": "style", "steps": 2, "batch": 2, "lr": 1e-3})
    denoiser = "unet" if env["family"] == "sdxl" else "transformer"
    assert read_variant(out)["components"] == [denoiser]
    ft = load_pipeline(out)
    assert _changed_keys(getattr(pipe, denoiser).state_dict(), getattr(ft, denoiser))
    for comp in ("text_encoder", "text_encoder_2", "vae"):
        assert _same(_state(getattr(ft, comp)), getattr(pipe, comp).state_dict()), comp


def test_lora_on_sdxl_and_flux_adapts_only_the_clip_encoders(other_family):
    env, pipe = other_family, other_family["pipe"]
    out = _finetune(env, "ft-lora", {"method": "lora", "dataset": "style", "steps": 2, "batch": 2, "lr": 5e-2})
    adapted = ["text_encoder", "text_encoder_2"] if env["family"] == "sdxl" else ["text_encoder"]
    assert read_variant(out)["adapter"]["components"] == adapted
    prefixes = {k.split(".")[0] for k in load_file(out / "pytorch_lora_weights.safetensors")}
    assert prefixes == set(adapted)
    ft = load_pipeline(out)
    for comp in ("text_encoder", "text_encoder_2"):
        changed = _changed_keys(getattr(pipe, comp).state_dict(), getattr(ft, comp))
        if comp in adapted:
            assert changed and all(k.split(".")[-2] in ("q_proj", "k_proj", "v_proj", "out_proj") for k in changed)
        else:
            assert not changed, comp  # FLUX's T5 stays frozen
    denoiser = "unet" if env["family"] == "sdxl" else "transformer"
    assert _same(_state(getattr(ft, denoiser)), getattr(pipe, denoiser).state_dict())
