"""Search-v0 through the real agent loop: a (tiny, random) language model plays episodes end to end."""

import pytest

from turngym.agents.models import load_policy
from turngym.agents.rollout import RolloutConfig, rollout
from turngym.envs import load_suite


@pytest.mark.slow
def test_a_language_model_plays_search_episodes_end_to_end():
    policy = load_policy("tiny:hidden=32,layers=1,heads=2,seed=0")
    tasks = [t.id for t in load_suite("search-multihop").split("test")[:2]]
    config = RolloutConfig(group_size=2, max_turns=2, max_tokens=12, progress=False, seed=0, concurrency=2)
    trajs = rollout(policy, "turngym/Search-v0", tasks, tokenizer=policy.tokenizer, config=config)
    assert len(trajs) == 4 and all(t.status != "error" for t in trajs), [t.error for t in trajs]
    for traj in trajs:
        assert traj.task_id in tasks and len(traj.turns) == 2  # a random model never answers
        for turn in traj.turns:
            assert turn.response_ids and len(turn.logprobs) == len(turn.response_ids)
            assert turn.action_valid is False and "Invalid reply" in turn.observation
            assert turn.stratum == 0 and list(turn.anchor[1]) == []
        assert "search(query, k)" in traj.turns[0].prompt_text  # the tool schemas reach the prompt
