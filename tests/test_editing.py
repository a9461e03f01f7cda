"""The edit stage on a tiny random SD1.x model: delta variants, composition, sizes."""

import os

import numpy as np
import pytest
import torch

from editrobust.editors import EDITORS, EditFailed
from editrobust.editors import edit_model as run_edit
from editrobust.models.components import apply_delta
from editrobust.editors.methods.refact import compute_fc2_statistic, resolve_road_row
from editrobust.editors.uce import uce_erase
from editrobust.models.base import prepare_base_model
from editrobust.models.variants import load_pipeline, read_delta, variant_chain
from editrobust.sampling import SamplingSettings, generate


@pytest.fixture(scope="module")
def base_dir(tiny_sd1, tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    src = root / "checkpoint"
    tiny_sd1.save_pretrained(src, safe_serialization=True)
    prepare_base_model("tiny", {"kind": "path", "path": str(src)}, root / "tiny" / "base")
    return root / "tiny" / "base"


def _dir_bytes(path):
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def test_erase_variant_stores_only_the_edited_tensors_and_composes_bit_for_bit(base_dir, tiny_sd1):
    entry = {"method": "uce_erase", "edit_concepts": ["naked", "blood"], "erase_scale": 1.0}
    out = base_dir.parent / "ed-erase"
    info = run_edit(base_dir, "erase", entry, out)
    # variant.json records every parameter the edit ran with, the declared defaults included
    assert info["kind"] == "edit" and info["parent"] == "base" and info["params"] == EDITORS.entry(entry)
    assert info["params"]["lamb"] == 0.5 and info["params"]["erase_scale"] == 1.0
    assert sorted(p.name for p in out.iterdir()) == ["unet.safetensors", "variant.json"]
    keys = set(read_delta(out)["unet"])
    assert keys and all("attn2.to_k" in k or "attn2.to_v" in k for k in keys)
    assert variant_chain(out) == [base_dir, out]
    # compose(base, delta) equals the edited model built in memory
    composed = load_pipeline(out)
    fresh = load_pipeline(base_dir)
    apply_delta(fresh, uce_erase(fresh, edit_concepts=["naked", "blood"], erase_scale=1.0))
    for (k, a), (_, b) in zip(composed.unet.state_dict().items(), fresh.unet.state_dict().items()):
        assert torch.equal(a, b), k
    s = SamplingSettings(steps=2, batch_size=2)
    img_ed = generate(composed, ["a naked person"], [0], s, progress=False)
    img_base = generate(load_pipeline(base_dir), ["a naked person"], [0], s, progress=False)
    assert not np.array_equal(img_ed, img_base)
    # the stored delta is a small fraction of the model
    model_bytes = _dir_bytes(base_dir.parent.parent / "checkpoint")
    assert _dir_bytes(out) < 0.2 * model_bytes


def test_refact_variant_with_cached_statistic(base_dir):
    stats = base_dir.parent.parent / "stats" / "C.safetensors"
    compute_fc2_statistic(base_dir, 1, ["a lime", "a photo of a ceo", "blood splatter"] * 5, stats)
    row = resolve_road_row({"file": "toy", "type": "appearance", "index": 0})
    assert row == {"type": "appearance", "prompt": "a lime", "old": "a lime", "new": "a lemon"}
    out = base_dir.parent / "ed-refact"
    entry = {"method": "refact", "road": {"file": "toy", "type": "appearance", "index": 0}, "layer": 1,
             "position": "eos", "v_max_grad_steps": 5}
    info = run_edit(base_dir, "refact", entry, out, inputs={"stats": stats})
    delta = read_delta(out)
    assert list(delta) == ["text_encoder"] and list(delta["text_encoder"]) == ["encoder.layers.1.mlp.fc2.weight"]
    assert info["result"]["refact"]["text_encoder"]["steps"] >= 1


def test_debias_that_never_beats_the_unedited_model_is_refused(base_dir):
    """The oracle sees no person in a random model's images: no iteration measures better than the
    unedited model, so the edit would be empty while the target (every gap < max_diff) is missed."""
    entry = {"method": "uce_debias", "concepts": ["ceo"], "max_iterations": 2, "images_per_iteration": 2}
    out = base_dir.parent / "ed-debias"
    with pytest.raises(EditFailed, match=r"editors.debias \(method uce_debias\): the edit changed nothing .*"
                                         r"largest attribute gap, worst concept 0.5 \(target 0.05\).*kept iteration 0"):
        run_edit(base_dir, "debias", entry, out, sampling={"steps": 2, "batch_size": 4})
    assert not out.exists()


def test_failed_edit_leaves_no_output(base_dir):
    out = base_dir.parent / "ed-bad"
    with pytest.raises(ValueError):
        run_edit(base_dir, "bad", {"method": "uce_erase", "edit_concepts": []}, out)
    assert not out.exists()
    assert not [p for p in os.listdir(base_dir.parent) if p.endswith(".tmp")]
