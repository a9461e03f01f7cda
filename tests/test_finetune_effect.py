"""The finetune_effect table: each fine-tune's own task and content accuracy, M vs M_ft."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from editrobust.promptsets import SUBJECT_PROMPTS, toy_promptset
from editrobust.tables import ScoreKey, TableInputError, build_table, input_paths, resolve
from editrobust.tables.finetune_effect import FinetuneEffect


def flag_frame(share: float, column: str, prompts: int = 5, seeds: int = 20, black: int = 0) -> pd.DataFrame:
    """Images of which the first `black` are filtered (flag set, but they must not count), and
    exactly `share` of the others carry the flag (spread over prompts and seeds)."""
    n = prompts * seeds
    counted = np.random.default_rng(0).permutation(np.arange(black, n))
    on = set(counted[: round(share * len(counted))].tolist())
    return pd.DataFrame([dict(prompt_id=f"p{i % prompts}", seed=i // prompts, file=f"{i}.png", black=int(i < black),
                              **{column: int(i < black or i in on)}) for i in range(n)])


def spec_of(**extra):
    entry = dict(kind="finetune_effect", model="toy", finetuners=["lora", "dreambooth"], scorer="oracle", cluster="seed",
                 task={"lora": {"promptset": "style", "column": "in_style"},
                       "dreambooth": {"promptset": "subject", "column": "subject"}},
                 content={"promptset": "concepts", "column": "correct"}, bootstrap_resamples=400, **extra)
    return resolve(entry, {})


def test_task_and_content_of_m_and_m_ft_with_paired_intervals():
    frames = {ScoreKey("toy", "base", "style", "oracle"): flag_frame(0.0, "in_style"),
              ScoreKey("toy", "ft-lora", "style", "oracle"): flag_frame(0.6, "in_style"),
              ScoreKey("toy", "base", "subject", "oracle"): flag_frame(0.0, "subject"),
              ScoreKey("toy", "ft-dreambooth", "subject", "oracle"): flag_frame(0.9, "subject"),
              # black images do not count: the base's content is 0.8 of the counted images
              ScoreKey("toy", "base", "concepts", "oracle"): flag_frame(0.8, "correct", black=30),
              ScoreKey("toy", "ft-lora", "concepts", "oracle"): flag_frame(0.72, "correct"),
              ScoreKey("toy", "ft-dreambooth", "concepts", "oracle"): flag_frame(0.8, "correct")}
    spec = spec_of(names={"lora": "LoRA"})
    assert sorted(set(input_paths(spec))) == sorted(k.path for k in frames)
    t = build_table(spec, frames)
    row = ("LoRA", "in_style (style)")
    assert list(t.index) == [row, ("dreambooth", "subject (subject)")]
    assert t.at[row, ("task", "M")] == 0.0 and t.at[row, ("task", "M_ft")] == pytest.approx(0.6)
    assert t.at[row, ("task", "M_ft lo")] < 0.6 < t.at[row, ("task", "M_ft hi")]
    assert t.at[row, ("content", "M")] == pytest.approx(0.8)
    assert t.at[row, ("content", "M_ft / M")] == pytest.approx(0.9)
    assert t.at[row, ("content", "M_ft / M lo")] < 0.9 < t.at[row, ("content", "M_ft / M hi")]
    assert t.at[("dreambooth", "subject (subject)"), ("task", "M_ft")] == pytest.approx(0.9)


def test_a_missing_column_is_named_and_every_finetuner_needs_a_measure():
    frames = {ScoreKey("toy", v, p, "oracle"): flag_frame(0.5, "other") for v in ("base", "ft-lora", "ft-dreambooth")
              for p in ("style", "subject", "concepts")}
    with pytest.raises(TableInputError, match="no 'in_style' column"):
        build_table(spec_of(), frames)
    config = {"models": {"toy": {}}, "finetuners": {"lora": {}, "full": {}}, "scorers": {"oracle": {}},
              "promptsets": {"style": {}, "concepts": {}}}
    entry = dict(kind="finetune_effect", model="toy", finetuners=["lora", "full"], scorer="oracle",
                 task={"lora": {"promptset": "style", "column": "in_style"}},
                 content={"promptset": "nowhere", "column": "correct"})
    problems = FinetuneEffect.problems("fe", entry, config)
    assert any("no measure for finetuner(s) full" in p for p in problems)
    assert any("content.promptset" in p and "nowhere" in p for p in problems)


def test_toy_style_and_subject_promptsets():
    style = toy_promptset("style")
    assert len(style) == 10 and not style["prompt"].str.contains("anime").any()  # no style words
    subject = toy_promptset("subject")
    assert list(subject["prompt"]) == list(SUBJECT_PROMPTS) and (subject["expected_concept"] == "toy").all()
