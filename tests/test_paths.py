"""paths.locate: a job's input files are found by their path, never by their position."""

from __future__ import annotations

import pytest

from editrobust.paths import InputMismatchError, locate

NEEDED = ["results/scores/m/base/p/s.csv", "results/scores/m/ed-e/p/s.csv"]


def test_files_are_found_by_path_in_any_order_and_under_another_root(tmp_path):
    given = [str(tmp_path / p) for p in reversed(NEEDED)]
    found = locate(NEEDED, given)
    assert {k: str(v) for k, v in found.items()} == {p: str(tmp_path / p) for p in NEEDED}
    assert {k: str(v) for k, v in locate(NEEDED, list(reversed(NEEDED))).items()} == {p: p for p in NEEDED}


def test_a_missing_or_unexpected_file_is_named():
    with pytest.raises(InputMismatchError, match=r"table needs 1 file\(s\) it was not given: results/scores/m/ed-e/p/s.csv"):
        locate(NEEDED, NEEDED[:1], what="table")
    with pytest.raises(InputMismatchError, match=r"given 1 file\(s\) it does not read: results/scores/m/ft-f/p/s.csv"):
        locate(NEEDED, [*NEEDED, "results/scores/m/ft-f/p/s.csv"])
    # the same count but one file crossed for another: both are named
    with pytest.raises(InputMismatchError, match=r"not given: results/scores/m/ed-e/p/s.csv.*does not read: x/s.csv"):
        locate(NEEDED, [NEEDED[0], "x/s.csv"])


def test_two_candidates_for_one_file_are_an_error(tmp_path):
    with pytest.raises(InputMismatchError, match="several files for: results/scores/m/base/p/s.csv"):
        locate(NEEDED[:1], [f"a/{NEEDED[0]}", f"b/{NEEDED[0]}"])


def test_the_model_and_variant_of_a_file_a_consumer_reads():
    from editrobust.paths import model_variant

    assert model_variant("results/scores/sd14/ed-e+ft-f@100/i2p50/zs.csv") == ("sd14", "ed-e+ft-f@100")
    assert model_variant("results/samples/toy/base/p/index.csv") == ("toy", "base")
    assert model_variant("results/quality/sd14/ft-f/coco.csv") == ("sd14", "ft-f")
    assert model_variant("results/tables/table1.csv") is None and model_variant("resources/hub/x/y/z") is None
