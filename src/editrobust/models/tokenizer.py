"""A real CLIP BPE tokenizer, built offline.

The toy world and every tiny test model need a `CLIPTokenizer`, but there is no model hub here.
open_clip ships the BPE merges that OpenAI's CLIP was trained with (`bpe_simple_vocab_16e6.txt.gz`);
from them we write the two files a Hugging Face `CLIPTokenizer` reads (`vocab.json`, `merges.txt`).
The vocabulary is the same 49,408 tokens as SD1.x's tokenizer, so prompts tokenize exactly as
they would on the real model; only `model_max_length` differs (the toy uses 16, not 77).
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

from transformers import CLIPTokenizer

# open_clip keeps the first 49152 - 256 - 2 merges of the file (the rest were never trained).
_N_MERGES = 49152 - 256 - 2
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable-unicode table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def open_clip_bpe_path() -> Path:
    import open_clip.tokenizer

    return Path(open_clip.tokenizer.default_bpe())


def clip_bpe_vocab(bpe_path: str | os.PathLike | None = None) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP's vocabulary and merges, derived from open_clip's BPE file as open_clip derives them."""
    bpe_path = Path(bpe_path) if bpe_path else open_clip_bpe_path()
    lines = gzip.open(bpe_path).read().decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1 : _N_MERGES + 1]]
    tokens = list(_bytes_to_unicode().values())
    tokens = tokens + [t + "</w>" for t in tokens]
    tokens += ["".join(m) for m in merges]
    tokens += [BOS, EOS]
    return {t: i for i, t in enumerate(tokens)}, merges


def build_clip_tokenizer(model_max_length: int = 77) -> CLIPTokenizer:
    """A `CLIPTokenizer` with CLIP's real 49,408-token vocabulary, built without any download.

    Save it with `save_pretrained` next to the model, like any hub tokenizer.
    """
    vocab, merges = clip_bpe_vocab()
    # SD1.x pads with EOS; an unknown token is impossible with byte-level BPE.
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length,
                         bos_token=BOS, eos_token=EOS, unk_token=EOS, pad_token=EOS)
