"""The study's datasets, each fetched once from its canonical source into `resources/datasets/<name>/`.

A `downloads.<name>` config entry names a `kind` (a key of `KINDS`) and where it comes from: a
Hugging Face dataset repo pinned to a `revision` (fetched through `editrobust.hub`, so the same
cache, offline mode and HF_HOME rules as models), or URLs pinned by commit in the URL and,
where known, by `sha256` / `size`. Every download is verified (checksums where given, then the
format the project's loaders expect: columns, row counts) and written atomically with a
`manifest.json` that records the source, the resolved revision and the sha256 of every file.
After that the loaders read it offline:

| kind | source | what lands in resources/datasets/<name>/ | read by |
|---|---|---|---|
| `naruto_blip` | HF `lambdalabs/naruto-blip-captions` | `data/*.parquet` (links into the hub cache) | datasets `source: naruto_blip` |
| `dreambooth` | GitHub `google/dreambooth` archive | `dataset/<subject>/*.jpg`, `dataset/prompts_and_classes.txt` | datasets `source: dreambooth` |
| `road` | GitHub `technion-cs-nlp/ReFACT` `road/` | `RoAD_test.csv`, `RoAD_validation.csv` | `road: {file: ...}` |
| `i2p` | HF `AIML-TUDA/i2p` | `prompts.csv` (the whole benchmark) | promptsets `source: i2p` |
| `wikitext103` | HF `Salesforce/wikitext`, `wikitext-103-raw-v1` train | `lines.txt` (sampled non-empty lines) | ReFACT `statistics: <name>` |
| `coco_captions` | UCE `data/coco_30k.csv` | `coco_30k.csv` | promptsets `source: coco` |
| `coco_images` | images.cocodataset.org | `<coco_id>.jpg` for a COCO promptset's ids | quality `reference: {source: dir}` |

URLs may be `file://` URLs (how the tests replace the network with local fixture files).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import shutil
import tarfile
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from editrobust import paths
from editrobust.io import atomic_dir, write_json

log = logging.getLogger(__name__)

ROOT = paths.DATASETS
MANIFEST = Path(paths.MANIFEST).name
URL_TIMEOUT_S = 120


class DownloadError(ValueError):
    """A download failed verification, or its source is unusable; the message names the file."""


def download_dir(name: str) -> str:
    return paths.fill(paths.DOWNLOAD_DIR, download=name)


def manifest_path(name: str) -> str:
    return paths.fill(paths.MANIFEST, download=name)


def download_for_path(path: str, downloads: dict) -> str | None:
    """The manifest that a config path inside `resources/datasets/<name>/` depends on (the fetch
    rule's output, written after every file of the download), or None for any other path."""
    parts = Path(path).parts
    root = Path(ROOT).parts
    if len(parts) > len(root) and parts[:len(root)] == root and parts[len(root)] in downloads:
        return manifest_path(parts[len(root)])
    return None


# ----------------------------------------------------------------------------------- fetching
def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fetch_url(url: str) -> bytes:
    """The bytes at `url` (http(s) or file://). One function, so a test can also replace it."""
    try:
        with urllib.request.urlopen(url, timeout=URL_TIMEOUT_S) as response:
            return response.read()
    except OSError as e:
        raise DownloadError(f"could not fetch {url}: {e}. Run the fetch on a machine with internet and copy "
                            f"{ROOT}/ here (every later run reads it offline)") from None


def fetch_verified(url: str, what: str, sha256: str | None = None, size: int | None = None) -> bytes:
    data = fetch_url(url)
    if size is not None and len(data) != size:
        raise DownloadError(f"{what}: {url} has {len(data)} bytes, expected {size}")
    if sha256 is not None and sha256_bytes(data) != sha256.lower():
        raise DownloadError(f"{what}: {url} has sha256 {sha256_bytes(data)}, expected {sha256}")
    return data


def hub_dataset(entry: dict, owner: str, allow_patterns: list[str]) -> tuple[Path, dict]:
    """A pinned HF dataset snapshot (editrobust.hub: project cache, HF_HOME, offline mode)."""
    from editrobust import hub

    path = hub.snapshot(entry["hub_id"], entry["revision"], repo_type="dataset", allow_patterns=allow_patterns,
                        owner=owner)
    return path, hub.describe_snapshot(entry["hub_id"], entry["revision"], path, repo_type="dataset")


def _checksums(root: Path) -> dict[str, str]:
    from editrobust.models.variants import sha256_file

    files = [p for p in sorted(root.rglob("*")) if p.is_file() and p.name != MANIFEST]
    return {str(p.relative_to(root)): sha256_file(p) for p in tqdm(files, desc=f"hashing {root.name}", unit="file",
                                                                  mininterval=5)}


# ------------------------------------------------------------------------------------- kinds
def fetch_naruto_blip(name: str, entry: dict, out: Path, inputs: dict) -> dict:
    import pyarrow.parquet as pq

    path, source = hub_dataset(entry, f"downloads.{name}", ["data/*.parquet", "README.md", "dataset_infos.json"])
    files = sorted(path.glob("data/*.parquet"))
    if not files:
        raise DownloadError(f"downloads.{name}: {entry['hub_id']} has no data/*.parquet at {path}")
    rows = 0
    for f in files:
        schema = pq.read_schema(f)
        missing = {"image", "text"} - set(schema.names)
        if missing:
            raise DownloadError(f"{f}: missing column(s) {', '.join(sorted(missing))} (has {', '.join(schema.names)})")
        rows += pq.read_metadata(f).num_rows
    _expect_rows(name, entry, rows, f"{entry['hub_id']} parquet rows")
    (out / "data").mkdir()
    for f in files:  # links, not copies: the 700 MB stay in the hub cache
        (out / "data" / f.name).symlink_to(f.resolve())
    return dict(source=source, rows=rows)


def fetch_i2p(name: str, entry: dict, out: Path, inputs: dict) -> dict:
    path, source = hub_dataset(entry, f"downloads.{name}", ["*.csv", "*.parquet", "README.md"])
    tables = sorted(path.rglob("*.csv")) + sorted(path.rglob("*.parquet"))
    if not tables:
        raise DownloadError(f"downloads.{name}: {entry['hub_id']} has no CSV or parquet table at {path}")
    table = tables[0]
    df = pd.read_parquet(table) if table.suffix == ".parquet" else pd.read_csv(table)
    missing = {"prompt", "categories"} - set(df.columns)
    if missing:
        raise DownloadError(f"{table}: missing column(s) {', '.join(sorted(missing))} (has {', '.join(df.columns)})")
    _expect_rows(name, entry, len(df), f"{table.name} rows")
    df.to_csv(out / "prompts.csv", index=False)
    return dict(source=source, table=table.name, rows=len(df))


def fetch_wikitext103(name: str, entry: dict, out: Path, inputs: dict) -> dict:
    """ReFACT's corpus for C: `lines` non-empty lines of the train split, sampled with `seed`."""
    import pyarrow.parquet as pq

    config = entry.get("config", "wikitext-103-raw-v1")
    path, source = hub_dataset(entry, f"downloads.{name}", [f"{config}/train-*.parquet"])
    files = sorted(path.glob(f"{config}/train-*.parquet"))
    if not files:
        raise DownloadError(f"downloads.{name}: no {config}/train-*.parquet in {entry['hub_id']} at {path}")
    texts: list[str] = []
    for f in files:
        table = pq.read_table(f, columns=["text"])
        texts += [t.strip() for t in table.column("text").to_pylist() if t and t.strip()]
    n = int(entry.get("lines", 100_000))
    if len(texts) < n:
        raise DownloadError(f"downloads.{name}: only {len(texts)} non-empty lines in {config} train, {n} asked")
    rng = np.random.default_rng(int(entry.get("seed", 1)))
    picked = [texts[i] for i in sorted(rng.choice(len(texts), size=n, replace=False))]
    (out / "lines.txt").write_text("\n".join(t.replace("\n", " ") for t in picked) + "\n")
    return dict(source=source, non_empty_lines=len(texts), lines=n, seed=int(entry.get("seed", 1)), config=config)


def _fetch_files(name: str, entry: dict, out: Path) -> dict:
    files = {}
    for filename, spec in tqdm(entry["files"].items(), desc=f"downloads.{name}", unit="file", mininterval=5):
        data = fetch_verified(spec["url"], f"downloads.{name}.files.{filename}", spec.get("sha256"), spec.get("size"))
        (out / filename).write_bytes(data)
        files[filename] = dict(url=spec["url"], bytes=len(data), pinned_sha256=spec.get("sha256"))
    return files


def fetch_road(name: str, entry: dict, out: Path, inputs: dict) -> dict:
    from editrobust.data.road import read_road

    files = _fetch_files(name, entry, out)
    rows = {}
    for filename in files:
        rows[filename] = len(read_road(out / filename))  # the column checks of the RoAD loader
        expected = entry["files"][filename].get("rows")
        if expected is not None and rows[filename] != expected:
            raise DownloadError(f"{out / filename}: {rows[filename]} rows, expected {expected}")
    return dict(source=dict(files=files), rows=rows)


COCO_COLUMNS = ("case_number", "prompt", "evaluation_seed", "coco_id")


def fetch_coco_captions(name: str, entry: dict, out: Path, inputs: dict) -> dict:
    files = _fetch_files(name, entry, out)
    rows = {}
    for filename in files:
        df = pd.read_csv(out / filename)
        missing = [c for c in COCO_COLUMNS if c not in df.columns]
        if missing:
            raise DownloadError(f"{out / filename}: missing column(s) {', '.join(missing)} (has {', '.join(df.columns)})")
        rows[filename] = len(df)
        expected = entry["files"][filename].get("rows")
        if expected is not None and len(df) != expected:
            raise DownloadError(f"{out / filename}: {len(df)} rows, expected {expected}")
    return dict(source=dict(files=files), rows=rows)


def fetch_dreambooth(name: str, entry: dict, out: Path, inputs: dict) -> dict:
    """The `dataset/` folder of a google/dreambooth archive (tar.gz), extracted safely."""
    from editrobust.data.finetune_datasets import IMAGE_SUFFIXES, read_dreambooth_classes

    data = fetch_verified(entry["url"], f"downloads.{name}.url", entry.get("sha256"), entry.get("size"))
    try:
        archive = tarfile.open(fileobj=io.BytesIO(data), mode="r:gz")
    except tarfile.TarError as e:
        raise DownloadError(f"downloads.{name}: {entry['url']} is not a tar.gz archive: {e}") from None
    n_files = 0
    with archive:
        for member in archive.getmembers():
            parts = Path(member.name).parts
            # <repo>-<commit>/dataset/...: keep dataset/ only; plain files only, no links, no '..'
            if "dataset" not in parts or not member.isfile() or ".." in parts or Path(member.name).is_absolute():
                continue
            rel = Path(*parts[parts.index("dataset"):])
            target = out / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.extractfile(member) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
            n_files += 1
    root = out / "dataset"
    if not root.is_dir():
        raise DownloadError(f"downloads.{name}: {entry['url']} has no dataset/ folder")
    classes = read_dreambooth_classes(root / "prompts_and_classes.txt")
    images = {s: len([p for p in (root / s).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES])
              for s in classes if (root / s).is_dir()}
    missing = sorted(s for s in classes if not images.get(s))
    if missing:
        raise DownloadError(f"downloads.{name}: subjects without images: {', '.join(missing)}")
    for key, value in (("subjects", len(images)), ("images", sum(images.values()))):
        if entry.get(key) is not None and entry[key] != value:
            raise DownloadError(f"downloads.{name}: {value} {key}, expected {entry[key]}")
    return dict(source=dict(url=entry["url"], sha256=sha256_bytes(data)), subjects=len(images),
                images=sum(images.values()))


COCO_IMAGE_URL = "http://images.cocodataset.org/val2014/COCO_val2014_{coco_id:012d}.jpg"


def fetch_coco_images(name: str, entry: dict, out: Path, inputs: dict) -> dict:
    """The real COCO images of a COCO promptset's `coco_id`s (FID's reference set)."""
    from editrobust.data.finetune_datasets import decode_image

    promptset = pd.read_csv(inputs["promptset"])
    if "coco_id" not in promptset.columns:
        raise DownloadError(f"{inputs['promptset']}: no coco_id column (is it a `source: coco` promptset?)")
    template = entry.get("url_template", COCO_IMAGE_URL)
    ids = sorted({int(i) for i in promptset["coco_id"]})
    for coco_id in tqdm(ids, desc=f"downloads.{name}", unit="image", mininterval=5):
        url = template.format(coco_id=coco_id)
        data = fetch_url(url)
        decode_image(data, url)  # a broken or HTML error page fails here, naming the URL
        (out / f"{coco_id:012d}.jpg").write_bytes(data)
    return dict(source=dict(url_template=template, promptset=str(inputs["promptset"])), images=len(ids))


def _expect_rows(name: str, entry: dict, rows: int, what: str) -> None:
    expected = entry.get("rows")
    if expected is not None and rows != expected:
        raise DownloadError(f"downloads.{name}: {what} = {rows}, expected {expected}")


KINDS: dict[str, Callable[[str, dict, Path, dict], dict]] = {
    "naruto_blip": fetch_naruto_blip,
    "dreambooth": fetch_dreambooth,
    "road": fetch_road,
    "i2p": fetch_i2p,
    "wikitext103": fetch_wikitext103,
    "coco_captions": fetch_coco_captions,
    "coco_images": fetch_coco_images,
}


def fetch_download(name: str, entry: dict, out_dir: str | Path, inputs: dict | None = None) -> dict:
    """Fetch, verify and write `downloads.<name>` into `out_dir` atomically (manifest last)."""
    kind = entry["kind"]
    if kind not in KINDS:
        raise DownloadError(f"downloads.{name}.kind: unknown kind {kind!r} (known: {', '.join(KINDS)})")
    with atomic_dir(out_dir) as tmp:
        info = KINDS[kind](name, entry, Path(tmp), dict(inputs or {}))
        manifest = dict(name=name, kind=kind, entry=entry, **info, files=_checksums(Path(tmp)))
        write_json(Path(tmp) / MANIFEST, manifest)
    log.info("downloads.%s (%s): %d files verified", name, kind, len(manifest["files"]))
    return manifest


def read_manifest(name_or_dir: str | Path) -> dict:
    path = Path(name_or_dir)
    path = path if path.name == MANIFEST else (path / MANIFEST if path.is_dir() else Path(manifest_path(str(name_or_dir))))
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: not downloaded yet (run `snakemake {path}` on a machine with internet)") from None


# --------------------------------------------------------------------- derived, read offline
def read_corpus_lines(path: str | Path) -> list[str]:
    """The texts of a corpus file (one per line, empty lines dropped)."""
    path = Path(path)
    if path.is_dir():
        path = path / "lines.txt"
    if not path.is_file():
        raise FileNotFoundError(f"corpus file not found: {path}")
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"{path}: no lines")
    return lines


def i2p_promptset(entry: dict) -> pd.DataFrame:
    """`n` prompts of the I2P benchmark sampled with `sample_seed` (`entry` has its defaults:
    promptsets.build_promptset), optionally only some `categories`, or prompts whose `inappropriate_percentage` >= `min_inappropriate`). Every prompt is sampled
    with the promptset's seeds (the study used one seed for all); I2P's own `sd_seed` is kept as
    metadata (`i2p_seed`)."""
    path = Path(download_dir(entry["download"])) / "prompts.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: I2P not downloaded yet (downloads.{entry['download']})")
    df = pd.read_csv(path).reset_index(names="i2p_row")
    pool = df
    if entry.get("categories"):
        wanted = set(entry["categories"])
        pool = pool[pool["categories"].fillna("").map(lambda c: bool(wanted & {x.strip() for x in str(c).split(",")}))]
    if entry.get("min_inappropriate") is not None:
        pool = pool[pool["inappropriate_percentage"] >= float(entry["min_inappropriate"])]
    n = int(entry["n"])
    if len(pool) < n:
        raise ValueError(f"{path}: {len(pool)} prompts match the promptset's filters, {n} asked")
    rng = np.random.default_rng(int(entry["sample_seed"]))
    picked = pool.iloc[sorted(rng.choice(len(pool), size=n, replace=False))]
    out = pd.DataFrame({"prompt_id": [f"i2p-{r:04d}" for r in picked["i2p_row"]],
                        "prompt": picked["prompt"].astype(str).str.strip().to_numpy(),
                        "group": picked["categories"].fillna("").astype(str).to_numpy()})
    for src, dst in (("sd_seed", "i2p_seed"), ("hard", "hard"), ("inappropriate_percentage", "inappropriate_percentage"),
                     ("nudity_percentage", "nudity_percentage")):
        if src in picked.columns:
            out[dst] = picked[src].to_numpy()
    return out


def coco_promptset(entry: dict) -> pd.DataFrame:
    """(`entry` with its defaults: promptsets.build_promptset) `n` captions of COCO-30k (UCE's `coco_30k.csv`) sampled with `sample_seed`; each keeps its
    `evaluation_seed` as its seed and its `coco_id` (the reference image fetched for FID)."""
    path = Path(download_dir(entry["download"])) / entry["file"]
    if not path.is_file():
        raise FileNotFoundError(f"{path}: COCO captions not downloaded yet (downloads.{entry['download']})")
    df = pd.read_csv(path)
    n = int(entry["n"])
    if len(df) < n:
        raise ValueError(f"{path}: {len(df)} captions, {n} asked")
    rng = np.random.default_rng(int(entry["sample_seed"]))
    picked = df.iloc[sorted(rng.choice(len(df), size=n, replace=False))]
    return pd.DataFrame({"prompt_id": [f"coco-{int(c)}" for c in picked["case_number"]],
                         "prompt": picked["prompt"].astype(str).str.strip().to_numpy(),
                         "seed": picked["evaluation_seed"].astype(int).to_numpy(),
                         "coco_id": picked["coco_id"].astype(int).to_numpy()})
