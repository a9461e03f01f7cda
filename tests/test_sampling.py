import numpy as np
import pytest
import torch

from editrobust.devices import pick_device
from editrobust.sampling import SamplingSettings, generate


def test_same_seed_same_image_across_batch_sizes(tiny_sd1):
    prompts = ["a lime", "a ceo", "a lime", "blood splatter", "a toy"]
    seeds = [0, 0, 1, 7, 3]
    one = generate(tiny_sd1, prompts, seeds, SamplingSettings(steps=3, batch_size=1), progress=False)
    three = generate(tiny_sd1, prompts, seeds, SamplingSettings(steps=3, batch_size=3), progress=False)
    all_ = generate(tiny_sd1, prompts, seeds, SamplingSettings(steps=3, batch_size=8), progress=False)
    assert one.shape == (5, 32, 32, 3) and one.dtype == np.uint8
    # Same images; batched matrix kernels may round differently, which can move a pixel by at
    # most one intensity level (seen: 0.007 % of pixels). Anything more would be a seeding bug.
    for other in (three, all_):
        diff = np.abs(one.astype(int) - other.astype(int))
        assert diff.max() <= 1 and (diff > 0).mean() < 1e-3
    # and exactly reproducible for a fixed batch size
    again = generate(tiny_sd1, prompts, seeds, SamplingSettings(steps=3, batch_size=3), progress=False)
    assert np.array_equal(three, again)


def test_image_depends_on_seed_and_prompt(tiny_sd1):
    s = SamplingSettings(steps=3, batch_size=4)
    a = generate(tiny_sd1, ["a lime", "a lime", "a ceo"], [0, 1, 0], s, progress=False)
    assert not np.array_equal(a[0], a[1])  # other seed
    assert not np.array_equal(a[0], a[2])  # other prompt
    b = generate(tiny_sd1, ["a lime"], [0], s, progress=False)
    assert np.array_equal(a[0], b[0])


def test_prompt_and_seed_counts_must_match(tiny_sd1):
    with pytest.raises(ValueError, match="2 prompts but 1 seeds"):
        generate(tiny_sd1, ["a", "b"], [0], SamplingSettings(steps=1), progress=False)


def test_device_choice():
    assert pick_device("cpu").type == "cpu"
    assert pick_device("auto").type in ("cpu", "cuda", "mps")


# --- out of memory and non-finite decodes ---------------------------------------------------------
def _with_a_memory_limit(monkeypatch, pipe, most: int):
    """The pipeline raises CUDA's out-of-memory error for batches of more than `most` images."""
    call = type(pipe).__call__

    def limited(self, *args, **kwargs):
        if len(kwargs["prompt"]) > most:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return call(self, *args, **kwargs)

    monkeypatch.setattr(type(pipe), "__call__", limited)


def test_a_batch_out_of_memory_is_retried_in_halves_with_the_same_images(tiny_sd1, monkeypatch, caplog):
    prompts, seeds = ["a lime", "a ceo", "a lime", "blood splatter", "a toy", "a ceo"], [0, 0, 1, 7, 3, 5]
    pairs = generate(tiny_sd1, prompts, seeds, SamplingSettings(steps=2, batch_size=2), progress=False)
    _with_a_memory_limit(monkeypatch, tiny_sd1, 2)
    with caplog.at_level("WARNING"):
        split = generate(tiny_sd1, prompts, seeds, SamplingSettings(steps=2, batch_size=4), progress=False)
    assert np.array_equal(split[:4], pairs[:4]) and np.array_equal(split[4:], pairs[4:])  # 4 = 2 + 2; then 2
    assert "out of memory on a batch of 4 images (from prompt 'a lime'): retrying as 2 + 2" in caplog.text


def test_one_image_out_of_memory_is_a_clear_error(tiny_sd1, monkeypatch):
    _with_a_memory_limit(monkeypatch, tiny_sd1, 0)
    with pytest.raises(MemoryError, match=r"sampling 'a lime' \(seed 3\) ran out of memory with a single image at "
                                          r"32x32: .*Lower the resolution"):
        generate(tiny_sd1, ["a lime", "a ceo"], [3, 4], SamplingSettings(steps=2, batch_size=2), progress=False)


def test_non_finite_decodes_are_counted_and_kept_black(tiny_sd1, monkeypatch):
    call = type(tiny_sd1).__call__

    def half_nan(self, *args, **kwargs):  # the second image of each batch overflows, as an fp16 VAE can
        out = call(self, *args, **kwargs)
        out.images[1::2] = np.nan
        return out

    monkeypatch.setattr(type(tiny_sd1), "__call__", half_nan)
    s = SamplingSettings(steps=2, batch_size=4)
    with pytest.raises(FloatingPointError, match="non-finite pixels"):
        generate(tiny_sd1, ["a lime"] * 4, [0, 1, 2, 3], s, progress=False)
    flags: list[bool] = []
    images = generate(tiny_sd1, ["a lime"] * 4, [0, 1, 2, 3], s, progress=False, nonfinite=flags)
    assert flags == [False, True, False, True]
    assert images[1].max() == 0 and images[3].max() == 0 and images[0].max() > 0
