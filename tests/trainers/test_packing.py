"""Packed trajectories: turns whose prompt extends an earlier turn's prompt + response are
trained inside one sequence, and the update equals the one-row-per-turn update up to fp32
rounding (docs/algorithms.md, section 0)."""

import copy

import numpy as np
import pytest
import torch

from turngym.agents.models import load_model
from turngym.config import load_config
from turngym.trainers.config import TrainConfig
from turngym.trainers.rows import (
    Row,
    collate_packed,
    pack_rows,
    per_turn,
    rows_from_trajectories,
    share_prompts,
    token_logprobs,
)
from turngym.trainers.trainer import ppo_update

TINY = "tiny-markov:hidden=32,layers=1,heads=2,seed=0"


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def chain_rows(seed: int = 0, trajectories: int = 4, turns: int = 5) -> list[Row]:
    """Full-history trajectories (each prompt = the last prompt + response + a new message),
    some turns with a zero advantage left out as the trainer leaves them out, one windowed
    trajectory whose prompts are not prefixes, all in a shuffled order."""
    rng = np.random.default_rng(seed)
    rows = []
    for t in range(trajectories + 1):
        windowed = t == trajectories
        head = [int(x) for x in rng.integers(4, 200, size=int(rng.integers(4, 12)))]
        ids = list(head)
        for k in range(turns):
            response = [int(x) for x in rng.integers(4, 200, size=int(rng.integers(1, 8)))]
            advantage = 0.0 if (t + k) % 4 == 3 else float(rng.normal())
            logprobs = [float(x) for x in -rng.random(len(response)) * 6]
            if advantage != 0.0:
                rows.append(Row(list(ids), response, advantage, logprobs, traj_id=f"g/{t}"))
            message = [int(x) for x in rng.integers(4, 200, size=int(rng.integers(2, 9)))]
            ids = head + message if windowed else ids + response + message
    return [rows[i] for i in rng.permutation(len(rows))]


def test_pack_rows_joins_prefix_chains_and_keeps_other_turns_apart():
    rows = chain_rows()
    packs = pack_rows(rows)
    assert sorted(id(r) for p in packs for r in p.rows) == sorted(id(r) for r in rows)
    windowed = [r for r in rows if r.traj_id == "g/4"]
    assert sum(p.rows[0].traj_id == "g/4" for p in packs) == len(windowed)  # one sequence per turn
    assert sum(p.rows[0].traj_id != "g/4" for p in packs) == 4  # one sequence per full-history trajectory
    for p in packs:
        assert [len(r.prompt_ids) for r in p.rows] == sorted(len(r.prompt_ids) for r in p.rows)
        for r in p.rows:
            assert p.ids[: len(r)] == r.prompt_ids + r.response_ids
    assert len(pack_rows(rows, pack=False)) == len(rows)


def test_collate_packed_puts_each_turns_values_on_its_own_response_tokens():
    a = Row([5, 6], [7, 8], 2.0, [-1.0, -2.0], traj_id="t")
    b = Row([5, 6, 7, 8, 9], [10], -1.0, [-3.0], traj_id="t")
    (pack,) = pack_rows([b, a])
    assert pack.ids == [5, 6, 7, 8, 9, 10] and pack.rows == [a, b]
    batch = collate_packed([pack], pad_id=0)
    assert batch["response_mask"].tolist() == [[0, 1, 1, 0, 1]]
    assert batch["mask"].tolist() == [[1, 1], [1, 0]]
    assert batch["advantages"].tolist() == [[2.0, 2.0], [-1.0, 0.0]]
    assert batch["rollout_logp"].tolist() == [[-1.0, -2.0], [-3.0, 0.0]]
    positions = torch.arange(5.0)[None]
    assert per_turn(positions, batch)[batch["mask"].bool()].tolist() == [1.0, 2.0, 4.0]


def test_packed_logprobs_equal_per_turn_logprobs():
    model, _ = load_model(TINY)
    rows = chain_rows(seed=1)
    values = {}
    for pack in (True, False):
        packs = pack_rows(rows, pack)
        batch = collate_packed(packs, pad_id=0)
        with torch.no_grad():
            logp, _ = token_logprobs(model, batch)
        order = [id(r) for p in packs for r in p.rows]
        turn = per_turn(logp, batch)
        values[pack] = {key: turn[j, : len(r.response_ids)] for j, (key, r) in
                        enumerate(zip(order, (r for p in packs for r in p.rows)))}
    assert values[True].keys() == values[False].keys()
    diff = max(float((values[True][k] - values[False][k]).abs().max()) for k in values[True])
    assert diff <= 1e-5


CONFIGS = {
    "token-mean": [],
    "seq-mean-token-mean": ["loss.loss_agg=seq-mean-token-mean"],
    "seq-mean-token-sum": ["loss.loss_agg=seq-mean-token-sum"],
    "dr-grpo": ["loss.loss_agg=seq-mean-token-sum-norm"],
    "gspo": ["loss.ratio=sequence", "loss.loss_agg=seq-mean-token-mean", "loss.eps_low=0.0003", "loss.eps_high=0.0004"],
    "kl-entropy": ["loss.use_kl=true", "loss.kl_coef=0.1", "loss.entropy_coef=0.01"],
    "epochs-minibatches": ["optim.ppo_epochs=2", "optim.mini_batches=2", "optim.micro_batch_tokens=60",
                           "optim.grad_clip=0.5"],
}


def one_update(rows: list[Row], overrides: list[str], **kwargs) -> tuple[dict, dict]:
    """One ``ppo_update`` (SGD at lr 1) from fresh tiny weights: the weight change and the metrics."""
    cfg = load_config(TrainConfig, None, overrides)
    model, _ = load_model(TINY)
    base = {k: v.clone() for k, v in model.state_dict().items()}
    ref = copy.deepcopy(model).requires_grad_(False) if cfg.loss.use_kl else None
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    metrics = ppo_update(model, optimizer, copy.deepcopy(rows), cfg, 0, torch.device("cpu"),
                         np.random.default_rng(0), ref_model=ref, **kwargs)
    return {k: v - base[k] for k, v in model.state_dict().items()}, metrics


def assert_same_update(got: tuple[dict, dict], want: tuple[dict, dict]) -> None:
    """Weight changes equal within fp32 rounding (relative to the largest), metrics too."""
    (deltas, metrics), (want_deltas, want_metrics) = got, want
    size = max(float(d.abs().max()) for d in want_deltas.values())
    assert size > 1e-3, "the update must move the weights"
    for key in deltas:
        assert torch.allclose(deltas[key], want_deltas[key], atol=1e-5 * size, rtol=0), key
    for key in ("train/loss", "train/pg_loss", "train/clipfrac", "train/entropy"):
        assert metrics[key] == pytest.approx(want_metrics[key], rel=1e-4, abs=1e-6), key


@pytest.mark.parametrize("name", list(CONFIGS))
def test_the_packed_update_equals_the_per_turn_update(name):
    rows = chain_rows(seed=2)
    assert_same_update(one_update(rows, CONFIGS[name], pack=True), one_update(rows, CONFIGS[name], pack=False))


@pytest.mark.parametrize("layout", ["chains", "groups"])
def test_micro_batching_does_not_change_the_update(layout):
    # one micro-batch, or about one sequence each (chains); every group joined in one micro-batch,
    # or groups split over several (groups: shared prompts)
    rows, small = (chain_rows(seed=3), 40) if layout == "chains" else (group_rows(seed=3), 120)
    assert_same_update(one_update(rows, [f"optim.micro_batch_tokens={small}"]),
                       one_update(rows, ["optim.micro_batch_tokens=10000"]))


def test_resume_continues_exactly_on_the_packed_path(train_config):
    from turngym.trainers.trainer import Trainer

    # the plain tiny model's chat template renders the whole conversation (tiny-markov's only the last message)
    full = {"rollout__memory": "full", "env__kwargs": "{max_turns: 4, invalid_penalty: 0.1}",
            "policy__model": "tiny:hidden=32,layers=1,heads=2,seed=0"}
    straight = Trainer(train_config("straight", run__steps=4, **full))
    straight.train()
    trajectories = straight.last_trajectories
    turns = sum(len(t.turns) for t in trajectories)
    assert turns > len(trajectories)  # multi-turn episodes, packed one sequence per trajectory
    assert len(pack_rows(rows_from_trajectories(trajectories, [1.0] * turns))) == len(trajectories)
    Trainer(train_config("split", run__steps=2, **full)).train()
    resumed = Trainer(train_config("split", run__steps=4, **full), resume=True)
    resumed.train()
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), "N steps in one go must equal N/2 + resume + N/2"


# -- a group's shared first prompt, computed once (share_prompts) -------------------------------


def group_rows(seed: int = 0, groups: int = 3, samples: int = 4) -> list[Row]:
    """Single-turn groups (one long prompt, short replies: what share_prompts joins), two-turn
    full-history groups with a long first prompt, and trajectories whose later turns outweigh
    their first prompt (left as they are), shuffled."""
    rng = np.random.default_rng(seed)

    def tokens(low: int, high: int) -> list[int]:
        return [int(x) for x in rng.integers(4, 200, size=int(rng.integers(low, high)))]

    rows = []
    for g in range(groups):
        for kind, turns, prompt_len, reply_len in (("single", 1, (20, 30), (1, 9)), ("two", 2, (30, 40), (2, 6)),
                                                   ("long", 3, (3, 6), (8, 14))):
            prompt = tokens(*prompt_len)
            for s in range(samples):
                ids = list(prompt)
                for k in range(turns):
                    reply = tokens(*reply_len)
                    advantage = float(rng.normal())
                    rows.append(Row(list(ids), reply, advantage, [float(x) for x in -rng.random(len(reply)) * 6],
                                    group_id=f"{kind}{g}", traj_id=f"{kind}{g}/{s}"))
                    ids = ids + reply + tokens(2, 5)
    return [rows[i] for i in rng.permutation(len(rows))]


def test_share_prompts_joins_prompt_dominated_groups_within_the_budget():
    packs = pack_rows(group_rows())
    shared = share_prompts(packs, budget=10_000)
    assert sorted(id(r) for p in shared for r in p.rows) == sorted(id(r) for p in packs for r in p.rows)
    joined = [p for p in shared if p.branches]
    kinds = {p.rows[0].group_id[:-1] for p in joined}
    assert kinds == {"single", "two"}, "the long trajectories' first prompt is the smaller part: kept apart"
    for pack in joined:
        prompt = pack.branches[0][0]
        assert len(pack.branches) == 4 and len({r.group_id for r in pack.rows}) == 1
        assert pack.ids[:prompt] == pack.rows[0].prompt_ids
        for i, row in enumerate(pack.rows):  # each row's response sits where its shift says
            start = len(row.prompt_ids) + pack.shift(i)
            assert pack.ids[start:start + len(row.response_ids)] == row.response_ids
        assert len(pack) == prompt + sum(end - start for start, end in pack.branches)
    small = share_prompts(packs, budget=50)
    assert all(len(p) <= 50 for p in small if p.branches)
    assert len(small) > len(shared), "groups that do not fit are split (or left alone)"
    assert sorted(id(r) for p in small for r in p.rows) == sorted(id(r) for p in packs for r in p.rows)


def test_shared_prompt_logprobs_equal_per_turn_logprobs():
    model, _ = load_model(TINY)
    rows = group_rows(seed=1)
    values = {}
    for share in (True, False):
        packs = pack_rows(rows, pack=share)
        packs = share_prompts(packs, 10_000) if share else packs
        assert any(p.branches for p in packs) == share
        batch = collate_packed(packs, pad_id=0)
        with torch.no_grad():
            logp, entropy = token_logprobs(model, batch, with_entropy=True)
        turn, turn_entropy = per_turn(logp, batch), per_turn(entropy, batch)
        ordered = [r for p in packs for r in p.rows]
        values[share] = {id(r): (turn[j, : len(r.response_ids)], turn_entropy[j, : len(r.response_ids)])
                         for j, r in enumerate(ordered)}
    assert values[True].keys() == values[False].keys()
    for key, (logp, entropy) in values[True].items():
        assert torch.allclose(logp, values[False][key][0], atol=1e-5, rtol=0)
        assert torch.allclose(entropy, values[False][key][1], atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["token-mean", "seq-mean-token-sum", "gspo", "kl-entropy", "epochs-minibatches"])
def test_the_shared_prompt_update_equals_the_per_turn_update(name, monkeypatch):
    import turngym.trainers.update as update

    joined = []  # what the update's own sharing returned: the comparison must not be vacuous

    def spy(packs, budget):
        out = share_prompts(packs, budget)
        joined.append(sum(len(p.rows) for p in out if p.branches))
        return out

    monkeypatch.setattr(update, "share_prompts", spy)
    rows = group_rows(seed=2)
    shared = one_update(rows, [*CONFIGS[name], "optim.share_prompts=true"])
    assert joined and all(n > 0 for n in joined)
    calls = len(joined)
    unshared = one_update(rows, [*CONFIGS[name], "optim.share_prompts=false"])
    assert len(joined) == calls, "share_prompts=false must not share"
    assert_same_update(shared, unshared)


def test_shared_prompts_are_used_only_where_the_model_takes_their_masks():
    from turngym.trainers.rows import takes_branch_masks

    model, _ = load_model(TINY)
    assert takes_branch_masks(model)
    model.config._attn_implementation = "eager"
    assert not takes_branch_masks(model)


def with_model_logprobs(rows: list[Row]) -> list[Row]:
    """``rows`` whose rollout logprobs are the fresh tiny model's own (what a rollout engine that
    is the training model records)."""
    model, _ = load_model(TINY)
    rows = copy.deepcopy(rows)
    for row in rows:
        with torch.no_grad():
            logits = model(torch.tensor([row.prompt_ids + row.response_ids])).logits[0].float()
        logp = torch.log_softmax(logits, dim=-1)[len(row.prompt_ids) - 1: -1]
        row.rollout_logprobs = logp.gather(-1, torch.tensor(row.response_ids)[:, None]).squeeze(-1).tolist()
    return rows


def test_rollout_old_logprobs_skip_the_recompute_pass_and_give_the_same_update():
    rows = with_model_logprobs(chain_rows(seed=4))
    overrides = CONFIGS["epochs-minibatches"]
    forwards = {"recompute": 0, "rollout": 0}
    for mode in forwards:
        real_forward = torch.nn.Module.__call__

        def counting(module, *args, _mode=mode, **kwargs):
            if hasattr(module, "lm_head") and not torch.is_grad_enabled():
                forwards[_mode] += 1  # a no-grad pass of the whole model: the recompute pass
            return real_forward(module, *args, **kwargs)

        torch.nn.Module.__call__ = counting
        try:
            result = one_update(rows, overrides, behaviour_logprobs=mode)
        finally:
            torch.nn.Module.__call__ = real_forward
        if mode == "recompute":
            want = result
        else:
            got = result
    assert forwards["recompute"] > 0 and forwards["rollout"] == 0
    assert_same_update(got, want)
    # the gap to the engine's logprobs is measured either way (here: float rounding only)
    assert 0 <= got[1]["train/rollout_train_gap_abs_max"] < 1e-4
    assert 0 <= want[1]["train/rollout_train_gap_abs_max"] < 1e-4


def test_rollout_old_logprobs_are_the_ratio_denominator():
    # engine logprobs far from the model's: the ratio is taken against them, so the first step
    # clips where the recomputed denominator would not
    rows = chain_rows(seed=5)  # random "engine" logprobs
    got = one_update(rows, CONFIGS["epochs-minibatches"], behaviour_logprobs="rollout")[1]
    want = one_update(rows, CONFIGS["epochs-minibatches"], behaviour_logprobs="recompute")[1]
    assert got["train/rollout_train_gap_abs_max"] > 0.5
    assert got["train/clipfrac"] > want["train/clipfrac"]
