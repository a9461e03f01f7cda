"""The training loop's precision and memory options on a tiny SD1.x pipeline: gradient accumulation,
bf16 mixed precision on the CPU, gradient checkpointing (issue: the paper grid at real scale)."""

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from editrobust.finetune import make_finetuner
from editrobust.finetune import loop as loop_module
from editrobust.finetune.latents import load_latent_cache
from editrobust.finetune.loop import train
from editrobust.finetune.method import Finetuner
from editrobust.finetune.objectives import _noise_schedule, tokenize
from editrobust.models.variants import load_pipeline
from test_finetune import _finetune, sd1  # noqa: F401  (the module-scoped tiny base model and its caches)

pytestmark = pytest.mark.usefixtures("one_thread")
ROWS = 4


def _fixed_rows(monkeypatch):
    """Each batch takes the next rows of the cache in order (row k's prompt names k), and row k's
    loss uses its own fixed noise and timestep: a step's rows, noise and timesteps are the same
    whether drawn as one batch or as micro-batches."""
    def batch(self, cache, generator):  # rows 0, 1, 2, ... of each fine-tune (a new method object)
        first = self.__dict__.setdefault("next_row", 0)
        idx = [(first + k) % len(cache) for k in range(self.settings["batch"])]
        self.next_row = first + len(idx)
        return cache.mean[idx], [f"row {i}" for i in idx]

    def loss(pipe, z0, prompts, generator):
        rows = [int(p.split()[1]) for p in prompts]
        g = torch.Generator().manual_seed(1234)
        noise_all = torch.randn((ROWS * 4, *z0.shape[1:]), generator=g)
        t_all = torch.randint(0, 1000, (ROWS * 4,), generator=g)
        noise, t = noise_all[rows], t_all[rows]
        sched = _noise_schedule(pipe)
        hidden = pipe.text_encoder(tokenize(pipe.tokenizer, [f"an anime drawing {r}" for r in rows]))[0]
        pred = pipe.unet(sched.add_noise(z0, noise, t), t, encoder_hidden_states=hidden.to(z0.dtype)).sample
        return F.mse_loss(pred.float(), noise.float(), reduction="none").flatten(1).mean(1)

    monkeypatch.setattr(Finetuner, "batch", batch)
    monkeypatch.setattr(loop_module, "per_sample_loss", loss)


def _variant_dir(sd1, tmp_path, name):  # noqa: F811
    """Next to the base variant (a variant's parent is its sibling), unique per test."""
    return sd1["root"] / "tiny" / f"ft-{tmp_path.name}-{name}"


def _train(sd1, tmp_path, name, entry, on_step=None):  # noqa: F811
    pipe = load_pipeline(sd1["base"])
    info = train(pipe, make_finetuner(entry), load_latent_cache(sd1["style"]), _variant_dir(sd1, tmp_path, name),
                 tmp_path / "state" / name, {"parent": "base", "kind": "finetune"}, on_step=on_step)
    return pipe, info


def _weights(sd1, tmp_path, name, file):  # noqa: F811
    return load_file(_variant_dir(sd1, tmp_path, name) / file)


def _assert_close(a, b, **tol):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], **tol, msg=lambda m: f"{k}: {m}")


@pytest.mark.parametrize("method", ["full", "lora"])
def test_accumulating_four_micro_batches_of_one_is_one_step_at_batch_four(sd1, tmp_path, monkeypatch, method):  # noqa: F811
    _fixed_rows(monkeypatch)
    # A large epsilon makes AdamW's step nearly linear in the gradient (at a small epsilon its first
    # steps are ±lr for any non-zero gradient, so a rounding-level difference of a tiny gradient
    # element would flip a whole step); the clipping sees the whole step's gradient either way.
    common = dict(method=method, dataset="style", steps=2, lr=0.1, adam_epsilon=1.0, max_grad_norm=0.5)
    if method == "lora":
        common.update(rank=2, alpha=2)
    file = "unet.safetensors" if method == "full" else "pytorch_lora_weights.safetensors"
    _train(sd1, tmp_path, "batch4", dict(common, batch=4))
    _, info = _train(sd1, tmp_path, "accum4", dict(common, batch=1, gradient_accumulation_steps=4))
    one_step = _weights(sd1, tmp_path, "batch4", file)
    accumulated = _weights(sd1, tmp_path, "accum4", file)
    _assert_close(one_step, accumulated, rtol=1e-4, atol=1e-7)
    # and a real update happened (two optimizer steps, not eight)
    _train(sd1, tmp_path, "batch1", dict(common, batch=1, steps=8))
    eight_steps = _weights(sd1, tmp_path, "batch1", file)
    assert any((eight_steps[k] - one_step[k]).abs().max() > 1e-4 for k in one_step)
    assert info["steps_trained"] == 2


@pytest.mark.parametrize("method, extra", [("full", {}), ("lora", dict(rank=2, alpha=2)),
                                           ("dora", dict(rank=2, alpha=2))])
def test_bf16_mixed_precision_fine_tunes_on_the_cpu(sd1, tmp_path, monkeypatch, method, extra):  # noqa: F811
    pipes, dtypes = [], {}
    original = loop_module.store_frozen_in
    monkeypatch.setattr(loop_module, "store_frozen_in",
                        lambda pipe, trained, dtype: (pipes.append(pipe), original(pipe, trained, dtype))[1])

    def look(step):  # the dtypes while training
        dtypes.update({name: {p.dtype for p in module.parameters()} for name, module in pipes[0].components.items()
                       if isinstance(module, torch.nn.Module)})

    entry = dict(method=method, dataset="style", steps=2, batch=2, mixed_precision="bf16", **extra)
    _, info = _train(sd1, tmp_path, "bf16", entry, on_step=look)
    log = (_variant_dir(sd1, tmp_path, "bf16") / "training_log.csv").read_text().splitlines()
    losses = torch.tensor([float(row.split(",")[1]) for row in log[1:]])
    assert len(losses) == 2 and torch.isfinite(losses).all() and info["steps_trained"] == 2
    if method == "full":  # the trained UNet stays float32 (master weights), the frozen modules are bf16
        assert dtypes["unet"] == {torch.float32} and dtypes["text_encoder"] == dtypes["vae"] == {torch.bfloat16}
        stored = _weights(sd1, tmp_path, "bf16", "unet.safetensors")
    else:  # the adapter trains in float32 on a bf16 text encoder
        assert dtypes["text_encoder"] == {torch.float32, torch.bfloat16} and dtypes["unet"] == {torch.bfloat16}
        stored = _weights(sd1, tmp_path, "bf16", "pytorch_lora_weights.safetensors")
    assert {v.dtype for v in stored.values()} == {torch.float32}
    # the variant is a normal one: it loads (in float32) and its weights moved away from the parent's
    pipe = load_pipeline(_variant_dir(sd1, tmp_path, "bf16"))
    parent = load_pipeline(sd1["base"])
    module = "unet" if method == "full" else "text_encoder"
    assert any(not torch.equal(a, b) for a, b in zip(getattr(pipe, module).state_dict().values(),
                                                     getattr(parent, module).state_dict().values()))


@pytest.mark.parametrize("method", ["full", "lora"])
def test_gradient_checkpointing_gives_the_same_update(sd1, tmp_path, monkeypatch, method):  # noqa: F811
    _fixed_rows(monkeypatch)
    entry = dict(method=method, dataset="style", steps=2, batch=2, lr=1e-3)
    if method == "lora":
        entry.update(rank=2, alpha=2)
    file = "unet.safetensors" if method == "full" else "pytorch_lora_weights.safetensors"
    calls = []
    original = loop_module.enable_gradient_checkpointing
    monkeypatch.setattr(loop_module, "enable_gradient_checkpointing",
                        lambda pipe, trained: (calls.append(1), original(pipe, trained))[1])
    _train(sd1, tmp_path, "plain", entry)
    pipe, _ = _train(sd1, tmp_path, "checkpointed", dict(entry, gradient_checkpointing=True))
    assert calls == [1] and pipe.unet.is_gradient_checkpointing
    _assert_close(_weights(sd1, tmp_path, "plain", file), _weights(sd1, tmp_path, "checkpointed", file),
                  rtol=1e-5, atol=1e-7)


def test_fp16_without_a_gpu_is_a_clear_error(sd1, tmp_path):  # noqa: F811
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        _train(sd1, tmp_path, "fp16", dict(method="full", dataset="style", steps=1, batch=1, mixed_precision="fp16"))
    assert not _variant_dir(sd1, tmp_path, "fp16").exists()


@pytest.mark.parametrize("key, value", [("mixed_precision", "fp32"), ("gradient_accumulation_steps", 0),
                                        ("gradient_checkpointing", "yes")])
def test_bad_precision_keys_are_config_errors_naming_the_key(repo, key, value):
    from editrobust.config import ConfigError, load_yaml, validate_config

    config = load_yaml(repo / "tests/configs/nano.yaml")
    config["finetuners"]["full"][key] = value
    with pytest.raises(ConfigError, match=f"finetuners.full.{key}"):
        validate_config(config)


def test_an_unquoted_yaml_no_means_float32(repo):
    import yaml

    entry = yaml.safe_load("{method: full, dataset: style, steps: 1, mixed_precision: no}")
    assert entry["mixed_precision"] is False  # what YAML makes of it
    assert make_finetuner(entry).settings["mixed_precision"] == "no"
