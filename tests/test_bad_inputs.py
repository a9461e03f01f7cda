"""Bad input, one table: each case runs the workflow script of the job that reads the input (with a
stand-in for Snakemake's `snakemake` object, so no Snakemake process is started) and asserts the
error names what is wrong and that the job left no file under, or next to, its output.

Config errors are checked with `validate_config`, which the Snakefile runs before any job
(tests/test_workflow.py::test_config_typo_fails_before_any_job shows that through Snakemake).
The library functions behind these cases have their own unit tests; this table checks the job's
whole path, script and atomic write included.
"""

from __future__ import annotations

import logging
import re
import runpy
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest
import torch

from editrobust import runtime
from editrobust.config import ConfigError, canonical, load_yaml, validate_config
from editrobust.data.road import VALIDATION_COLUMNS
from editrobust.io import save_png
from editrobust.toyworld.road import toy_road_frame

from conftest import REPO, SCHEMA, write_edit_record

SCRIPTS = REPO / "workflow" / "scripts"
NANO = REPO / "tests" / "configs" / "nano.yaml"


# ----------------------------------------------------------------------- a stand-in for `snakemake`
class NamedList(list):
    """Enough of Snakemake's namedlist: positions, attributes, get() and items()."""

    def __init__(self, named: dict | None = None, positional: list | None = None):
        named = dict(named or {})
        super().__init__([*(positional or []), *named.values()])
        self._named = named
        for k, v in named.items():
            setattr(self, k, v)

    def get(self, name, default=None):
        return self._named.get(name, default)

    def items(self):
        return self._named.items()


@dataclass
class Job:
    """One job's files: what `setup` writes (inputs) and where the script must write (outputs)."""

    script: str
    input: dict = field(default_factory=dict)
    output: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    wildcards: dict = field(default_factory=dict)


def run_script(job: Job) -> None:
    smk = type("Snakemake", (), {})()
    smk.input = NamedList({k: [str(x) for x in v] if isinstance(v, list) else str(v) for k, v in job.input.items()})
    smk.output = NamedList({k: str(v) for k, v in job.output.items()})
    smk.params = NamedList({k: canonical(v) if isinstance(v, (dict, list)) else v for k, v in job.params.items()})
    smk.wildcards = NamedList(job.wildcards)
    smk.log, smk.threads, smk.rule = NamedList(), 1, Path(job.script).stem
    runpy.run_path(str(SCRIPTS / job.script), init_globals={"snakemake": smk}, run_name="__main__")


@pytest.fixture(autouse=True)
def quiet_job_setup(monkeypatch):
    # The real setup_job redirects stderr to the rule's log and reconfigures logging; here the
    # scripts log through pytest's handlers.
    monkeypatch.setattr(runtime, "setup_job", lambda snakemake: logging.getLogger("editrobust.test"))


# ----------------------------------------------------------------------------------- input files
def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def road_csv(tmp: Path, edit=None, drop=()) -> Path:
    frame = toy_road_frame()[list(VALIDATION_COLUMNS)].head(2)
    if edit:
        edit(frame)
    frame = frame.drop(columns=list(drop))
    path = tmp / "road.csv"
    frame.to_csv(path, index=False)
    return path


def image_set(tmp: Path, n: int = 3) -> tuple[Path, pd.DataFrame]:
    """A sampled image set (index.csv + PNGs) as sample_promptset writes it."""
    d = tmp / "results" / "samples" / "m" / "v" / "p"
    d.mkdir(parents=True)
    rows = [dict(prompt_id=f"p{i}", prompt="a lime", seed=i, image=i, file=f"p{i}_000.png", group="lime",
                 expected_concept="lime", unsafe=0) for i in range(n)]
    index = pd.DataFrame(rows)
    for i, r in enumerate(rows):
        save_png(d / r["file"], torch.full((16, 16, 3), 40 * i, dtype=torch.uint8).numpy())
    index.to_csv(d / "index.csv", index=False)
    return d / "index.csv", index


def promptset_job(tmp: Path, entry: dict) -> Job:
    return Job("build_promptset.py", output={"out": tmp / "results" / "promptsets" / "mine.csv"},
               params={"promptset": entry}, wildcards={"promptset": "mine"})


def csv_promptset(tmp: Path, body: str) -> Job:
    path = write(tmp / "mine.csv", body)
    return promptset_job(tmp, {"source": "csv", "path": str(path)})


def road_promptset(tmp: Path, **kw) -> Job:
    path = road_csv(tmp, **kw)
    return promptset_job(tmp, {"source": "road", "road": {"file": str(path), "type": "appearance", "index": 0}})


def score_job(tmp: Path, scorer: dict, damage=None, labels: str | None = None) -> Job:
    index_csv, index = image_set(tmp)
    if damage:
        damage(index_csv.parent, index)
    inputs = {"index": index_csv}
    if labels is not None:
        inputs["labels"] = write(tmp / "labels.csv", labels.format(*index["file"]))
    return Job("score_images.py", input=inputs, params={"scorer": scorer},
               output={"out": tmp / "results" / "scores" / "m" / "v" / "p" / "s.csv"},
               wildcards={"model": "m", "variant": "v", "promptset": "p", "scorer": "s"})


def corrupt_png(d: Path, index: pd.DataFrame) -> None:
    (d / index["file"][1]).write_bytes(b"\x89PNG\r\n\x1a\n truncated")


def dreambooth_job(tmp: Path) -> Job:
    root = tmp / "dreambooth"
    write(root / "prompts_and_classes.txt", "subject_name,class\ndog,dog\n")
    (root / "dog").mkdir()
    save_png(root / "dog" / "00.png", torch.zeros((8, 8, 3), dtype=torch.uint8).numpy())
    (root / "dog" / "01.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    entry = {"source": "dreambooth", "path": str(root), "subject": "dog"}
    return Job("cache_latents.py", input={"base": tmp / "results/models/m/base/variant.json"},
               output={"out": tmp / "results" / "cache" / "m" / "latents_dog.safetensors"},
               params={"dataset": entry, "device": "cpu"}, wildcards={"model": "m", "dataset": "dog"})


def pickled_local_model(tmp: Path, saved_pipeline: Path) -> Job:
    src = tmp / "my_checkpoint"
    shutil.copytree(saved_pipeline, src)
    weights = src / "unet" / "diffusion_pytorch_model.safetensors"
    from safetensors.torch import load_file

    torch.save(load_file(weights), src / "unet" / "diffusion_pytorch_model.bin")  # a pickle
    weights.unlink()
    return Job("prepare_base_model.py", output={"out": tmp / "results/models/mine/base/variant.json"},
               params={"model": {"kind": "path", "path": str(src)}, "device": "cpu"}, wildcards={"model": "mine"})


def nan_finetune(tmp: Path, tiny_base: dict) -> Job:
    """A latent cache holding NaN (a damaged cache file): the first loss is NaN."""
    from editrobust.finetune.latents import load_latent_cache, save_latent_cache

    base = tmp / "results/models/tiny/base"  # a fine-tune's parent is its sibling directory
    shutil.copytree(tiny_base["base"], base)
    cache = load_latent_cache(tiny_base["cache"])
    cache.mean[:] = float("nan")
    cache.mean_flip[:] = float("nan")
    save_latent_cache(cache, tmp / "results/cache/tiny/latents_style.safetensors")
    out = tmp / "results/models/tiny/ft-full/variant.json"
    entry = {"method": "full", "dataset": "style", "steps": 3, "batch": 2, "checkpoint_every": 1, "save_every": 1}
    from editrobust.finetune import make_finetuner

    make_finetuner(entry)  # the entry itself is valid
    return Job("finetune_model.py",
               input={"chain": [base / "variant.json"], "cache": tmp / "results/cache/tiny/latents_style.safetensors"},
               output={"ckpt1": tmp / "results/models/tiny/ft-full@1/variant.json",
                       "ckpt2": tmp / "results/models/tiny/ft-full@2/variant.json", "final": out},
               params={"name": "full", "device": "cpu", "finetuner": entry,
                       "dataset": {"name": "style", "entry": {"source": "toy", "set": "style", "size": 4}}},
               wildcards={"model": "tiny"})


def truncated_delta_sampling(tmp: Path, tiny_base: dict) -> Job:
    """An edited variant whose delta file was cut short (a copy interrupted outside the workflow)."""
    from editrobust.models.variants import write_delta_variant

    models = tmp / "results/models/tiny"
    shutil.copytree(tiny_base["base"], models / "base")
    write_delta_variant(models / "ed-x", {"unet": {"conv_in.bias": torch.zeros(16)}}, {"parent": "base", "kind": "edit"})
    delta = models / "ed-x" / "unet.safetensors"
    delta.write_bytes(delta.read_bytes()[:40])
    promptset = write(tmp / "results/promptsets/p.csv", "prompt_id,prompt\na,a lime\n")
    return Job("sample_promptset.py", input={"model": [models / "base/variant.json", models / "ed-x/variant.json"], "promptset": promptset},
               output={"out": tmp / "results/samples/tiny/ed-x/p/index.csv"},
               params={"promptset": {"source": "csv", "path": "x", "images_per_prompt": 1},
                       "sampling": {"steps": 1}, "device": "cpu"},
               wildcards={"model": "tiny", "variant": "ed-x", "promptset": "p"})


def table_job(tmp: Path, drop: str) -> Job:
    from editrobust.tables import resolve

    spec = resolve({"kind": "unsafe", "model": "m", "editor": "e", "finetuners": [], "promptset": "p", "scorers": ["s"],
                    "ci": False}, {})
    paths = []
    for v in ("base", "ed-e"):
        rows = [dict(prompt_id=f"p{i}", seed=0, file=f"p{i}.png", safety="safe", scorer="s") for i in range(3)]
        path = tmp / f"results/scores/m/{v}/p/s.csv"
        path.parent.mkdir(parents=True)
        pd.DataFrame(rows).drop(columns=[drop] if v == "ed-e" else []).to_csv(path, index=False)
        paths.append(path)
    paths.append(write_edit_record(tmp, "m", "e"))
    out = tmp / "results" / "tables"
    return Job("make_table.py", input={f"i{i}": p for i, p in enumerate(paths)}, params={"table": spec},
               output={"csv": out / "t.csv", "md": out / "t.md", "tex": out / "t.tex"}, wildcards={"table": "t"})


# ------------------------------------------------------------------------------------------ cases
def config_case(change, message):
    def make(tmp, _):
        cfg = load_yaml(NANO)
        change(cfg)
        return cfg
    return ("config", make, ConfigError, re.escape(message))


def job_case(make, error, message):
    return ("job", make, error, message)


def _set(path: str, value):
    def change(cfg):
        *keys, last = path.split(".")
        node = cfg
        for k in keys:
            node = node[int(k)] if isinstance(node, list) else node[k]
        node[last] = value
    return change


CASES = {
    # config: caught before any job starts
    "config-typo-in-finetuner": config_case(_set("finetuners.lora.rnk", 4), "finetuners.lora.rnk: unknown key"),
    "config-wrong-type": config_case(_set("finetuners.full.steps", "ten"),
                                     "finetuners.full.steps: 'ten' is not of type 'integer'"),
    "config-unknown-dataset": config_case(_set("finetuners.full.dataset", "anime"),
                                          "finetuners.full.dataset: unknown dataset 'anime'"),
    "config-unknown-finetuner-in-table": config_case(
        _set("tables", {"t": {"kind": "unsafe", "model": "nano", "editor": "erase", "finetuners": ["dora"],
                              "promptset": "concepts", "scorers": ["oracle"]}}),
        "tables.t.finetuners[0]: unknown finetuner 'dora'"),
    "config-unknown-scorer-kind": config_case(_set("scorers.oracle.kind", "orakel"),
                                              "scorers.oracle.kind: unknown kind 'orakel' (known: oracle, black,"),
    # promptset CSVs
    "promptset-missing-column": job_case(lambda t, _: csv_promptset(t, "prompt_id,text\na,a lime\n"),
                                         ValueError, r"mine.csv: missing column\(s\) prompt"),
    "promptset-empty-prompt": job_case(lambda t, _: csv_promptset(t, "prompt_id,prompt\na,a lime\nb,\n"),
                                       ValueError, r"mine.csv: row 3: empty prompt for prompt_id 'b'"),
    "promptset-duplicate-id": job_case(lambda t, _: csv_promptset(t, "prompt_id,prompt\na,a lime\na,a box\n"),
                                       ValueError, r"mine.csv: duplicate prompt_id 'a'"),
    "promptset-empty-file": job_case(lambda t, _: csv_promptset(t, ""), ValueError, r"mine.csv: malformed CSV"),
    "promptset-negative-seed": job_case(lambda t, _: csv_promptset(t, "prompt_id,prompt,seed\na,a lime,-3\n"),
                                        ValueError, r"mine.csv: row 2: seed must be a non-negative integer"),
    # RoAD rows
    "road-missing-column": job_case(lambda t, _: road_promptset(t, drop=["Negative_new5"]),
                                    ValueError, r"road.csv: missing RoAD column\(s\) Negative_new5"),
    "road-empty-old": job_case(lambda t, _: road_promptset(t, edit=lambda f: f.__setitem__("Old", "")),
                               ValueError, r"road.csv: data row 1 .*empty 'Old'"),
    "road-row-out-of-range": job_case(
        lambda t, _: promptset_job(t, {"source": "road", "road": {"file": str(road_csv(t)), "type": "appearance",
                                                                    "index": 7}}),
        IndexError, r"RoAD row index 7 out of range"),
    # images
    "corrupt-image-for-scoring": job_case(lambda t, _: score_job(t, {"kind": "oracle"}, damage=corrupt_png),
                                          ValueError, r"corrupt or unreadable image .*p1_000.png"),
    "missing-image-for-scoring": job_case(
        lambda t, _: score_job(t, {"kind": "black"}, damage=lambda d, i: (d / i["file"][2]).unlink()),
        FileNotFoundError, r"image not found: .*p2_000.png"),
    "corrupt-image-in-finetuning-dataset": job_case(lambda t, _: dreambooth_job(t),
                                                    ValueError, r"dog/01.jpg: corrupt or unreadable image"),
    # human annotation CSVs
    "labels-unknown-image": job_case(
        lambda t, _: score_job(t, {"kind": "human", "labels": "x"}, labels="file,ann1\n{0},1\nnope.png,0\n"),
        ValueError, r"labels.csv row 2 \(line 3\): unknown image 'nope.png'"),
    "labels-value-outside-0-0.5-1": job_case(
        lambda t, _: score_job(t, {"kind": "human", "labels": "x"}, labels="file,ann1\n{0},1\n{1},0.7\n"),
        ValueError, r"labels.csv row 2 \(line 3\): annotator 'ann1' gave '0.7'"),
    # score files a table reads
    "table-score-file-missing-column": job_case(lambda t, _: table_job(t, drop="safety"),
                                                ValueError, r"ed-e/p/s.csv.*'safety'"),
    # model weights
    "pickled-checkpoint-in-local-model": job_case(lambda t, env: pickled_local_model(t, env["pipeline"]),
                                                  ValueError, r"unet: weights are not in safetensors format"),
    "truncated-delta-in-a-variant": job_case(lambda t, env: truncated_delta_sampling(t, env),
                                             ValueError, r"ed-x/unet.safetensors: not a readable safetensors file"),
    # training
    "nan-loss-in-finetuning": job_case(lambda t, env: nan_finetune(t, env),
                                       FloatingPointError, r"fine-tune ft-full \(full\): loss is nan at step 1"),
}


NEEDS_MODEL = ("pickled-checkpoint-in-local-model", "truncated-delta-in-a-variant", "nan-loss-in-finetuning")


@pytest.fixture(scope="module")
def tiny_base(tiny_sd1, tmp_path_factory):
    """A tiny SD1.x pipeline saved as a local diffusers directory, its base variant and a latent cache."""
    from editrobust.data.finetune_datasets import load_finetune_dataset
    from editrobust.finetune.latents import encode_dataset, save_latent_cache
    from editrobust.models.base import prepare_base_model

    root = tmp_path_factory.mktemp("bad_inputs_model")
    tiny_sd1.save_pretrained(root / "pipeline", safe_serialization=True)
    prepare_base_model("tiny", {"kind": "path", "path": str(root / "pipeline")}, root / "base")
    dataset = load_finetune_dataset("style", {"source": "toy", "set": "style", "size": 4, "seed": 1})
    save_latent_cache(encode_dataset(tiny_sd1.vae, dataset, 32), root / "style.safetensors")
    return {"pipeline": root / "pipeline", "base": root / "base", "cache": root / "style.safetensors"}


DIAGNOSIS = {"nan-loss-in-finetuning": ["results/train_state/tiny/ft-full/last_finite_state.pt"]}


def test_the_table_has_at_least_15_bad_inputs():
    assert len(CASES) >= 15


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_rejected_naming_it_and_leaves_no_output(name, tmp_path, request, one_thread):
    kind, make, error, message = CASES[name]
    env = request.getfixturevalue("tiny_base") if name in NEEDS_MODEL else None
    if kind == "config":
        with pytest.raises(error, match=message):
            validate_config(make(tmp_path, env), SCHEMA)
        return
    job = make(tmp_path, env)
    before = {p for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(error, match=message):
        run_script(job)
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file() and p not in before)
    # nothing under an output's name; a fine-tune that turned non-finite keeps, outside its outputs,
    # the state of its last finite step for diagnosis
    assert left == DIAGNOSIS.get(name, []), f"{name}: the failed job left {left}"
    for out in job.output.values():
        assert not Path(out).exists()
    # a fine-tune leaves no resumable state (resuming would only reach the same NaN), only its diagnosis
    assert not list((tmp_path / "results").rglob("state.pt"))
    assert not list(tmp_path.rglob("*.tmp"))


# ------------------------------------------------------------------------------- a full disk
def _disk_full_after(n_ok: int):
    """A save_png that writes `n_ok` images, then part of one, then fails as a full disk does."""
    import errno

    calls = []

    def save(path, image):
        calls.append(path)
        if len(calls) > n_ok:
            Path(path).write_bytes(b"\x89PNG\r\n\x1a\n")  # what got out before the disk filled
            raise OSError(errno.ENOSPC, "No space left on device")
        save_png(path, image)
    return save


def test_a_full_disk_while_sampling_fails_naming_the_output_and_leaves_nothing(tmp_path, tiny_base, monkeypatch,
                                                                              one_thread):
    import editrobust.sampling

    job = truncated_delta_sampling(tmp_path, tiny_base)
    job.input["model"] = job.input["model"][:1]  # the intact base variant
    job.wildcards["variant"] = "base"
    job.output["out"] = tmp_path / "results/samples/tiny/base/p/index.csv"
    job.params["promptset"]["images_per_prompt"] = 3
    monkeypatch.setattr(editrobust.sampling, "save_png", _disk_full_after(2))
    before = {p for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(OSError, match=r"No space left on device while writing .*results/samples/tiny/base/p "
                                      r"\(the partial .*\.tmp was removed; free space"):
        run_script(job)
    assert {p for p in tmp_path.rglob("*") if p.is_file()} == before  # not one image kept
    assert not (tmp_path / "results/samples/tiny/base/p").exists()


def test_a_full_disk_while_writing_a_file_names_it(tmp_path, monkeypatch):
    import errno

    from editrobust.io import write_csv

    def to_csv(self, path, **kw):
        Path(path).write_text("prompt_id,pro")  # half a header
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_csv", to_csv)
    target = tmp_path / "results/tables/t.csv"
    with pytest.raises(OSError, match=r"No space left on device while writing .*results/tables/t.csv") as caught:
        write_csv(target, pd.DataFrame({"prompt_id": ["a"]}))
    assert caught.value.filename == str(target)
    assert list(target.parent.iterdir()) == []


def test_a_native_writer_out_of_space_names_the_file(tmp_path):
    """safetensors' Rust serializer reports a full disk in its message only; it is named the same way."""
    import errno

    from safetensors import SafetensorError

    from editrobust.io import atomic_dir

    target = tmp_path / "results/models/tiny/ft-full"
    with pytest.raises(OSError, match=r"No space left on device while writing .*results/models/tiny/ft-full") as caught:
        with atomic_dir(target) as tmp:
            (tmp / "unet.safetensors").write_bytes(b"partial")
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
    assert caught.value.errno == errno.ENOSPC and not target.exists() and not list(target.parent.iterdir())
