"""The NSFW filter at sampling: the promptset key, the model's filter (SD1.x's safety checker on
tiny random weights, the toy's stand-in, none), what is recorded, and black images left out of the
summaries' rates."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from editrobust.config import ConfigError, load_yaml, validate_config
from editrobust.io import write_csv
from editrobust.sampling import safety_filter as sf
from editrobust.sampling import sample_promptset
from editrobust.scoring import run_scorer
from editrobust.scoring.summary import summarize
from editrobust.toyworld import safety_filter as toy_filter
from editrobust.toyworld import world as W
from editrobust.toyworld.captions import concept_scene

from conftest import REPO, SCHEMA, build_tiny_safety_checker


# --- which variants the promptset asks the filter for ------------------------------------------

def test_the_filter_is_off_unless_the_promptset_asks():
    assert not sf.wanted({"source": "toy", "set": "unsafe"}, "base")
    assert not sf.wanted({"safety_filter": False}, "ed-erase")
    on = {"safety_filter": True}
    assert all(sf.wanted(on, v) for v in ("base", "ed-erase", "ed-erase+ft-full", "ft-dora@30"))


def test_the_filter_is_off_for_the_listed_finetuners_and_their_checkpoints():
    study = {"safety_filter": True, "safety_filter_off_for": ["full", "dora"]}
    assert sf.wanted(study, "base") and sf.wanted(study, "ed-erase") and sf.wanted(study, "ed-erase+ft-lora")
    assert not sf.wanted(study, "ed-erase+ft-full")
    assert not sf.wanted(study, "ft-dora")
    assert not sf.wanted(study, "ed-erase+ft-dora@30")
    # an editor that happens to share a finetuner's name is not a fine-tune
    assert sf.wanted(study, "ed-full")


# --- the toy's stand-in -------------------------------------------------------------------------

def _renders(concepts, seed=0):
    rng = np.random.default_rng(seed)
    return np.stack([W.render(concept_scene(c, rng), rng) for c in concepts])


def test_the_stand_in_misses_the_stated_share_deterministically():
    prompts = [f"prompt {i % 37}" for i in range(4000)]
    seeds = [i // 37 for i in range(4000)]
    missed = toy_filter.missed(prompts, seeds, miss_rate=0.25)
    # 4000 Bernoulli(0.25) draws: standard deviation of the share 0.007
    assert abs(missed.mean() - 0.25) < 0.03
    assert np.array_equal(missed, toy_filter.missed(prompts, seeds, miss_rate=0.25))
    assert not np.array_equal(missed, toy_filter.missed(prompts, seeds, miss_rate=0.25, seed=1))
    # a smaller rate misses a subset of what a larger one misses (the same draws)
    assert not (toy_filter.missed(prompts, seeds, 0.1) & ~missed).any()
    assert not toy_filter.missed(prompts, seeds, 0.0).any() and toy_filter.missed(prompts, seeds, 1.0).all()
    with pytest.raises(ValueError, match="miss_rate"):
        toy_filter.missed(prompts, seeds, 1.5)


def test_the_stand_in_flags_what_the_oracle_sees_as_unsafe():
    concepts = ["naked", "blood", "person", "water", "lime"] * 4
    images = _renders(concepts)
    prompts, seeds = [f"a picture of {c}" for c in concepts], list(range(len(concepts)))
    unsafe = np.isin(concepts, ["naked", "blood"])
    assert np.array_equal(toy_filter.flags(images, prompts, seeds, miss_rate=0.0), unsafe)
    assert not toy_filter.flags(images, prompts, seeds, miss_rate=1.0).any()
    flagged = toy_filter.flags(images, prompts, seeds)
    assert np.array_equal(flagged, unsafe & ~toy_filter.missed(prompts, seeds))


# --- the filter inside the sampling stage -------------------------------------------------------

def _base_variant(root, pipeline_dir=None, source_type="path"):
    """A base variant.json pointing at a pipeline directory (or a toy base holding one)."""
    root.mkdir(parents=True, exist_ok=True)
    source = {"type": source_type}
    if pipeline_dir is not None:
        source["path"] = str(pipeline_dir)
    (root / "variant.json").write_text(json.dumps({"kind": "base", "parent": None, "source": source}))
    return root


def test_a_toy_base_gets_the_stand_in_and_records_it(tmp_path):
    concepts = ["naked", "person", "blood", "water"]
    images = _renders(concepts, seed=3)
    index = pd.DataFrame({"prompt": [f"a picture of {c}" for c in concepts], "seed": range(4)})
    variant = _base_variant(tmp_path / "toy" / "base", source_type="toy")
    out = sf.apply(images, index.copy(), {"safety_filter": False}, variant)
    assert out is images
    filtered_index = index.copy()
    out = sf.apply(images, filtered_index, {"safety_filter": True}, variant)
    expect = toy_filter.flags(images, filtered_index["prompt"].tolist(), list(range(4)))
    assert expect.any()  # the seeds above catch at least one of the two unsafe images
    assert filtered_index["safety_filter"].eq(toy_filter.NAME).all()
    assert filtered_index["filtered"].tolist() == expect.astype(int).tolist()
    assert (out[expect] == 0).all() and np.array_equal(out[~expect], images[~expect])
    assert images[expect].max() > 0  # the caller's images are not changed


@pytest.fixture(scope="module")
def tiny_checker():
    """A tiny random StableDiffusionSafetyChecker and its image processor (real classes)."""
    checker, processor = build_tiny_safety_checker()
    with torch.no_grad():
        checker.special_care_embeds_weights.fill_(2.0)  # never: cos <= 1
    return checker, processor


def _sd1_dir(root, tiny_sd1, checker=None, processor=None, threshold=None):
    """A diffusers SD1.x directory; with a checker, its safety_checker/ and feature_extractor/ as
    SD1.4 ships them (every concept threshold set to `threshold`)."""
    tiny_sd1.save_pretrained(root, safe_serialization=True)
    if checker is not None:
        with torch.no_grad():
            checker.concept_embeds_weights.fill_(threshold)
        checker.save_pretrained(root / "safety_checker", safe_serialization=True)
        processor.save_pretrained(root / "feature_extractor")
        index = json.loads((root / "model_index.json").read_text())
        index["safety_checker"] = ["stable_diffusion", "StableDiffusionSafetyChecker"]
        index["feature_extractor"] = ["transformers", "CLIPImageProcessor"]
        (root / "model_index.json").write_text(json.dumps(index))
    return root


@pytest.fixture(scope="module")
def prompts_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("promptset") / "p.csv"
    write_csv(path, pd.DataFrame({"prompt_id": ["lime", "ceo"], "prompt": ["a lime", "a ceo"]}))
    return path


def _sample(variant, prompts_csv, out, **promptset):
    entry = {"source": "csv", "path": str(prompts_csv), "images_per_prompt": 3, **promptset}
    return sample_promptset(variant, prompts_csv, entry, {"steps": 2, "batch_size": 6}, out, device="cpu")


def _pixels(out, index):
    from editrobust.io import load_image

    return np.stack([load_image(out / f) for f in index["file"]])


def test_sd1_samples_through_its_own_safety_checker(one_thread, tiny_sd1, tiny_checker, prompts_csv, tmp_path):
    checker, processor = tiny_checker
    # cos - threshold > 0 flags a concept: -2 flags every image, 2 none (cos lies in [-1, 1])
    flag_all = _base_variant(tmp_path / "all" / "base", _sd1_dir(tmp_path / "sd_all", tiny_sd1, checker, processor, -2.0))
    flag_none = _base_variant(tmp_path / "none" / "base", _sd1_dir(tmp_path / "sd_none", tiny_sd1, checker, processor, 2.0))

    off = _sample(flag_all, prompts_csv, tmp_path / "s_off")
    assert off["safety_filter"].eq("off").all() and off["filtered"].eq(0).all()
    unfiltered = _pixels(tmp_path / "s_off", off)
    assert (unfiltered.reshape(len(off), -1).max(1) > 0).all()

    blacked = _sample(flag_all, prompts_csv, tmp_path / "s_all", safety_filter=True)
    assert blacked["safety_filter"].eq("sd_safety_checker").all() and blacked["filtered"].eq(1).all()
    assert _pixels(tmp_path / "s_all", blacked).max() == 0
    on_disk = pd.read_csv(tmp_path / "s_all" / "index.csv")
    assert on_disk["safety_filter"].eq("sd_safety_checker").all() and on_disk["filtered"].eq(1).all()

    kept = _sample(flag_none, prompts_csv, tmp_path / "s_none", safety_filter=True)
    assert kept["safety_filter"].eq("sd_safety_checker").all() and kept["filtered"].eq(0).all()
    assert np.array_equal(_pixels(tmp_path / "s_none", kept), unfiltered)  # the same images, none blacked

    # every score file carries the record, and the black images are labelled black
    scores = run_scorer({"kind": "black"}, blacked, tmp_path / "s_all")
    assert scores["safety"].eq("black").all() and scores["filtered"].eq(1).all()
    assert scores["safety_filter"].eq("sd_safety_checker").all()


def test_the_filter_blacks_out_exactly_what_the_checker_scorer_calls_unsafe(one_thread, tiny_sd1, tiny_checker,
                                                                            prompts_csv, tmp_path):
    """The filter and the `sd_safety_checker` scorer share the checker: on the unfiltered images the
    scorer calls unsafe exactly the images the filter blacks out."""
    from diffusers.pipelines.stable_diffusion.safety_checker import cosine_distance

    checker, processor = tiny_checker
    plain = _base_variant(tmp_path / "plain" / "base", _sd1_dir(tmp_path / "sd_plain", tiny_sd1))
    off = _sample(plain, prompts_csv, tmp_path / "off")
    # a threshold between the images' largest concept cosines, so that the checker flags some, not all
    with torch.no_grad():
        pixels = processor(images=list(_pixels(tmp_path / "off", off)), return_tensors="pt").pixel_values
        embeds = checker.visual_projection(checker.vision_model(pixels)[1])
        cos = np.sort(cosine_distance(embeds, checker.concept_embeds).max(1).values.numpy())
    threshold = float(cos[len(cos) // 2 - 1] + cos[len(cos) // 2]) / 2
    pipeline = _sd1_dir(tmp_path / "sd", tiny_sd1, checker, processor, threshold)
    on = _sample(_base_variant(tmp_path / "m" / "base", pipeline), prompts_csv, tmp_path / "on", safety_filter=True)
    verdict = run_scorer({"kind": "sd_safety_checker", "weights": str(pipeline)}, off, tmp_path / "off")
    assert 0 < on["filtered"].sum() < len(on)
    assert on["filtered"].astype(bool).tolist() == verdict["safety"].eq("unsafe").tolist()
    black = _pixels(tmp_path / "on", on).reshape(len(on), -1).max(1) == 0
    assert black.tolist() == on["filtered"].astype(bool).tolist()


def test_a_pipeline_without_a_checker_samples_unfiltered_and_says_so(one_thread, tiny_sd1, prompts_csv, tmp_path, caplog):
    variant = _base_variant(tmp_path / "m" / "base", _sd1_dir(tmp_path / "sd", tiny_sd1))  # no safety_checker/
    index = _sample(variant, prompts_csv, tmp_path / "s", safety_filter=True)
    assert index["safety_filter"].eq(sf.NONE).all() and index["filtered"].eq(0).all()
    assert "has none" in caplog.text


# --- black images in the scores and summaries -----------------------------------------------------

def test_the_oracle_labels_black_images_black(tmp_path):
    from editrobust.io import save_png

    images = list(_renders(["naked", "person"])) + [np.zeros((32, 32, 3), np.uint8)]
    index = pd.DataFrame({"prompt_id": ["a", "b", "c"], "seed": 0, "image": 0, "file": ["a.png", "b.png", "c.png"],
                          "group": ["naked", "person", "naked"], "filtered": [0, 0, 1], "safety_filter": "toy_stand_in"})
    for f, im in zip(index["file"], images):
        save_png(tmp_path / f, im)
    out = run_scorer({"kind": "oracle"}, index, tmp_path)
    assert out["safety"].tolist() == ["unsafe", "safe", "black"]
    assert out["black"].tolist() == [0, 0, 1] and out["filtered"].tolist() == [0, 0, 1]


def test_summaries_leave_black_images_out_of_the_rates_and_count_them():
    scores = pd.DataFrame({
        "group": ["naked"] * 4 + ["person"] * 2,
        "safety": ["black", "black", "unsafe", "safe", "safe", "black"],
        "unsafe": [0, 0, 1, 0, 0, 0],
        "correct": [0, 0, 1, 1, 1, 0],
        "safety_filter": "toy_stand_in",
        "filtered": [1, 1, 0, 0, 0, 1],
    })
    summary = summarize(scores).set_index("group")
    assert summary.loc["naked", "black"] == 2 and summary.loc["naked", "excluded"] == 2
    assert summary.loc["naked", "unsafe_rate"] == pytest.approx(0.5)  # 1 of the 2 images left, not 1 of 4
    assert summary.loc["naked", "accuracy"] == pytest.approx(1.0)
    assert summary.loc["person", "accuracy"] == pytest.approx(1.0)
    assert summary.loc["all", "images"] == 6 and summary.loc["all", "excluded"] == 3
    assert summary.loc["all", "filtered"] == 3 and summary.loc["all", "safety_filter"] == "toy_stand_in"
    # a group whose every image is black has no rate rather than a rate of 0
    all_black = summarize(scores.assign(safety="black")).set_index("group")
    assert np.isnan(all_black.loc["person", "unsafe_rate"])


def test_gender_of_a_black_image_is_left_out(tmp_path):
    """clip_gender: a black image gets no gender, so F_p and δ are computed without it."""
    import open_clip
    from safetensors.torch import save_file

    from editrobust.io import save_png

    cfg = {"embed_dim": 16,
           "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
           "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    torch.manual_seed(0)
    weights = tmp_path / "clip"
    weights.mkdir()
    save_file({k: v.contiguous() for k, v in open_clip.CLIP(**cfg).state_dict().items()},
              str(weights / "open_clip_model.safetensors"))
    (weights / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg}))
    images = list(_renders(["man", "woman"])) + [np.zeros((32, 32, 3), np.uint8)]
    index = pd.DataFrame({"prompt_id": ["a", "b", "c"], "seed": 0, "image": 0, "file": ["a.png", "b.png", "c.png"],
                          "prompt": "a ceo", "group": "ceo"})
    for f, im in zip(index["file"], images):
        save_png(tmp_path / f, im)
    out = run_scorer({"kind": "clip_gender", "clip_model": {"name": "tiny", "weights": str(weights)}}, index, tmp_path)
    assert out["gender"].iloc[:2].notna().all() and pd.isna(out["gender"].iloc[2])
    assert out["black"].tolist() == [0, 0, 1]


# --- the config key -------------------------------------------------------------------------------

@pytest.fixture
def cfg():
    return load_yaml(REPO / "config" / "config.yaml")


def test_the_toy_filters_its_unsafe_prompts_only(cfg):
    """Table 1's promptset keeps no filter key: its samples (and results/tables/table1.csv) are
    those of before the filter existed."""
    out = validate_config(cfg, SCHEMA)
    assert out["promptsets"]["toy_unsafe"]["safety_filter"] is True
    for name in ("toy_professions", "toy_concepts", "toy_professions_ckpt"):
        assert "safety_filter" not in out["promptsets"][name]


def test_off_for_names_finetuners_and_needs_the_filter(cfg):
    cfg["promptsets"]["toy_unsafe"]["safety_filter_off_for"] = ["full", "dora"]
    validate_config(cfg, SCHEMA)
    cfg["promptsets"]["toy_unsafe"]["safety_filter_off_for"] = ["fulll"]
    with pytest.raises(ConfigError, match=r"promptsets.toy_unsafe.safety_filter_off_for\[0\]: unknown finetuner 'fulll'"):
        validate_config(cfg, SCHEMA)
    cfg["promptsets"]["toy_unsafe"].update(safety_filter=False, safety_filter_off_for=["full"])
    with pytest.raises(ConfigError, match="promptsets.toy_unsafe.safety_filter_off_for: the filter is off"):
        validate_config(cfg, SCHEMA)
    cfg["promptsets"]["toy_unsafe"] = {"source": "toy", "set": "unsafe", "safety_filter": "yes"}
    with pytest.raises(ConfigError, match="promptsets.toy_unsafe.safety_filter"):
        validate_config(cfg, SCHEMA)


def test_the_paper_grid_filters_sd14s_evaluation_promptsets():
    paper = validate_config(load_yaml(REPO / "config" / "paper.yaml"), SCHEMA)
    ps = paper["promptsets"]
    assert ps["professions"]["safety_filter"] and ps["i2p50"]["safety_filter"]
    assert all(v["safety_filter"] for k, v in ps.items() if k.startswith("road_"))
    assert "safety_filter" not in ps["coco_1k"]
    assert ps["i2p50_study_filter"]["safety_filter_off_for"] == ["full", "dora"]


def test_the_filter_is_part_of_the_sampling_jobs_params_and_absent_when_off(cfg):
    """Turning the filter on changes the sampling job's params (Snakemake re-runs it); a promptset
    without the key keeps the slice it had before the key existed (nothing re-runs)."""
    from types import SimpleNamespace

    from editrobust.workflow import Rules

    rules = Rules(validate_config(cfg, SCHEMA))
    assert rules.promptset_slice(SimpleNamespace(promptset="toy_professions")) == \
        '{"images_per_prompt":16,"seed_offset":0,"set":"professions","source":"toy"}'
    assert '"safety_filter":true' in rules.promptset_slice(SimpleNamespace(promptset="toy_unsafe"))
