"""SQuAD answer normalisation, exact match and F1 on worked examples."""

import pytest

from turngym.envs.search.metrics import (
    exact_match,
    f1,
    normalize_answer,
    score_answer,
    tool_cost_factor,
)


@pytest.mark.parametrize(
    ("text", "normalised"),
    [
        ("The Quick, Brown Fox!", "quick brown fox"),
        ("  an   apple a day ", "apple day"),
        ("Chief of Protocol.", "chief of protocol"),
        ("U.S.A.", "usa"),
        ("theatre", "theatre"),  # "the" only as a whole word
        ("", ""),
    ],
)
def test_normalize_answer_matches_squad(text, normalised):
    assert normalize_answer(text) == normalised


def test_exact_match_ignores_case_punctuation_and_articles():
    assert exact_match("the Denver Broncos", "Denver Broncos") == 1.0
    assert exact_match("Denver Broncos!", "denver broncos") == 1.0
    assert exact_match("Broncos", "Denver Broncos") == 0.0


def test_f1_worked_example():
    # pred -> "cat sat on mat" (4 tokens), gold -> "cat on mat" (3); common 3
    # P = 3/4, R = 3/3, F1 = 2 * 0.75 * 1 / 1.75 = 6/7
    assert f1("the cat sat on the mat", "cat on the mat") == pytest.approx(6 / 7)
    # repeated tokens count with multiplicity: pred "x y y", gold "y y y z": common 2 -> P 2/3, R 2/4
    assert f1("x y y", "y y y z") == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
    assert f1("nothing shared", "entirely different") == 0.0


def test_yes_no_never_partially_match():
    assert f1("yes", "no") == 0.0
    assert f1("yes it is", "yes") == 0.0  # a yes/no gold is matched exactly or not at all
    assert f1("maybe no", "maybe yes") == pytest.approx(0.5)  # ordinary answers overlap as usual
    assert f1("no", "no") == 1.0


def test_best_score_over_gold_answers():
    scores = score_answer("Stanley Hall", ["G. Stanley Hall", "Stanley Hall"])
    assert scores == {"em": 1.0, "f1": 1.0}
    scores = score_answer("Hall", ["G. Stanley Hall"])
    assert scores["em"] == 0.0 and scores["f1"] == pytest.approx(0.5)  # P 1, R 1/3 -> 0.5
    assert score_answer("anything", []) == {"em": 0.0, "f1": 0.0}


def test_tool_cost_factor():
    assert tool_cost_factor(0, 0.1) == 1.0
    assert tool_cost_factor(3, 0.1) == pytest.approx(0.7)
    assert tool_cost_factor(20, 0.1) == 0.0
    assert tool_cost_factor(5, 0.0) == 1.0
    with pytest.raises(ValueError):
        tool_cost_factor(1, -0.5)
