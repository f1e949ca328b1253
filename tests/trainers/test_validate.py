"""`turngym train` checks the whole config before anything heavy: one sentence, exit 2, in
seconds, and nothing written."""

import time

import pytest

from turngym.cli import main


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["estimator.name=bogus"], "estimator.name: unknown estimator 'bogus'"),
        (["estimator.name=gigpoo"], "did you mean 'gigpo'?"),
        (["estimator.options.bogus=1"], "estimator.options.bogus: the grpo estimator takes no argument 'bogus'"),
        (["estimator.name=gigpo", "estimator.options.gamma=abc"], "estimator.options.gamma='abc': Input should be a valid number"),
        (["env.kwargs.foo=1"], "env.kwargs.foo: turngym/Sokoban-v0 takes no argument 'foo'"),
        (["env.kwargs.max_turn=3"], "did you mean 'max_turns'?"),
        (["env.kwargs.max_turns=abc"], "env.kwargs.max_turns='abc': Input should be a valid integer"),
        (["env.id=turngym/Search-v0", "env.kwargs.default_k=abc"], "env.kwargs: turngym/Search-v0 refused its arguments"),
        (["env.id=turngym/Sokobann-v0"], "env.id: no environment named 'turngym/Sokobann-v0'; did you mean"),
        (["env.eval_split=dev"], "env.eval_split: suite 'sokoban-6x6-1' has no split 'dev'"),
        (["policy.device=bogus"], "policy.device: 'bogus' is not a device"),
        (["policy.device=cuda:99"], "policy.device=cuda:99:"),
        (["policy.model=no-such-model"], "policy.model: unknown model 'no-such-model'"),
        (["rollout.backend=bogus"], "rollout.backend: unknown backend 'bogus' (known: ray, thread)"),
        (["rollout.memory=bogus"], "rollout.memory: unknown memory strategy 'bogus'"),
        (["run.out_dir="], "run.out_dir is empty"),
        (["run=3"], "override 'run=3': run is a section, not a value"),
        (["run.overlong_cache_tokens=500", "rollout.max_tokens=64"], "run.overlong_cache_tokens=500 exceeds"),
        (["env.id=turngym/Search-v0", "env.train_tasks=generated"], "env.train_tasks: suite 'search-multihop' of "
         "turngym/Search-v0 has no task generator"),
        (["env.train_tasks=generated", "multitask.key=optimal_moves"], "env.train_tasks: MT-GRPO"),
        (["env.train_tasks=bogus"], "env.train_tasks"),
    ],
)
def test_a_bad_config_is_one_sentence_in_seconds_and_writes_nothing(tmp_path, capsys, overrides, message):
    out = tmp_path / "run"
    argv = ["train", "--out", str(out)] if overrides != ["run.out_dir="] else ["train"]
    start = time.perf_counter()
    code = main([*argv, *(a for o in overrides for a in ("--set", o))])
    seconds = time.perf_counter() - start
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists() and not any(tmp_path.iterdir())
    assert seconds < 10, f"the check took {seconds:.1f}s"


def test_cuda_on_a_machine_without_one_is_one_sentence(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    assert main(["train", "--out", str(tmp_path / "run"), "--set", "policy.device=cuda"]) == 2
    assert "policy.device=cuda: this machine has no CUDA GPU" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
