"""A stand-in for the Hugging Face hub: "remote" repos are local folders, and a fetch writes them into
a cache in the real hub cache layout (blobs named by sha256 / git sha1, snapshot symlinks, refs),
which the real `huggingface_hub.snapshot_download(local_files_only=True)` then reads."""

from __future__ import annotations

import fnmatch
import hashlib
import os
from pathlib import Path


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()


def _matches(rel: str, allow, ignore) -> bool:
    if allow is not None and not any(fnmatch.fnmatch(rel, p) for p in allow):
        return False
    return not (ignore and any(fnmatch.fnmatch(rel, p) for p in ignore))


def populate(cache_dir: Path, repo_id: str, repo_type: str, commit: str, remote: Path, allow=None, ignore=None,
             branch: str = "main") -> Path:
    """Write the files of `remote` matching the patterns as snapshot `commit` of `repo_id`."""
    folder = Path(cache_dir) / f"{repo_type}s--{repo_id.replace('/', '--')}"
    snap = folder / "snapshots" / commit
    for path in sorted(p for p in Path(remote).rglob("*") if p.is_file()):
        rel = str(path.relative_to(remote))
        if not _matches(rel, allow, ignore):
            continue
        data = path.read_bytes()
        # the hub names LFS blobs (weights) by sha256 and git-stored files by their git sha1
        blob_name = hashlib.sha256(data).hexdigest() if rel.endswith(".safetensors") else git_blob_sha1(data)
        blob = folder / "blobs" / blob_name
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snap / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(os.path.relpath(blob, link.parent))
    snap.mkdir(parents=True, exist_ok=True)
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / branch).write_text(commit)
    return snap


class FakeHub:
    """`remotes[(repo_type, repo_id)] = (commit, folder)`; use `install(monkeypatch)`."""

    def __init__(self):
        self.remotes: dict[tuple[str, str], tuple[str, Path]] = {}
        self.downloads: list[dict] = []

    def add(self, repo_id: str, folder: Path, commit: str, repo_type: str = "model") -> None:
        self.remotes[(repo_type, repo_id)] = (commit, Path(folder))

    def snapshot_download(self, *, repo_id, repo_type=None, revision=None, cache_dir=None, local_files_only=False,
                          allow_patterns=None, ignore_patterns=None, **kw):
        from huggingface_hub import snapshot_download

        repo_type = repo_type or "model"
        if not local_files_only:
            if (repo_type, repo_id) not in self.remotes:
                raise FileNotFoundError(f"fake hub: no repo {repo_id}")
            commit, folder = self.remotes[(repo_type, repo_id)]
            if revision not in (commit, "main"):
                raise FileNotFoundError(f"fake hub: {repo_id} has no revision {revision}")
            self.downloads.append(dict(repo_id=repo_id, revision=revision, allow=allow_patterns, ignore=ignore_patterns))
            populate(Path(cache_dir), repo_id, repo_type, commit, folder, allow_patterns, ignore_patterns)
        return snapshot_download(repo_id=repo_id, repo_type=repo_type, revision=revision, cache_dir=cache_dir,
                                 local_files_only=True, allow_patterns=allow_patterns, ignore_patterns=ignore_patterns)

    def install(self, monkeypatch) -> "FakeHub":
        from editrobust import hub

        monkeypatch.setattr(hub, "_snapshot_download", self.snapshot_download)
        return self
