"""Registration of the search environment and its packaged suite."""

from __future__ import annotations

from turngym.envs.registration import register
from turngym.envs.tasks import register_suite

ENTRY_POINT = "turngym.envs.search.env:SearchEnv"


def register_all() -> None:
    register_suite(
        "search-multihop",
        "turngym.envs.search.corpus:load_multihop_suite",
        "Multi-hop QA: 200 train (HotpotQA + MuSiQue samples) / 500 test (HotpotQA dev) over a 13.8k-passage corpus",
    )
    register(
        "turngym/Search-v0",
        ENTRY_POINT,
        {"suite": "search-multihop", "max_turns": 10},
        "Multi-hop QA: search a 13.8k-passage corpus (BM25), open passages, answer; EM reward.",
    )
    register(
        "turngym/Search-F1-v0",
        ENTRY_POINT,
        {"suite": "search-multihop", "max_turns": 10, "reward_metric": "f1"},
        "Multi-hop QA search with token-F1 reward.",
    )
