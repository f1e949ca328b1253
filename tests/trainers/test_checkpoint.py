"""Checkpoints round-trip: a saved policy evaluates outside training exactly as it did inside."""

import json
import warnings

import gymnasium as gym
import pytest

from turngym.agents.models import POLICY_CARD, load_model, saved_eval_settings
from turngym.cli import main
from turngym.envs import Task, TaskSuite, TurnEnv
from turngym.trainers.trainer import Trainer


def _episodes(folder):
    """(task, run) -> every turn's prompt and reply, from an evaluation's trajectories.jsonl."""
    out = {}
    for line in (folder / "trajectories.jsonl").read_text().splitlines():
        data = json.loads(line)
        out[(data["task_id"], data["run"])] = [(t["prompt_text"], t["response_text"]) for t in data["turns"]]
    return out


def test_a_trained_checkpoint_evaluates_as_it_did_in_training(tmp_path, train_config, capsys):
    # sampled evaluation (not greedy) and env kwargs unlike the defaults: each must come from the card
    cfg = train_config("rt", run__steps=2, run__eval_temperature=0.7, run__eval_runs=2)
    Trainer(cfg).train()
    run = tmp_path / "rt"
    model_dir = run / "checkpoints" / "step-000002" / "model"
    card = saved_eval_settings(str(model_dir))
    assert card["rollout"]["temperature"] == 0.7 and card["rollout"]["stop"] == ["</action>"]
    assert card["env"]["kwargs"] == {"max_turns": 6, "invalid_penalty": 0.1}

    _, tokenizer = load_model(str(model_dir))
    _, trained_with = load_model(cfg.policy.model)
    assert tokenizer.chat_template == trained_with.chat_template  # no tool block added on reload
    step_dir = model_dir.parent  # the step folder names the model saved inside it
    assert saved_eval_settings(str(step_dir)) == card
    assert load_model(str(step_dir))[1].chat_template == tokenizer.chat_template

    out = tmp_path / "cli-eval"
    assert main(["eval", "--env", cfg.env.id, "--policy", str(model_dir), "--runs", "2", "--max-tasks", "4",
                 "--out", str(out), "--quiet", "--no-report"]) == 0
    inside, outside = _episodes(run / "eval" / "step-000002"), _episodes(out)
    assert inside == outside  # the same prompts, and the same sampled replies to them
    training = json.loads((run / "eval" / "step-000002" / "results.json").read_text())["envs"][0]["stats"]
    cli = json.loads((out / "results.json").read_text())["envs"][0]["stats"]
    assert cli["pass1"]["mean"] == training["pass1"]["mean"] and cli["mean_reward"] == training["mean_reward"]


def test_a_checkpoint_without_a_card_keeps_its_template(tmp_path, train_config):
    """Checkpoints written before policy cards: ``model/`` beside ``trainer_state.json``."""
    Trainer(train_config("old", run__steps=0)).train()
    model_dir = tmp_path / "old" / "checkpoints" / "step-000000" / "model"
    (model_dir / POLICY_CARD).unlink()
    _, tokenizer = load_model(str(model_dir))
    _, trained_with = load_model(train_config("x").policy.model)
    assert tokenizer.chat_template == trained_with.chat_template


def test_resume_from_a_checkpoint_of_another_model_shape_is_one_sentence(tmp_path, train_config, capsys):
    out = tmp_path / "shape"
    base = ["--set", "env.id=turngym/FrozenLake-v0", "--set", "run.steps=0", "--set", "run.tensorboard=false",
            "--set", "run.eval_tasks=1", "--set", "rollout.max_tokens=4", "--set", "rollout.progress=false",
            "--out", str(out)]
    assert main(["train", *base, "--set", "policy.model=tiny-markov:hidden=32,layers=1,heads=2"]) == 0
    capsys.readouterr()
    assert main(["train", *base, "--set", "run.steps=1", "--set", "policy.model=tiny-markov:hidden=64,layers=1,heads=2",
                 "--resume"]) == 2
    err = capsys.readouterr().err
    assert "holds a model of another shape: hidden_size 32 (this model: 64)" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_generation_raises_no_deprecation_warning():
    from turngym.agents.hf import HFPolicy
    from turngym.agents.policy import SamplingParams

    model, tokenizer = load_model("tiny:hidden=32,layers=1,heads=2")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # transformers' FutureWarnings about the project's own calls
        HFPolicy(model, tokenizer).generate([[5, 6, 7]], SamplingParams(temperature=0.0, max_tokens=3))


@pytest.fixture(autouse=True)
def _hf_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


# -- the run folder's lifecycle ---------------------------------------------------------------------
def _train(out, *overrides, resume=False):
    # as tests/trainers/conftest.py: GiGPO with an invalid-reply penalty gives a random model rows to train on
    base = ["env.id=turngym/FrozenLake-v0", "env.kwargs={max_turns: 6, invalid_penalty: 0.1}", f"policy.model={TINY}",
            "run.tensorboard=true", "run.eval_tasks=2", "run.eval_every=0", "run.tasks_per_step=2",
            "rollout.group_size=4", "rollout.max_tokens=24", "rollout.stop=['</action>']", "rollout.memory=window",
            "rollout.memory_window=0", "rollout.progress=false", "rollout.concurrency=0", "optim.lr=1e-3",
            "estimator.name=gigpo"]
    argv = ["train", "--out", str(out), *(a for o in (*base, *overrides) for a in ("--set", o))]
    return main([*argv, "--resume"] if resume else argv)


TINY = "tiny-markov:hidden=32,layers=1,heads=2,seed=0"


def test_a_folder_without_a_checkpoint_starts_afresh_and_says_so(tmp_path, capsys):
    out = tmp_path / "killed"
    (out / "eval" / "step-000000").mkdir(parents=True)  # what a run killed before its first checkpoint leaves
    (out / "metrics.jsonl").write_text('{"step": 0, "eval/success_rate": 0.0}\n')
    (out / "notes.txt").write_text("mine")
    assert _train(out, "run.steps=0") == 0
    assert "holds no checkpoint (a run stopped before its first): starting it afresh" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "mine"  # only what a run writes is removed
    assert [r["step"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())] == [0, 0]

    empty = tmp_path / "empty"
    assert _train(empty, "run.steps=0", resume=True) == 0
    assert "holds no checkpoint to resume from: starting afresh" in capsys.readouterr().err


def _tensorboard_steps(folder, tag):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return [e.step for e in acc.Scalars(tag)]


def test_resume_logs_every_step_once(tmp_path):
    out = tmp_path / "resumed"
    assert _train(out, "run.steps=3", "run.checkpoint_every=2") == 0
    # killed after logging step 3, before its checkpoint: the latest complete one is step 2
    (out / "checkpoints" / "latest").write_text("step-000002")
    assert _train(out, "run.steps=3", "run.checkpoint_every=2", resume=True) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_steps = [r["step"] for r in rows if "rollout/reward_mean" in r]
    assert train_steps == [1, 2, 3]
    assert _tensorboard_steps(out / "tensorboard", "rollout/reward_mean") == [1, 2, 3]


class _Flat(TurnEnv):
    """One turn, reward 0 whatever the reply: every group's rewards are equal. ``broken``: every
    step raises instead (an environment whose backend is gone)."""

    def __init__(self, broken: bool = False, **kw):
        tasks = [Task(id=f"t{i}", split=split) for i, split in enumerate(["train", "train", "test"])]
        super().__init__(suite=TaskSuite("flat", tasks), split="train", max_turns=1, **kw)
        self.broken = broken

    def _reset_task(self, task):
        return "say anything", {}

    def _step(self, action):
        if self.broken:
            raise RuntimeError("the backend went away")
        return "ok", 0.0, True, {"success": False}


gym.register("testonly/Flat-v0", _Flat, disable_env_checker=True)  # not listed by `turngym envs`


@pytest.mark.parametrize(("broken", "reason"), [
    ("false", "in all 2 step(s) every group had equal rewards, so every advantage was zero"),
    ("true", "every one of the 16 training episodes ended in an environment error"),
])
def test_a_run_that_trained_on_nothing_fails_with_the_reason(tmp_path, capsys, broken, reason):
    assert _train(tmp_path / "flat", "env.id=testonly/Flat-v0", f"env.kwargs={{broken: {broken}}}", "run.steps=2") == 1
    assert f"the run trained on nothing: {reason}" in capsys.readouterr().err
