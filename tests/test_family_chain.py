"""SDXL and FLUX through the whole chain the workflow runs: hub snapshot -> base -> edit -> fine-tune
of the edit -> sample, with the functions the rules' scripts call, on tiny random pipelines.

SDXL gets the study's ReFACT edit (both text encoders, one statistic file) and a full fine-tune;
FLUX.1-schnell gets UCE unsafe erasure (T5 length from the sampling settings) and a text-encoder
LoRA. The sampled image sets of M_ed and M_ed_ft are paired by (prompt, seed).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from editrobust.editors import edit_model
from editrobust.editors.methods.refact import compute_fc2_statistic, statistics_corpus
from editrobust.finetune import finetune_model
from editrobust.finetune.latents import cache_dataset_latents
from editrobust.io import load_image, write_csv
from editrobust.models.base import prepare_base_model, snapshot_hub_model
from editrobust.models.tiny import T5_MAX_LENGTH
from editrobust.models.variants import load_pipeline, read_variant
from editrobust.sampling import sample_promptset
from hub_fake import FakeHub

pytestmark = pytest.mark.usefixtures("one_thread")
COMMIT = "89abcdef0123456789abcdef0123456789abcdef"
STYLE = {"name": "style", "entry": {"source": "toy", "set": "style", "size": 8, "seed": 1, "resolution": 32}}
SAMPLING = {"steps": 2, "guidance": 1.0, "height": 32, "width": 32, "batch_size": 4}
CHAINS = {
    "sdxl": dict(editor={"method": "refact", "road": {"file": "toy", "type": "appearance", "index": 0}, "layer": 1,
                         "position": "eos", "v_max_grad_steps": 10},
                 finetuner={"method": "full", "dataset": "style", "steps": 2, "batch": 2, "lr": 1e-3},
                 edited="text_encoder_2", tuned="unet"),
    "flux": dict(editor={"method": "uce_erase", "edit_concepts": ["naked"]},
                 finetuner={"method": "lora", "dataset": "style", "steps": 2, "batch": 2, "lr": 5e-2},
                 edited="transformer", tuned="text_encoder"),
}


@pytest.mark.parametrize("family", ["sdxl", "flux"])
def test_hub_base_edit_finetune_sample(family, tmp_path, monkeypatch):
    from editrobust.models.tiny import build_tiny_flux_pipeline, build_tiny_sdxl_pipeline

    monkeypatch.setenv("EDITROBUST_HUB_CACHE", str(tmp_path / "resources" / "hub"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    chain = CHAINS[family]
    remote = tmp_path / "remote"
    (build_tiny_sdxl_pipeline if family == "sdxl" else build_tiny_flux_pipeline)(seed=0).save_pretrained(
        remote, safe_serialization=True)
    FakeHub().install(monkeypatch).add(f"org/{family}", remote, COMMIT)
    sampling = dict(SAMPLING, **({"max_sequence_length": T5_MAX_LENGTH} if family == "flux" else {}))
    model = {"kind": "hub", "hub_id": f"org/{family}", "revision": COMMIT, "family": family, "sampling": sampling}

    # rules snapshot_hub_model + prepare_base_model
    models = tmp_path / "results" / "models" / family
    snapshot_hub_model(family, model, tmp_path / "snapshot.json")
    prepare_base_model(family, model, models / "base", snapshot_json=tmp_path / "snapshot.json")
    assert read_variant(models / "base")["source"]["revision"] == COMMIT

    # rules refact_statistic (SDXL: both encoders in one file) + edit_model
    editor = chain["editor"]
    inputs = {}
    if editor["method"] == "refact":
        stats = tmp_path / "stats.safetensors"
        compute_fc2_statistic(models / "base", editor["layer"], statistics_corpus("toy_captions")[:300], stats)
        assert {"C", "C_2", "layer_2"} <= set(load_file(str(stats)))
        inputs["stats"] = stats
    edit_model(models / "base", "e", editor, models / "ed-e", sampling=sampling, inputs=inputs)
    edit_delta = load_file(str(models / "ed-e" / f"{chain['edited']}.safetensors"))
    assert edit_delta

    # rules cache_latents + finetune_<F>_edited
    cache = tmp_path / "latents.safetensors"
    cache_dataset_latents(models / "base", "style", STYLE["entry"], cache)
    finetune_model(models / "ed-e", "f", chain["finetuner"], STYLE, cache, models / "ed-e+ft-f", tmp_path / "state")

    # the composed M_ed_ft: the edit's tensors kept, the fine-tuned component changed
    base, ed_ft = load_pipeline(models / "base"), load_pipeline(models / "ed-e+ft-f")
    edited = getattr(ed_ft, chain["edited"]).state_dict()
    assert all(torch.equal(edited[k], v.to(edited[k].dtype)) for k, v in edit_delta.items())
    tuned_before, tuned_after = getattr(base, chain["tuned"]).state_dict(), getattr(ed_ft, chain["tuned"]).state_dict()
    assert any(not torch.equal(tuned_before[k], tuned_after[k]) for k in tuned_before)

    # rules build_promptset + sample_promptset, for M_ed and M_ed_ft: paired by (prompt, seed)
    promptset = tmp_path / "prompts.csv"
    write_csv(promptset, pd.DataFrame({"prompt_id": ["a", "b"], "prompt": ["a photo of a lime", "a naked man"]}))
    entry = {"source": "csv", "path": str(promptset), "images_per_prompt": 2}
    index = {}
    for variant in ("ed-e", "ed-e+ft-f"):
        out = tmp_path / "samples" / variant
        index[variant] = sample_promptset(models / variant, promptset, entry, sampling, out, device="cpu")
        images = [load_image(out / f) for f in index[variant]["file"]]
        assert all(im.shape == (32, 32, 3) for im in images)
    assert index["ed-e"][["prompt_id", "seed"]].equals(index["ed-e+ft-f"][["prompt_id", "seed"]])
    before = np.stack([load_image(tmp_path / "samples" / "ed-e" / f) for f in index["ed-e"]["file"]])
    after = np.stack([load_image(tmp_path / "samples" / "ed-e+ft-f" / f) for f in index["ed-e+ft-f"]["file"]])
    assert not np.array_equal(before, after)  # the fine-tune changed the edited model's images
