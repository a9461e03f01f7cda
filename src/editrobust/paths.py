"""Where files are: matching what a job was given to what it needs.

A consumer (a table, a figure, an annotation kit) knows from its spec which files it reads, as
paths relative to the working directory (`results/scores/...`). Snakemake hands the job its input
files as a list; `locate` finds each needed file in that list **by its path**, never by its
position, so the order in which a rule listed its inputs cannot cross them (a table once read the
wrong score files that way: its spec was key-sorted in the job and in config order in the rule).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path


class InputMismatchError(ValueError):
    """The files a job was given are not the files it needs; the message names them."""


def _norm(path: str | os.PathLike) -> str:
    return os.path.normpath(os.fspath(path))


def locate(needed: Iterable[str], given: Iterable[str | os.PathLike], what: str = "job") -> dict[str, Path]:
    """{needed path: the given path that is that file}.

    A given path is a needed file when it is that relative path, or ends with it after a '/'
    (the same tree under another root, as in tests). Every needed file must be given exactly
    once and every given file must be needed: otherwise `InputMismatchError` names the missing,
    unexpected or ambiguous files.
    """
    given = list(dict.fromkeys(_norm(p) for p in given))
    exact = set(given)
    found: dict[str, Path] = {}
    used: set[str] = set()
    missing, ambiguous = [], []
    for want in dict.fromkeys(needed):
        rel = _norm(want)
        matches = [rel] if rel in exact else [g for g in given if g.endswith(os.sep + rel)]
        if not matches:
            missing.append(rel)
        elif len(matches) > 1:
            ambiguous.append(f"{rel} ({', '.join(matches)})")
        else:
            found[want] = Path(matches[0])
            used.add(matches[0])
    unexpected = [g for g in given if g not in used]
    problems = []
    if missing:
        problems.append(f"needs {len(missing)} file(s) it was not given: {', '.join(missing[:10])}")
    if ambiguous:
        problems.append(f"was given several files for: {'; '.join(ambiguous[:10])}")
    if unexpected:
        problems.append(f"was given {len(unexpected)} file(s) it does not read: {', '.join(unexpected[:10])}")
    if problems:
        raise InputMismatchError(f"{what} " + "; ".join(problems))
    return found
