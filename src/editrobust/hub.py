"""Pinned Hugging Face snapshots in a local cache: models (`kind: hub`) and downloaded datasets.

A snapshot is a (repo id, revision) pair fetched once with `huggingface_hub.snapshot_download`
into the project's cache (`resources/hub`, or `$EDITROBUST_HUB_CACHE`), in the standard hub cache
layout (`models--org--name/snapshots/<commit>/...`). Where it is looked for, in order:

1. the project cache, local files only;
2. the user's Hugging Face cache (`$HF_HOME/hub` or `$HF_HUB_CACHE`), local files only, so a
   cluster with a shared HF cache never downloads a model twice;
3. the network, into the project cache, unless offline mode is on (`HF_HUB_OFFLINE=1`, or its
   alias `TRANSFORMERS_OFFLINE=1`): then `SnapshotMissing` names the repo, the revision and the
   command that fetches it.

Only safetensors weights and text files (configs, tokenizer vocabularies, sentencepiece models)
are fetched: never pickled checkpoints, never code (`*.py`), so nothing downloaded can run.
For a diffusers pipeline the components come from `model_index.json`, so a repo's single-file
checkpoints at its root (e.g. FLUX.1-schnell's 23 GB `flux1-schnell.safetensors`) are skipped.

Every file of a snapshot is verified against the name of its blob in the cache, which the hub
sets to the file's sha256 (LFS files) or git blob sha1 (small files); the resolved commit and the
sha256 of every file are returned for the base model's `variant.json`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from tqdm.auto import tqdm

from editrobust.paths import HUB_CACHE

DEFAULT_CACHE = HUB_CACHE
COMMIT = re.compile(r"^[0-9a-f]{40}$")
# Text files a pipeline or dataset needs besides its safetensors / parquet data.
TEXT_PATTERNS = ("*.json", "*.txt", "*.model")
# Precision variants of weight files (diffusers' `variant=`): excluded unless asked for.
WEIGHT_VARIANTS = ("fp16", "bf16", "fp32", "non_ema", "ema")
# A single model repo (a replacement VAE): its config and full-precision safetensors.
MODEL_PATTERNS = dict(allow_patterns=["config.json", "*.safetensors"],
                      ignore_patterns=[f"*.{v}.safetensors" for v in WEIGHT_VARIANTS])


class SnapshotMissing(FileNotFoundError):
    """A pinned snapshot is not on this machine and may not be downloaded (offline mode)."""


class SnapshotCorrupt(ValueError):
    """A cached file does not match the checksum the hub recorded for it."""


def cache_dir() -> Path:
    """The project's hub cache: `$EDITROBUST_HUB_CACHE`, else `resources/hub` (relative to the
    working directory, i.e. the workflow's directory)."""
    return Path(os.environ.get("EDITROBUST_HUB_CACHE") or DEFAULT_CACHE)


def offline() -> bool:
    """Offline mode, read at call time (huggingface_hub reads its constants once, at import)."""
    from huggingface_hub import constants

    def truthy(name: str) -> bool:
        return os.environ.get(name, "").strip().upper() in ("1", "ON", "YES", "TRUE")

    return bool(constants.HF_HUB_OFFLINE) or truthy("HF_HUB_OFFLINE") or truthy("TRANSFORMERS_OFFLINE")


def user_cache_dir() -> Path:
    """The user's Hugging Face hub cache (`$HF_HUB_CACHE`, else `$HF_HOME/hub`, else ~/.cache)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
    return Path(home) / "hub"


def fetch_command(repo_id: str, revision: str, repo_type: str, allow_patterns) -> str:
    include = " ".join(f"--include '{p}'" for p in allow_patterns)
    kind = "" if repo_type == "model" else f" --repo-type {repo_type}"
    return f"hf download {repo_id}{kind} --revision {revision} {include} --cache-dir {cache_dir()}"


def _snapshot_download(**kwargs) -> str:
    # One indirection, so tests can replace the network with a local fake.
    from huggingface_hub import snapshot_download

    return snapshot_download(**kwargs)


def _local_snapshot(repo_id: str, revision: str, repo_type: str, where: Path, patterns: dict) -> Path | None:
    from huggingface_hub.errors import LocalEntryNotFoundError

    if not where.is_dir():
        return None
    try:
        path = _snapshot_download(repo_id=repo_id, repo_type=repo_type, revision=revision, cache_dir=str(where),
                                  local_files_only=True, **patterns)
    except (LocalEntryNotFoundError, FileNotFoundError, OSError, ValueError):
        return None
    path = Path(path)
    # An empty or partial snapshot folder (an interrupted download) does not count.
    return path if path.is_dir() and any(path.iterdir()) else None


def snapshot(repo_id: str, revision: str, *, repo_type: str = "model", allow_patterns=None, ignore_patterns=None,
             owner: str = "", pipeline: bool = False, variant: str | None = None, local_only: bool = False) -> Path:
    """The local directory of `repo_id` at `revision` (see the module docstring for where it is
    looked for). `pipeline=True`: a diffusers pipeline whose components are read from its
    `model_index.json` (fetched first); the patterns are computed here, for weight `variant`.
    `local_only=True`: never the network, as in offline mode (the pre-flight's lookup)."""
    where = f"{owner}: " if owner else ""
    if pipeline:
        index = snapshot(repo_id, revision, repo_type=repo_type, allow_patterns=["model_index.json"], owner=owner,
                         local_only=local_only)
        allow_patterns, ignore_patterns = pipeline_patterns(index / "model_index.json", variant)
    patterns = dict(allow_patterns=list(allow_patterns) if allow_patterns else None,
                    ignore_patterns=list(ignore_patterns) if ignore_patterns else None)
    for candidate in (cache_dir(), user_cache_dir()):
        found = _local_snapshot(repo_id, revision, repo_type, candidate, patterns)
        if found is not None and (not pipeline or _pipeline_complete(found)):
            return found
    if offline() or local_only:
        reason = "offline mode is on (HF_HUB_OFFLINE)" if offline() else "only local files were looked at"
        raise SnapshotMissing(
            f"{where}{repo_type} {repo_id!r} at revision {revision!r} is not in the project cache ({cache_dir()}) "
            f"nor in the Hugging Face cache ({user_cache_dir()}), and {reason}. "
            f"On a machine with internet run the same snakemake command without HF_HUB_OFFLINE, or "
            f"`{fetch_command(repo_id, revision, repo_type, allow_patterns or ['*'])}`, then copy {cache_dir()} here")
    cache_dir().mkdir(parents=True, exist_ok=True)
    return Path(_snapshot_download(repo_id=repo_id, repo_type=repo_type, revision=revision,
                                   cache_dir=str(cache_dir()), **patterns))


def pipeline_patterns(model_index: Path, variant: str | None = None) -> tuple[list[str], list[str]]:
    """allow/ignore patterns for a diffusers pipeline: the components listed in model_index.json,
    their text files and their safetensors weights (of `variant` if given, else the plain ones)."""
    index = json.loads(Path(model_index).read_text())
    components = sorted(k for k, v in index.items() if not k.startswith("_") and isinstance(v, list)
                        and len(v) == 2 and v[0] is not None)
    allow = ["model_index.json"]
    for c in components:
        allow += [f"{c}/{p}" for p in TEXT_PATTERNS]
        allow.append(f"{c}/*.{variant}.safetensors" if variant else f"{c}/*.safetensors")
    ignore = [] if variant else [f"*.{v}.safetensors" for v in WEIGHT_VARIANTS]
    return allow, ignore


def _pipeline_complete(path: Path) -> bool:
    """Every component of model_index.json with weights has its folder (a partial download is not
    taken for a snapshot)."""
    index_file = path / "model_index.json"
    if not index_file.is_file():
        return False
    index = json.loads(index_file.read_text())
    return all((path / k).is_dir() for k, v in index.items() if not k.startswith("_") and isinstance(v, list)
               and len(v) == 2 and v[0] is not None)


# ----------------------------------------------------------------------------------- checksums
def _digest(path: Path, algorithm: str, prefix: bytes = b"") -> str:
    h = hashlib.new(algorithm)
    h.update(prefix)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_and_hash(root: Path) -> dict[str, str]:
    """sha256 of every file under a snapshot `root` (following the cache's symlinks), each checked
    against its blob's name: a 64-hex blob name is the file's sha256 (LFS), a 40-hex one its git
    blob sha1. A mismatch raises SnapshotCorrupt naming the file."""
    out = {}
    root = Path(root)
    files = sorted(p for p in root.rglob("*") if p.is_file())
    for path in tqdm(files, desc=f"hashing {root.name}", unit="file", mininterval=5):
        rel = str(path.relative_to(root))
        if rel.startswith(".") or "/." in rel:
            continue  # huggingface_hub's own metadata (.cache/) in a local_dir
        sha256 = _digest(path, "sha256")
        blob = Path(os.path.realpath(path)).name if path.is_symlink() else ""
        if len(blob) == 64 and re.fullmatch(r"[0-9a-f]{64}", blob) and blob != sha256:
            raise SnapshotCorrupt(f"{path}: sha256 {sha256} differs from the hub's {blob}; delete the file and fetch again")
        if len(blob) == 40 and re.fullmatch(r"[0-9a-f]{40}", blob):
            git_sha1 = _digest(path, "sha1", f"blob {path.stat().st_size}\0".encode())
            if git_sha1 != blob:
                raise SnapshotCorrupt(f"{path}: git blob sha1 {git_sha1} differs from the hub's {blob}; "
                                      "delete the file and fetch again")
        out[rel] = sha256
    return out


def describe_snapshot(repo_id: str, requested: str, path: Path, repo_type: str = "model") -> dict:
    """What a base `variant.json` (or a download manifest) records about a snapshot."""
    path = Path(path)
    resolved = path.name if COMMIT.match(path.name) else None
    return dict(hub_id=repo_id, repo_type=repo_type, requested_revision=requested, revision=resolved,
                path=str(path.resolve()), pinned=bool(COMMIT.match(requested)), checksums=verify_and_hash(path))
