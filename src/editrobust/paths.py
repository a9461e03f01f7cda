"""Where files are: every `results/…` and `resources/…` path template, and matching what a job was
given to what it needs. The one home of paths.

Templates are relative to the working directory and use the names of the workflow's wildcards,
so a rule can declare `paths.SCORES` as its output pattern and the library fill the same template
with `paths.fill(paths.SCORES, model=..., ...)`. `fill` leaves the fields it is not given as
`{field}`, which makes the partial patterns rules need (`fill(VARIANT_JSON, variant="ft-full")`).

A consumer (a table, a figure, an annotation kit) knows from its spec which files it reads.
Snakemake hands the job its input files as a list; `locate` finds each needed file in that list
**by its path**, never by its position, so the order in which a rule listed its inputs cannot
cross them (a table once read the wrong score files that way: its spec was key-sorted in the job
and in config order in the rule).

Nothing here imports the rest of the package.
"""

from __future__ import annotations

import os
import re
import string
from collections.abc import Iterable
from pathlib import Path

# --- models: a variant directory holds variant.json and its delta (models/variants.py) ----------------
VARIANT_DIR = "results/models/{model}/{variant}"
VARIANT_JSON = VARIANT_DIR + "/variant.json"
TRAIN_STATE = "results/train_state/{model}/{variant}"  # a fine-tune's resumable state, outside its outputs
# ReFACT's statistic of the text encoder the edit starts from (a re-edit's is the fine-tuned encoder's)
REFACT_STATISTIC = "results/stats/{model}/{variant}/fc2_second_moment_L{layer}_{corpus}.safetensors"
LATENT_CACHE = "results/cache/{model}/latents_{dataset}.safetensors"
# --- prompts, images, scores ---------------------------------------------------------------------------
PROMPTSET = "results/promptsets/{promptset}.csv"
IMAGE_SET = "{model}/{variant}/{promptset}"
SAMPLES_INDEX = "results/samples/" + IMAGE_SET + "/index.csv"
EMBEDDINGS = "results/embeddings/" + IMAGE_SET + "/{clip_model}.safetensors"
SCORES = "results/scores/" + IMAGE_SET + "/{scorer}.csv"
SUMMARY = "results/summaries/" + IMAGE_SET + "/{scorer}.csv"
REFERENCE = "results/references/{quality_set}"
QUALITY = "results/quality/{model}/{variant}/{quality_set}.csv"
# --- tables, figures, annotation -----------------------------------------------------------------------
TABLE = "results/tables/{table}.{ext}"
TABLE_EXTENSIONS = ("csv", "md", "tex")
# A table's seed planning (tables/power.py, rule table_power): in a folder of its own, so that it
# cannot be read as a table `<table>_power` of make_table's TABLE.
POWER_TABLE = "results/tables/power/{table}.{ext}"
POWER_EXTENSIONS = ("csv", "md")
FIGURE = "results/figures/{figure}.{ext}"
FIGURE_EXTENSIONS = ("png", "pdf", "csv")
KIT_DIR = "results/annotation/{kit}/kit"
KIT_KEY = "results/annotation/{kit}/key.csv"
KIT_AGREEMENT = "results/annotation/{kit}/agreement.csv"
KIT_RETURNED = "annotations/{kit}"  # where annotators' CSVs go (a default of annotation_kits.<name>.returned)
# --- resources: downloads and hub snapshots (fetched once, then read offline) -------------------------
DATASETS = "resources/datasets"
DOWNLOAD_DIR = DATASETS + "/{download}"
MANIFEST = DOWNLOAD_DIR + "/manifest.json"
HUB_CACHE = "resources/hub"
HUB_SNAPSHOT = HUB_CACHE + "/snapshots/{model}.json"


class _KeepMissing(dict):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def fill(template: str, **fields) -> str:
    """`template` with the given fields filled in; the others stay `{field}` (a rule pattern)."""
    return string.Formatter().vformat(template, (), _KeepMissing(fields))


def variant_json(model: str, variant: str) -> str:
    return fill(VARIANT_JSON, model=model, variant=variant)


def samples_index(model: str, variant: str, promptset: str) -> str:
    return fill(SAMPLES_INDEX, model=model, variant=variant, promptset=promptset)


def scores(model: str, variant: str, promptset: str, scorer: str) -> str:
    return fill(SCORES, model=model, variant=variant, promptset=promptset, scorer=scorer)


def quality(model: str, variant: str, quality_set: str) -> str:
    return fill(QUALITY, model=model, variant=variant, quality_set=quality_set)


# The stages whose files sit under results/<stage>/<model>/<variant>/ (an image set's or a variant's).
VARIANT_STAGES = ("models", "samples", "embeddings", "scores", "summaries", "quality")
_VARIANT_FILE = re.compile(rf"results/(?:{'|'.join(VARIANT_STAGES)})/([^/]+)/([^/]+)/")


def model_variant(path: str | os.PathLike) -> tuple[str, str] | None:
    """(model, variant) of a file under results/<stage>/<model>/<variant>/ (a variant's files, its
    samples, embeddings, scores, summaries or quality), else None: what a consumer reads of a variant."""
    found = _VARIANT_FILE.match(_norm(path).replace(os.sep, "/"))
    return (found.group(1), found.group(2)) if found else None


def train_state_dir(variant_dir: str | os.PathLike) -> Path:
    """A fine-tune's resumable state: TRAIN_STATE in the same results/ tree as its variant
    directory, outside the job's outputs, so a killed job's state survives Snakemake's cleanup."""
    variant_dir = Path(variant_dir)
    results = variant_dir.parents[2]
    state = fill(TRAIN_STATE, model=variant_dir.parent.name, variant=variant_dir.name)
    return results / Path(state).relative_to("results")


def table(name: str, ext: str = "csv") -> str:
    return fill(TABLE, table=name, ext=ext)


def figure(name: str, ext: str = "png") -> str:
    return fill(FIGURE, figure=name, ext=ext)


# --- matching a job's inputs ---------------------------------------------------------------------------
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
