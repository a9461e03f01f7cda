"""Atomic file output: a failed or killed job never leaves a half-written file under its final name."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _publish_mode(path: Path, directory: bool) -> None:
    """mkstemp/mkdtemp create private (0600/0700) entries; give outputs the usual umask modes so
    collaborators on a shared cluster can read them."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


def _temp_prefix(path: Path) -> str:
    return f".{path.name}."


def remove_stale_temps(path: Path) -> None:
    """Remove what an earlier write of `path` left behind when its process was killed (SIGKILL
    skips the cleanup below): `.<name>.<8 random characters>.tmp` siblings. Only one job writes a
    given output at a time (Snakemake's guarantee), so any such sibling is stale."""
    pattern = re.compile(re.escape(_temp_prefix(path)) + r"[a-z0-9_]{8}\.tmp")
    for stale in path.parent.glob(f"{_temp_prefix(path)}*.tmp"):
        if pattern.fullmatch(stale.name):
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    stale.unlink()


# A write that fails for lack of room: the job's error must name the output, which the OS's own
# message ("[Errno 28] No space left on device") does not.
NO_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def _errno(error: BaseException) -> int | None:
    """The OS error number of a failed write: an OSError's, or the one a native writer names in its
    message (safetensors' Rust serializer: "I/O error: No space left on device (os error 28)")."""
    if isinstance(error, OSError):
        return error.errno
    found = re.search(r"\(os error (\d+)\)", str(error))
    return int(found.group(1)) if found else None


def _no_room(error: BaseException, path: Path, tmp: Path) -> OSError | None:
    number = _errno(error)
    if number not in NO_ROOM:
        return None
    return OSError(number, f"{os.strerror(number)} while writing {path} (the partial {tmp.name} was removed; free "
                           f"space on {path.parent} and re-run)", str(path))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path next to `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        _publish_mode(Path(tmp), directory=False)
        os.replace(tmp, path)
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        named = _no_room(error, path, Path(tmp))
        if named is not None:
            raise named from error
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike):
    """Yield a temporary directory; on success it replaces `path` (whose old contents are dropped)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        _publish_mode(tmp, directory=True)
        old = None
        if path.exists():
            # Move the old directory aside in one rename (onto an empty temp directory), so a kill
            # never leaves it half-deleted under its final name; a stale one is removed next time.
            old = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent))
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException as error:
        shutil.rmtree(tmp, ignore_errors=True)
        named = _no_room(error, path, tmp)
        if named is not None:
            raise named from error
        raise


def write_text(path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path, data) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_csv(path, df) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, lineterminator="\n")


def save_png(path, image: np.ndarray) -> None:
    Image.fromarray(image).save(path, format="PNG")


def load_image(path) -> np.ndarray:
    """An RGB uint8 array; a missing or corrupt file is an error that names it."""
    try:
        with Image.open(path) as im:
            im.load()
            return np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise FileNotFoundError(f"image not found: {path}") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ValueError(f"corrupt or unreadable image {path}: {e}") from None


def read_text_csv(path, error: type[Exception], what: str):
    """A CSV with every cell as text ("None" or "NA" stay text; an empty cell is ""). A missing or
    unreadable file raises `error` naming `what` and the path."""
    import pandas as pd

    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise error(f"{what} not found: {path}") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise error(f"{path}: malformed {what}: {e}") from None


def read_samples_index(path, error: type[Exception]):
    """A sampled image set's `index.csv` (prompt_id as text; prompt_id, seed and file required).
    A missing file or column raises `error` naming the path."""
    import pandas as pd

    try:
        index = pd.read_csv(path, dtype={"prompt_id": str})
    except FileNotFoundError:
        raise error(f"samples index not found: {path}") from None
    missing = [c for c in ("prompt_id", "seed", "file") if c not in index.columns]
    if missing:
        raise error(f"{path}: missing column(s) {', '.join(missing)}")
    return index
