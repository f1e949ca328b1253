"""The prover environments: registration, conformance, proof and tactic mode, suites."""

from __future__ import annotations

import json
import shutil
from collections.abc import Hashable

import pytest
from gymnasium.utils.env_checker import check_env
from turngym.envs import EnvUnavailable
from turngym.envs.prover.env import LeanEnv, parse_reply
from turngym.envs.prover.suites import load_coq_core, load_lean4_core, load_minif2f_jsonl
from turngym.sandboxes.provers.lean import lean_cheat, lean_proof_body

import turngym

needs_coq = pytest.mark.skipif(shutil.which("coqc") is None, reason="coqc is not installed (apt-get install coq)")


@pytest.mark.parametrize("load", [load_coq_core, load_lean4_core])
def test_suites_have_fifty_statements_with_reference_proofs_and_both_splits(load):
    suite = load()
    assert len(suite) >= 50 and set(suite.splits()) == {"train", "test"} and suite.splits()["test"] >= 12
    assert all(t.answer and t.metadata["statement"] for t in suite)


def test_lean_reference_proofs_are_clean_proof_bodies():
    for task in load_lean4_core():
        body, refused = lean_proof_body(task.answer, task.metadata["statement"])
        assert refused is None and lean_cheat(body) is None, task.id


def test_minif2f_style_jsonl_loads(tmp_path):
    path = tmp_path / "minif2f.jsonl"
    path.write_text(json.dumps({"name": "mathd_1", "split": "valid", "header": "import Mathlib",
                                "formal_statement": "theorem mathd_1 (x : ℝ) (h : 2 * x = 4) : x = 2 := by sorry"}) + "\n")
    suite = load_minif2f_jsonl(path)
    task = suite.get("mathd_1")
    assert task.metadata == {"statement": "(x : ℝ) (h : 2 * x = 4) : x = 2", "header": "import Mathlib"}
    assert task.split == "valid"


def test_reply_parsing():
    assert parse_reply("Here:\n```coq\nintros. auto.\n```\n", "coq") == ("intros. auto.", "")
    assert parse_reply("by simp", "lean") == ("by simp", "")
    assert parse_reply("```lean\nfoo\n```\n```lean\nbar\n```", "lean", single=True)[0] is None
    assert parse_reply("   ", "coq")[0] is None
    assert parse_reply("\x00 not a proof", "coq")[0] is None


def test_all_four_envs_are_registered():
    envs = turngym.registered_envs()
    for env_id in ("turngym/Coq-v0", "turngym/Coq-Tactic-v0", "turngym/Lean-v0", "turngym/Lean-Tactic-v0"):
        assert env_id in envs and envs[env_id]


def test_lean_envs_construct_without_lean_and_fail_on_reset_with_one_sentence():
    env = turngym.make("turngym/Lean-v0", prover_config={"command": ["no-such-lake", "env", "repl"]})
    with pytest.raises(EnvUnavailable, match=r"^Lean is not installed: `no-such-lake` is not on PATH[^\n]*\)$"):
        env.reset(seed=0)


@needs_coq
@pytest.mark.parametrize("env_id", ["turngym/Coq-v0", "turngym/Coq-Tactic-v0"])
def test_coq_envs_pass_the_conformance_checks(env_id):
    env = turngym.make(env_id)
    check_env(env.unwrapped, skip_render_check=True)
    first = env.reset(seed=7)
    again = env.reset(seed=7)
    assert first == again  # deterministic under the seed
    obs, info = first
    assert isinstance(info["task_id"], str) and isinstance(info["anchor"], Hashable)
    for action in env.unwrapped.example_actions():
        obs, reward, terminated, truncated, info = env.step(action)
        assert isinstance(obs, str) and isinstance(info["action_valid"], bool) and isinstance(info["anchor"], Hashable)
        assert isinstance(info["success"], bool) if terminated or truncated else True
        if not action:
            assert info["action_valid"] is False and obs.startswith("Invalid reply:") and reward == 0.0
    env.close()


def play(env, task_id, actions):
    env.reset(seed=0, options={"task": task_id})
    return [env.step(a) for a in actions]


@needs_coq
def test_proof_mode_repairs_after_errors_and_scores_cheats_zero():
    env = turngym.make("turngym/Coq-v0")
    task = env.unwrapped.suite.get("coq/add_0_r")
    (obs1, r1, t1, _, i1), (obs2, r2, t2, _, i2) = play(env, task.id, ["intros n. reflexivity.", f"```coq\n{task.answer}\n```"])
    assert (r1, t1, i1["success"]) == (0.0, False, False) and "Unable to unify" in obs1
    assert i1["anchor"] == (task.id, obs1.split("\n", 1)[1])
    assert (r2, t2, i2["success"]) == (1.0, True, True)
    # the same actions give the same observations
    assert [s[0] for s in play(env, task.id, ["intros n. reflexivity."])] == [obs1]
    (obs, reward, terminated, _, info), = play(env, task.id, ["intros n. Admitted."])
    assert reward == 0.0 and not terminated and info["cheat"] == "Admitted" and not info["success"]
    env.close()


@needs_coq
def test_tactic_mode_solves_with_goals_as_observations_and_anchors():
    env = turngym.make("turngym/Coq-Tactic-v0")
    obs, info = env.reset(seed=0, options={"task": "coq/and_comm"})
    assert "Goals:\n============================\nforall P Q : Prop, P /\\ Q -> Q /\\ P" in obs
    steps = [env.step(a) for a in ["intros P Q [HP HQ].", "exact HQ.", "split.", "exact HQ.", "exact HP."]]
    (o1, _, _, _, i1), (o2, _, _, _, i2), (o3, _, _, _, i3), _, (o5, r5, t5, _, i5) = steps
    assert o1.startswith("Goals:\nP, Q : Prop\nHP : P\nHQ : Q\n") and i1["action_valid"]
    assert o2.startswith("Error:") and i2["action_valid"] and i2["anchor"] == i1["anchor"]  # failed tactic: state unchanged
    assert o3.count("goal") == 0 and i3["anchor"] != i1["anchor"]
    assert (r5, t5, i5["success"]) == (1.0, True, True)
    env.close()


@needs_coq
def test_tactic_mode_partial_credit_on_closed_goals():
    env = turngym.make("turngym/Coq-Tactic-v0", max_turns=3, partial_credit=0.5)
    steps = play(env, "coq/and_comm", ["intros P Q [HP HQ].", "split.", "exact HQ."])
    *_, (obs, reward, terminated, truncated, info) = steps
    assert truncated and not terminated and reward == pytest.approx(0.25) and not info["success"]


def test_lean_env_runs_end_to_end_over_a_replayed_repl(crafted_lean):
    statement = "(n : Nat) : n + 0 = n"
    prover = crafted_lean([
        ({"cmd": f"theorem turngym_goal {statement} := by simp"}, {"env": 0}),
        ({"cmd": "#print axioms turngym_goal", "env": 0},
         {"messages": [{"severity": "info", "data": "'turngym_goal' does not depend on any axioms"}], "env": 0}),
    ])
    env = LeanEnv(suite="lean4-core", prover=prover)
    obs, info = env.reset(seed=0, options={"task": "lean4/add_zero"})
    assert "theorem goal (n : Nat) : n + 0 = n := by" in obs
    assert env.step("```lean\nby native_decide\n```")[4]["cheat"] == "native_decide"
    obs, reward, terminated, _, info = env.step("```lean\nby simp\n```")
    assert (reward, terminated, info["success"]) == (1.0, True, True)
    env.close()
