"""What every editor shares besides the delta format (models/components.py): eval mode, concept
lists, prompt-length checks."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch


@contextmanager
def eval_mode(module: torch.nn.Module) -> Iterator:
    """Put a module in eval mode and restore its previous mode (editors must not change the model)."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


def split_concepts(concepts: str | Sequence[str] | None) -> list[str]:
    """A list of concepts; a string is split on ';' like the UCE scripts' CLI (`'A; B'`)."""
    if concepts is None:
        return []
    if isinstance(concepts, str):
        return [c.strip() for c in concepts.split(";")]
    return [str(c).strip() for c in concepts]


def require_nonempty(concepts: Sequence[str], what: str) -> None:
    """`ValueError` for an empty list or an empty concept string (a blank concept is always a typo there)."""
    if not concepts:
        raise ValueError(f"{what}: the list is empty, give at least one concept")
    blank = [i for i, c in enumerate(concepts) if not c.strip()]
    if blank:
        raise ValueError(f"{what}: concept(s) at position(s) {blank} are empty strings: {list(concepts)!r}")


def check_token_length(tokenizer, texts: Sequence[str], max_length: int | None = None, what: str = "concept") -> None:
    """`ValueError` if a text needs more tokens (start/end included) than fit: it would be truncated."""
    max_length = max_length or tokenizer.model_max_length
    for text in texts:
        n = len(tokenizer(text, truncation=False)["input_ids"])
        if n > max_length:
            raise ValueError(f"{what} {text!r} is {n} tokens long (with start/end tokens) but the tokenizer "
                             f"takes at most {max_length}: shorten it")
