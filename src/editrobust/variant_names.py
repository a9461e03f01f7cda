"""Variant names: what a model variant is, written as one string. The one home of the grammar.

A variant is the base model M followed by steps applied left to right, joined by "+":

    base                 M itself
    ed-E                 M edited by the editor E                 (E = an `editors` entry)
    ft-F                 M fine-tuned by the finetuner F          (F = a `finetuners` entry)
    ed-E+ft-F            M edited by E, then fine-tuned by F
    ed-E+ft-F+ed-E       ... then edited again by E (re-editing: does it restore the edit?)
    ft-F+ed-E            M fine-tuned by F, then edited by E (editing after a fine-tune)
    <variant>@<step>     the checkpoint at training step <step> of the variant's last step,
                         which must be a fine-tune (e.g. ed-E+ft-F@20)

The grammar also admits other compositions, such as several edits in one model (`ed-A+ed-B`).
The workflow builds those in BUILT_SHAPES; `problems` says so when a config asks for another.

Nothing here imports the rest of the package: rule files, config validation, tables and figures
all spell variant names through this module.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

NAME = "[A-Za-z0-9][A-Za-z0-9_]*"  # an entry name of the config (editor, finetuner, model, ...)
EDIT, FINETUNE = "ed", "ft"
BASE = "base"
_STEP = rf"(?:{EDIT}|{FINETUNE})-{NAME}"
PATTERN = rf"{BASE}|{_STEP}(?:\+{_STEP})*(?:@[0-9]+)?"
# What the `{variant}` wildcard of a rule may match: the characters of PATTERN (checked by parse).
WILDCARD = "[A-Za-z0-9][A-Za-z0-9_.+@-]*"


@dataclass(frozen=True)
class Step:
    kind: str  # EDIT or FINETUNE
    name: str

    def __str__(self) -> str:
        return f"{self.kind}-{self.name}"


@dataclass(frozen=True)
class Variant:
    """A parsed variant name: its steps and, for a checkpoint, the step count."""

    steps: tuple[Step, ...] = ()
    checkpoint: int | None = None

    def __str__(self) -> str:
        name = "+".join(map(str, self.steps)) or BASE
        return f"{name}@{self.checkpoint}" if self.checkpoint is not None else name

    @property
    def parent(self) -> Variant:
        """The variant the last step starts from (a checkpoint's parent is its run's parent)."""
        if not self.steps:
            raise ValueError("base has no parent")
        return Variant(self.steps[:-1])

    @property
    def chain(self) -> list[Variant]:
        """Every variant this one is composed from, base first, itself last."""
        return [Variant(self.steps[:i]) for i in range(len(self.steps))] + [self]

    @property
    def last(self) -> Step | None:
        return self.steps[-1] if self.steps else None

    @property
    def editors(self) -> list[str]:
        return [s.name for s in self.steps if s.kind == EDIT]

    @property
    def finetuners(self) -> list[str]:
        return [s.name for s in self.steps if s.kind == FINETUNE]

    @property
    def shape(self) -> tuple[str, ...]:
        """The kinds of its steps, e.g. ("ed", "ft") for ed-E+ft-F."""
        return tuple(s.kind for s in self.steps)


def parse(name: str) -> Variant:
    """The Variant of a name; ValueError naming the grammar otherwise."""
    if not isinstance(name, str) or not re.fullmatch(PATTERN, name):
        raise ValueError(f"{name!r} is not a variant name (base, ed-<editor>, ft-<finetuner> or steps joined by "
                         "'+' such as ed-<editor>+ft-<finetuner>, optionally @<step> after a fine-tune)")
    body, _, step = name.partition("@")
    if body == BASE:
        return Variant()
    steps = tuple(Step(*part.split("-", 1)) for part in body.split("+"))
    if step and steps[-1].kind != FINETUNE:
        raise ValueError(f"{name!r}: @<step> names a fine-tuning checkpoint, but the last step is not a fine-tune")
    return Variant(steps, int(step) if step else None)


def ed(editor: str) -> str:
    return f"{EDIT}-{editor}"


def ft(finetuner: str) -> str:
    return f"{FINETUNE}-{finetuner}"


def then(parent: str, step: str) -> str:
    """The variant `step` applied to `parent`: then("base", "ft-F") == "ft-F"."""
    return step if parent == BASE else f"{parent}+{step}"


def ed_ft(editor: str, finetuner: str) -> str:
    return then(ed(editor), ft(finetuner))


def re_edit(editor: str, finetuner: str) -> str:
    """ed-E+ft-F+ed-E: the edit applied again to its own fine-tuned model."""
    return then(ed_ft(editor, finetuner), ed(editor))


def ft_ed(finetuner: str, editor: str) -> str:
    """ft-F+ed-E: the fine-tuned base model, edited afterwards."""
    return then(ft(finetuner), ed(editor))


def at_step(variant: str, step: int) -> str:
    return f"{variant}@{step}"


def checkpoint_steps(save_every: int | None, steps: int) -> list[int]:
    """Steps at which a finetuner writes `<variant>@<step>`: multiples of `save_every` below `steps`."""
    every = int(save_every or 0)
    return list(range(every, int(steps), every)) if every > 0 else []


# The compositions the workflow's rules build (the grammar admits more; see the module docstring).
BUILT_SHAPES = {(): "base", (EDIT,): "ed-<editor>", (FINETUNE,): "ft-<finetuner>",
                (EDIT, FINETUNE): "ed-<editor>+ft-<finetuner>",
                (EDIT, FINETUNE, EDIT): "ed-<editor>+ft-<finetuner>+ed-<editor>",
                (FINETUNE, EDIT): "ft-<finetuner>+ed-<editor>"}


def problems(where: str, variant: str, editors: dict, finetuners: dict) -> list[str]:
    """What is wrong with a variant a config asks for, one 'where: ...' line each: not a name, not a
    composition the workflow builds, an unknown editor or finetuner, a checkpoint never saved."""
    try:
        parsed = parse(variant)
    except ValueError as e:
        return [f"{where}: {e}"]
    if parsed.shape not in BUILT_SHAPES:
        return [f"{where}: {variant!r}: the workflow builds {', '.join(BUILT_SHAPES.values())} "
                "(and @<step> checkpoints of a fine-tune), not this composition yet"]
    out = []
    for e in parsed.editors:
        if e not in editors:
            out.append(f"{where}: {variant!r} needs an editor {e!r} (defined: {', '.join(editors) or 'none'})")
    for f in parsed.finetuners:
        if f not in finetuners:
            out.append(f"{where}: {variant!r} needs a finetuner {f!r} (defined: {', '.join(finetuners) or 'none'})")
        elif parsed.checkpoint is not None:
            saved = checkpoint_steps(finetuners[f].get("save_every"), finetuners[f]["steps"])
            if parsed.checkpoint not in saved:
                out.append(f"{where}: {variant!r}: finetuner {f!r} saves no checkpoint at step {parsed.checkpoint} "
                           f"(it saves at: {saved or 'none; set save_every'})")
    return out
