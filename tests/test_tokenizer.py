import open_clip
import pytest

from editrobust.models.tokenizer import build_clip_tokenizer

PROMPTS = ["a photo of a CEO", "a naked person in the grass", "an anime drawing of a lime",
           "Hairdresser, laughing!", "the King's new   clothes", "a photo of sks toy", "café au lait 123"]


@pytest.fixture(scope="module")
def tok():
    return build_clip_tokenizer(77)


@pytest.mark.parametrize("prompt", PROMPTS)
def test_tokenizes_like_open_clip(tok, prompt):
    ours = tok(prompt).input_ids
    theirs = open_clip.get_tokenizer("ViT-B-32")([prompt])[0].tolist()
    assert ours == theirs[: len(ours)]
    assert all(t == 0 for t in theirs[len(ours):])  # open_clip pads with 0, SD pads with EOS


def test_real_clip_vocabulary_and_specials(tok):
    assert len(tok) == 49408
    assert tok.bos_token_id == 49406 and tok.eos_token_id == 49407 and tok.pad_token_id == 49407


def test_round_trips_as_a_standard_clip_tokenizer(tmp_path):
    from transformers import CLIPTokenizer

    tok = build_clip_tokenizer(16)
    tok.save_pretrained(tmp_path)
    again = CLIPTokenizer.from_pretrained(tmp_path)
    assert again.model_max_length == 16
    enc = again("a male lawyer on a table", padding="max_length", max_length=16).input_ids
    assert enc == tok("a male lawyer on a table", padding="max_length", max_length=16).input_ids
    assert len(enc) == 16 and enc[-1] == 49407
