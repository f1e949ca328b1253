"""The turn table: one order for the estimator, the rows and the advantages written back, and
estimator columns reaching the estimators whose signature names them."""

import numpy as np
import pytest

from turngym.agents.trajectory import Trajectory, Turn
from turngym.trainers.estimators import (
    ESTIMATORS,
    EstimatorError,
    estimate,
    estimate_columns,
    register_estimator,
)
from turngym.trainers.rows import rows_from_table
from turngym.trainers.turns import TurnTable


def _traj(tid, group, rewards, valid=None, responses=None):
    valid = valid or [True] * len(rewards)
    responses = responses or [[7] * (i + 1) for i in range(len(rewards))]
    turns = [Turn(step=i, prompt_ids=[1, 2, 3 + i], response_ids=resp, logprobs=[-0.5] * len(resp), reward=r,
                  anchor=f"s{i}", stratum=i, action_valid=v)
             for i, (r, v, resp) in enumerate(zip(rewards, valid, responses))]
    return Trajectory(traj_id=tid, group_id=group, task_id=f"task-{group}", turns=turns)


def test_the_table_is_one_row_per_turn_trajectory_by_trajectory():
    trajs = [_traj("a", "g", [0.0, 1.0], valid=[True, False]), _traj("b", "g", [0.5])]
    table = TurnTable.from_trajectories(trajs)
    assert len(table) == 3 and table.traj_ids == ["a", "a", "b"] and table.task_ids == ["task-g"] * 3
    assert table.rewards.tolist() == [0.0, 1.0, 0.5] and table.steps.tolist() == [0, 1, 0]
    assert table.action_valid.tolist() == [True, False, True]
    assert table.response_lengths.tolist() == [1, 2, 1] and table.prompt_lengths.tolist() == [3, 3, 3]
    columns = table.estimator_columns()
    assert columns["anchors"] == ["s0", "s1", "s0"] and columns["strata"] == [0, 1, 0]


def test_the_table_interns_anchors_and_gigpo_groups_the_codes():
    """The table codes each anchor once (equal codes exactly for equal anchors, whatever object
    holds them); GiGPO through the columns gives the advantages of the raw anchors, bit for bit."""
    trajs = [_traj("a", "g", [0.0, 1.0, 0.0]), _traj("b", "g", [0.5, 0.0]), _traj("c", "h", [1.0, 0.0])]
    for i, turn in enumerate(turn for t in trajs for turn in t.turns):
        turn.anchor = (f"q{i % 2}", (f"d{turn.step}", f"d{turn.step + 1}"))  # fresh strings per turn
    table = TurnTable.from_trajectories(trajs)
    assert table.anchor_codes.tolist() == [0, 1, 2, 3, 4, 3, 4]  # codes are per table; GiGPO pairs them with groups
    columns = table.estimator_columns()
    assert columns["anchor_codes"] is table.anchor_codes
    want = estimate("gigpo", table.rewards, table.group_ids, table.traj_ids, table.steps, anchors=table.anchors)
    assert estimate_columns("gigpo", columns).tolist() == want.tolist()


def test_rows_and_advantages_follow_the_table_order():
    trajs = [_traj("a", "g", [0.0, 1.0], responses=[[7], []]), _traj("b", "g", [0.5], responses=[[8, 9]])]
    table = TurnTable.from_trajectories(trajs)
    adv = np.array([0.25, -1.0, 0.0])
    table.write_advantages(adv)
    assert [turn.advantage for t in trajs for turn in t.turns] == [0.25, -1.0, 0.0]
    rows = rows_from_table(table, adv)  # the turn without a response has no row
    assert [(r.traj_id, r.response_ids, r.advantage) for r in rows] == [("a", [7], 0.25), ("b", [8, 9], 0.0)]
    kept = rows_from_table(table, adv, drop_zero=True)
    assert [(r.traj_id, r.advantage, r.rollout_logprobs) for r in kept] == [("a", 0.25, [-0.5])]
    with pytest.raises(ValueError, match="2 advantages for 3 turns"):
        rows_from_table(table, adv[:2])


@pytest.fixture
def column_probe():
    """A registered estimator that names the action_valid column, removed afterwards."""
    seen = {}

    def probe(batch, *, action_valid=None, scale=1.0):
        seen["action_valid"] = action_valid
        return scale * np.where(np.asarray(action_valid), 1.0, -1.0)

    register_estimator("column_probe", probe)
    yield seen
    del ESTIMATORS["column_probe"]


def test_an_estimator_gets_the_columns_its_signature_names(column_probe):
    table = TurnTable.from_trajectories([_traj("a", "g", [0.0, 1.0], valid=[True, False])])
    adv = estimate_columns("column_probe", table.estimator_columns(), scale=2.0)
    assert adv.tolist() == [2.0, -2.0] and column_probe["action_valid"].tolist() == [True, False]
    with pytest.raises(EstimatorError, match="action_valid is a per-row column"):
        estimate_columns("column_probe", table.estimator_columns(), action_valid=[True, True])
    # an estimator that does not name it does not get it
    assert estimate_columns("grpo", table.estimator_columns()).tolist() == estimate(
        "grpo", table.rewards, table.group_ids, table.traj_ids, table.steps).tolist()


def test_gigpo_invalid_penalty_reads_action_valid_from_the_table():
    trajs = [_traj("a", "g", [0.0, 1.0], valid=[False, True]), _traj("b", "g", [0.0, 0.0])]
    table = TurnTable.from_trajectories(trajs)
    columns = table.estimator_columns()
    got = estimate_columns("gigpo", columns, invalid_penalty=0.5)
    want = estimate("gigpo", table.rewards, table.group_ids, table.traj_ids, table.steps, anchors=table.anchors,
                    invalid_penalty=0.5, action_valid=table.action_valid)
    assert got.tolist() == want.tolist()
    assert not np.allclose(got, estimate_columns("gigpo", columns))


def test_reinforce_pp_whitens_over_the_tables_response_tokens():
    trajs = [_traj("a", "g", [1.0], responses=[[7, 7, 7]]), _traj("b", "g", [0.0], responses=[[8]]),
             _traj("c", "h", [0.0, 1.0], responses=[[9], [9, 9]])]
    table = TurnTable.from_trajectories(trajs)
    got = estimate_columns("reinforce_pp", table.estimator_columns())
    want = estimate("reinforce_pp", table.rewards, table.group_ids, table.traj_ids, table.steps,
                    token_counts=[3, 1, 1, 2])
    assert got.tolist() == want.tolist()
    assert got.tolist() != estimate("reinforce_pp", table.rewards, table.group_ids, table.traj_ids, table.steps).tolist()
