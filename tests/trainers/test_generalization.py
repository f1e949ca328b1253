"""The memorisation warning: training success climbing while held-out success does not."""

import pytest

from turngym.trainers.generalization import memorisation_warning, window_mean


def test_the_newcomers_run_is_flagged():
    # the run from the issue: training 45% -> 80%, held-out 53% -> 48%
    warning = memorisation_warning(0.45, 0.80, 0.53, 0.48, held_out_high_now=0.58)
    assert warning is not None and "45% -> 80%" in warning and "53% -> 48%" in warning


@pytest.mark.parametrize(
    "train_start, train_now, held_start, held_now, high",
    [
        (0.45, 0.50, 0.53, 0.40, None),  # training barely moved: nothing to say
        (0.30, 0.60, 0.30, 0.55, None),  # held-out followed training
        (0.30, 0.60, 0.30, 0.38, 0.46),  # held-out's interval reaches a third of the rise
    ],
)
def test_no_warning_when_held_out_keeps_up(train_start, train_now, held_start, held_now, high):
    assert memorisation_warning(train_start, train_now, held_start, held_now, high) is None


def test_window_mean():
    points = [(1, 0.0), (2, 1.0), (3, 1.0), (4, 0.0)]
    assert window_mean(points, 2, 3) == 1.0
    assert window_mean(points, 1, 4) == 0.5
    assert window_mean(points, 9, 10) is None
