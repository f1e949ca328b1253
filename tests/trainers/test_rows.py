import numpy as np
import pytest
import torch

from turngym.agents.trajectory import Trajectory, Turn
from turngym.trainers.rows import (
    Row,
    collate,
    estimator_inputs,
    micro_batches,
    rows_from_trajectories,
    token_logprobs,
)


def _traj(tid, group, rewards, anchors):
    turns = [Turn(step=i, prompt_ids=[1, 2, 3 + i], response_ids=[7] * (i + 1), logprobs=[-0.5] * (i + 1),
                  reward=r, anchor=a) for i, (r, a) in enumerate(zip(rewards, anchors))]
    return Trajectory(traj_id=tid, group_id=group, task_id=group, turns=turns)


def test_one_row_per_turn_with_its_own_prompt_and_advantage():
    trajs = [_traj("a", "g", [0, 1], ["s0", "s1"]), _traj("b", "g", [0], ["s0"])]
    inputs = estimator_inputs(trajs)
    assert inputs["traj_ids"] == ["a", "a", "b"] and inputs["steps"].tolist() == [0, 1, 0]
    assert inputs["anchors"] == ["s0", "s1", "s0"] and inputs["rewards"].tolist() == [0, 1, 0]
    rows = rows_from_trajectories(trajs, [0.5, 1.5, -1.0])
    assert [r.prompt_ids for r in rows] == [[1, 2, 3], [1, 2, 4], [1, 2, 3]]
    assert [r.response_ids for r in rows] == [[7], [7, 7], [7]]
    assert [r.advantage for r in rows] == [0.5, 1.5, -1.0]


@pytest.mark.parametrize("lengths,budget", [([5, 100, 7, 30, 31, 2], 64), ([10] * 50, 100), ([300, 1], 64)])
def test_micro_batches_cover_every_row_once_within_budget(lengths, budget):
    batches = micro_batches(lengths, budget)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(len(lengths)))
    for b in batches:
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= budget


def test_short_rows_do_not_pay_for_long_ones():
    lengths = [200] + [10] * 40
    batches = micro_batches(lengths, 400)
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    assert len(batches) == 2 and padded == 400 + 390  # vs 41 * 200 = 8200 padded to the longest


def test_collate_aligns_masks_and_per_token_values_with_next_token_logprobs():
    rows = [Row([5, 6], [7, 8, 9], advantage=2.0, old_logprobs=[-1, -2, -3]), Row([5], [4], advantage=-1.0)]
    batch = collate(rows, pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9], [5, 4, 0, 0, 0]]
    assert batch["response_mask"].tolist() == [[0, 1, 1, 1], [1, 0, 0, 0]]
    assert batch["advantages"].tolist() == [[0, 2, 2, 2], [-1, 0, 0, 0]]
    assert batch["old_logp"].tolist() == [[0, -1, -2, -3], [0, 0, 0, 0]]


def test_token_logprobs_match_a_manual_forward():
    torch.manual_seed(0)
    vocab = 11

    class Toy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(vocab, vocab)

        def forward(self, input_ids, attention_mask):
            return type("Out", (), {"logits": self.emb(input_ids)})

    model = Toy()
    rows = [Row([1, 2], [3, 4]), Row([5], [6])]
    batch = collate(rows, pad_id=0)
    logp, entropy = token_logprobs(model, batch, with_entropy=True)
    table = torch.log_softmax(model.emb.weight, -1)
    assert torch.allclose(logp[0, 1:3], torch.stack([table[2, 3], table[3, 4]]))
    assert torch.allclose(logp[1, 0], table[5, 6])
    assert np.isclose(entropy[1, 0].item(), -(table[5].exp() * table[5]).sum().item(), atol=1e-6)
