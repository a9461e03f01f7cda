"""Black images (the NSFW filter's blackouts) do not count in ReFACT's efficacy, as the study
computes it "after removing black images"."""

import numpy as np
import pandas as pd
import pytest

from editrobust.tables.load import TableInputError
from editrobust.tables.refact import EditScores, edit_scores


def _scores(black):
    # efficacy: 4 images, 2 successes, one of the failures black; generality 2 of 2
    return pd.DataFrame({"prompt_id": ["e0", "e0", "e1", "e1", "g0", "g1"], "seed": [0, 1, 0, 1, 0, 0],
                         "metric": ["efficacy"] * 4 + ["generality"] * 2, "success": [1, 1, 0, 0, 1, 1],
                         **({"black": black} if black is not None else {})})


def test_edit_scores_leave_black_images_out():
    assert edit_scores(_scores(None))["efficacy"] == 0.5  # no flag: every image counts
    assert edit_scores(_scores([0, 0, 1, 0, 0, 0]))["efficacy"] == pytest.approx(2 / 3)
    assert edit_scores(_scores([1, 1, 1, 1, 0, 0]))["generality"] == 1.0
    assert np.isnan(edit_scores(_scores([1, 1, 1, 1, 0, 0]))["efficacy"])  # nothing left to count
    with pytest.raises(TableInputError, match="black"):
        edit_scores(_scores([0, 0, 0.5, 0, 0, 0]))


def test_bootstrap_cells_count_black_images_as_absent_not_as_failures():
    frame = _scores([0, 0, 1, 0, 0, 0])
    scores = EditScores.__new__(EditScores)
    scores.frames = {"M": frame}
    cells = scores.cells("M", "efficacy", ("prompt_id",), None)
    assert list(cells.num) == [2.0, 0.0] and list(cells.den) == [2.0, 1.0]  # e1 keeps one image
