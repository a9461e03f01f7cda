"""UCE debias's `keep`: the best measured iteration (ours) or the last update (UCE's script)."""

import pytest

from editrobust.editors.uce import uce_debias

pytestmark = pytest.mark.usefixtures("one_thread")


def _run(pipe, keep, max_iterations, labels=("male",) * 4):
    return uce_debias(pipe, ["a doctor", "a nurse"], classify=lambda images: list(labels),
                      generate=lambda p, concept: [None] * len(labels), max_iterations=max_iterations, keep=keep,
                      progress=False)


def test_keep_best_drops_an_update_nothing_measured_better(tiny_sd1):
    delta, log = _run(tiny_sd1, "best", 1)
    assert delta == {} and log[0]["selected"] and len(log) == 1


def test_keep_last_returns_the_last_update_as_ucess_script_saves_it(tiny_sd1):
    delta, log = _run(tiny_sd1, "last", 1)
    assert delta and log[-1]["selected"] and log[-1]["kept_update_after"]
    again, _ = _run(tiny_sd1, "last", 2)  # a second measurement of the same (constant) labels, one more update
    changed = [name for name in delta if not all((again[name][k] - delta[name][k]).abs().max() == 0 for k in delta[name])]
    assert changed  # the controller kept integrating the same gap: the last update moved further


def test_keep_last_of_a_converged_loop_is_the_converged_weights(tiny_sd1):
    delta, log = _run(tiny_sd1, "last", 5, labels=("male", "female", "male", "female"))
    assert delta == {} and log[0]["selected"] and not log[0]["kept_update_after"]


def test_keep_must_be_best_or_last(tiny_sd1):
    with pytest.raises(ValueError, match="keep must be"):
        _run(tiny_sd1, "first", 1)
