"""Answer scoring as in the official SQuAD v1.1 evaluation script (also used by HotpotQA).

``normalize_answer``: lower-case, drop punctuation, drop the articles a/an/the, collapse
whitespace. ``exact_match`` compares normalised strings; ``f1`` is the token-overlap F1 of the
normalised strings (bag of tokens). Against several gold answers the best score counts
(``max_over_golds``). HotpotQA's script adds one rule kept here: when either side normalises
to yes / no / noanswer and the two differ, F1 is 0 (a "yes" is not partially "no").
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Callable, Iterable

__all__ = ["exact_match", "f1", "max_over_golds", "normalize_answer", "score_answer", "tool_cost_factor"]

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCT = set(string.punctuation)
_SPECIAL = ("yes", "no", "noanswer")


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower, remove punctuation, articles and extra whitespace."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def f1(prediction: str, gold: str) -> float:
    """Token-level F1: precision = common / |pred|, recall = common / |gold|, F1 = 2PR / (P + R)."""
    pred, ref = normalize_answer(prediction), normalize_answer(gold)
    if (pred in _SPECIAL or ref in _SPECIAL) and pred != ref:
        return 0.0
    pred_tokens, ref_tokens = pred.split(), ref.split()
    common = sum((Counter(pred_tokens) & Counter(ref_tokens)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred_tokens), common / len(ref_tokens)
    return 2 * precision * recall / (precision + recall)


def max_over_golds(metric: Callable[[str, str], float], prediction: str, golds: Iterable[str]) -> float:
    """The best ``metric(prediction, gold)`` over the gold answers (0 when there are none)."""
    return max((metric(prediction, g) for g in golds), default=0.0)


def score_answer(prediction: str, golds: str | Iterable[str]) -> dict[str, float]:
    """``{"em": ..., "f1": ...}`` of ``prediction`` against one or several gold answers."""
    golds = [golds] if isinstance(golds, str) else list(golds)
    return {"em": max_over_golds(exact_match, prediction, golds), "f1": max_over_golds(f1, prediction, golds)}


def tool_cost_factor(tool_calls: int, cost: float) -> float:
    """OTC-style tool-use discount: ``max(0, 1 - cost * tool_calls)``.

    Multiplies the answer's correctness, so among correct answers fewer tool calls earn more,
    while a wrong answer is not made worse by searching (after OTC, Wang et al. 2025, "Acting
    Less is Reasoning More", which scales the correctness reward by a tool-efficiency term).
    """
    if cost < 0:
        raise ValueError("the tool cost must be >= 0")
    return max(0.0, 1.0 - cost * tool_calls)
