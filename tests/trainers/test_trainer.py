"""The trainer end to end on a real (tiny) model and a real environment."""

import json

import numpy as np
import pytest
import torch

from turngym.agents.models import load_model
from turngym.trainers.rows import Row
from turngym.trainers.trainer import Trainer, ppo_update

TINY = "tiny-markov:hidden=32,layers=1,heads=2,seed=0"
MAIN_JOB_MODEL = "tiny-markov:hidden=64,layers=2,heads=4,seed=0"


def _params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_two_steps_update_the_model_and_write_metrics_checkpoints_evals_and_plot(tmp_path, train_config):
    cfg = train_config("run", run__steps=2)
    trainer = Trainer(cfg)
    before = _params(trainer.model)
    summary = trainer.train()
    after = _params(trainer.model)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    run = tmp_path / "run"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "rollout/reward_mean" in r]
    assert [r["step"] for r in steps] == [1, 2]
    assert all(r["rollout/episodes"] == 12 and "train/clipfrac" in r and "train/entropy" in r for r in steps)
    assert (run / "curves.png").stat().st_size > 10_000
    log_text = (run / "train.log").read_text()  # the run's own log: where its tasks came from, each evaluation
    assert "training on generated tasks" in log_text and "after RL (step 2): held-out success" in log_text
    for label in ("step-000000", "step-000002"):
        results = json.loads((run / "eval" / label / "results.json").read_text())
        assert results["envs"][0]["stats"]["num_tasks"] == 4
        assert (run / "eval" / label / "report.html").is_file()
    assert 0.0 <= summary["eval_before"] <= 1.0 and 0.0 <= summary["eval_after"] <= 1.0
    assert (run / "checkpoints" / "latest").read_text() == "step-000002"
    from turngym.agents import read_jsonl

    samples = list(read_jsonl(run / "samples" / "step-000002.jsonl"))
    assert len(samples) == 4 and all(turn.advantage is not None for t in samples for turn in t.turns)


def test_resume_continues_exactly(tmp_path, train_config):
    straight = Trainer(train_config("straight", run__steps=4))
    straight.train()
    first = Trainer(train_config("split", run__steps=2))
    first.train()
    resumed = Trainer(train_config("split", run__steps=4), resume=True)
    assert resumed.step == 2 and resumed.cursor == first.cursor
    # the tasks are the generated stream's, and the resumed run continues it where it stopped
    assert resumed.tasks.generated and resumed.tasks[resumed.cursor] == straight.tasks[first.cursor]
    resumed.train()
    a, b = _params(straight.model), _params(resumed.model)
    assert all(torch.equal(a[k], b[k]) for k in a), "N steps in one go must equal N/2 + resume + N/2"


def test_micro_batching_does_not_change_the_update(tmp_path, train_config):
    cfg = train_config("mb")
    rng = np.random.default_rng(0)
    rows = [Row(list(rng.integers(4, 200, size=int(n))), list(rng.integers(4, 200, size=int(m))), advantage=float(a))
            for n, m, a in zip(rng.integers(3, 30, 12), rng.integers(1, 12, 12), rng.normal(size=12))]
    results = []
    for budget in (10_000, 40):
        model, _ = load_model(TINY)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        cfg.optim.micro_batch_tokens = budget
        ppo_update(model, opt, [Row(r.prompt_ids, r.response_ids, r.advantage) for r in rows], cfg, 0,
                   torch.device("cpu"), np.random.default_rng(0))
        results.append(_params(model))
    for k in results[0]:
        assert torch.allclose(results[0][k], results[1][k], atol=1e-6), k


def test_warm_start_then_rl_on_the_expert_demonstrations(tmp_path, train_config):
    cfg = train_config("sft", run__steps=1, sft__enabled="true", sft__episodes=200, sft__epochs=30,
                  sft__lr=3e-3, sft__batch_rows=64, run__eval_tasks=50, env__kwargs="{max_turns: 12}",
                  policy__model=MAIN_JOB_MODEL)
    trainer = Trainer(cfg)
    summary = trainer.train()
    assert summary["sft/rows"] > 200 and summary["sft/loss"] < 0.1
    assert summary["eval_before"] == 0.0 and summary["eval_after_sft"] >= summary["eval_before"]
    # held-out imitation: on test maps the model's greedy reply is the solver's move far more
    # often than chance (a quarter)
    import turngym
    from turngym.agents.policy import SamplingParams
    from turngym.trainers.sft import collect_demonstrations

    test_tasks = [t.id for t in turngym.make(cfg.env.id).unwrapped.suite.split("test")[:40]]
    demos = collect_demonstrations(cfg.env.id, test_tasks, trainer.tokenizer, cfg.rollout, cfg.env.kwargs)
    replies = trainer.policy.generate([d.prompt_ids for d in demos], SamplingParams(temperature=0.0, max_tokens=24))
    expert = [trainer.tokenizer.decode(d.response_ids, skip_special_tokens=True) for d in demos]
    accuracy = sum(r.text.strip() == e.strip() for r, e in zip(replies, expert)) / len(demos)
    assert accuracy >= 0.5, accuracy


def test_a_new_run_refuses_a_folder_that_holds_one(tmp_path, train_config):
    Trainer(train_config("taken", run__steps=1)).train()
    with pytest.raises(FileExistsError, match="already holds a run"):
        Trainer(train_config("taken", run__steps=2))


def test_two_identical_commands_train_identical_weights(tmp_path, train_config):
    """A seed fixes the whole run: the warm start is sized in steps, not seconds."""
    params = []
    for name in ("one", "two"):
        cfg = train_config(name, run__steps=2, sft__enabled="true", sft__episodes=20, sft__steps=7)
        trainer = Trainer(cfg)
        summary = trainer.train()
        assert summary["sft/steps"] == 7
        params.append(_params(trainer.model))
    assert all(torch.equal(params[0][k], params[1][k]) for k in params[0])


def test_a_warm_start_that_stops_at_a_validation_target_is_still_fixed_by_the_seed(tmp_path, train_config):
    """``sft.stop_at_success``: greedy checks on validation tasks of their own stream (never a
    held-out task, a demonstration or a training task); where the warm start stops, and the
    weights, depend only on the seed."""
    from turngym.envs.tasks import content_hash

    def run(name, target, check=None):
        trainer = Trainer(train_config(name, run__steps=0, sft__enabled="true", sft__episodes=20, sft__steps=60,
                                       sft__check_every=10, sft__check_from=20, sft__check_tasks=30,
                                       sft__stop_at_success=target))
        if check is not None:
            trainer._validation_check = lambda: check
        summary = trainer.train()
        return summary["sft/steps"], summary["sft/validation_success"], _params(trainer.model), trainer

    steps_a, success_a, params_a, _ = run("a", 1.0)
    steps_b, success_b, params_b, trainer = run("b", 1.0)
    assert steps_a == steps_b == 60 and success_a == success_b  # 1.0 is never reached: checks at 20 to 50
    assert all(torch.equal(params_a[k], params_b[k]) for k in params_a)
    curve = {20: 0.1, 30: 0.2, 40: 0.3}
    steps_c, success_c, _, _ = run("c", 0.25, check=curve.__getitem__)
    assert (steps_c, success_c) == (40, 0.3)  # the first check that reaches the target ends the warm start
    validation = {content_hash(t) for t in trainer.tasks.validation(30)}
    others = trainer.tasks.demonstrations(20) + trainer.next_tasks(200) + trainer.tasks.stream.suite.split("test")
    assert len(validation) == 30 and not validation & {content_hash(t) for t in others}


def test_training_tasks_are_generated_fresh_and_never_held_out(tmp_path, train_config):
    from turngym.envs.tasks import content_hash

    trainer = Trainer(train_config("gen", run__steps=0))
    tasks = trainer.next_tasks(40)
    assert trainer.tasks.generated and trainer.cursor == 40
    held_out = {content_hash(t) for t in trainer.tasks.stream.suite.split("test")}
    frozen_train = {content_hash(t) for t in trainer.tasks.split}
    hashes = [content_hash(t) for t in tasks]
    assert not set(hashes) & held_out
    assert len(set(hashes) - frozen_train) > 20  # beyond the 200 frozen training maps
    # the frozen split stays available as an option
    split = Trainer(train_config("split-src", run__steps=0, env__train_tasks="split"))
    assert {t.id for t in split.next_tasks(200)} == {t.id for t in split.tasks.split}


@pytest.mark.parametrize(("sampler", "configured", "want"), [
    ("recompute", "recompute", "recompute"),
    ("recompute", "rollout", "rollout"),  # optim.old_logprobs: the engine's logprobs, no recompute pass
    ("rollout", "recompute", "rollout"),  # asynchronous rollouts: the engine's, whatever is configured
])
def test_the_update_old_policy_follows_the_sampler_and_the_config(sampler, configured, want):
    from types import SimpleNamespace

    from turngym.trainers.config import TrainConfig

    config = TrainConfig.model_validate({"optim": {"old_logprobs": configured}})
    trainer = SimpleNamespace(sampler=SimpleNamespace(behaviour_logprobs=sampler), config=config)
    assert Trainer._behaviour_logprobs(trainer) == want
