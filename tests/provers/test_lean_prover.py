"""LeanProver's checks (whole proofs, tactic mode, cheats) over crafted REPL replies in the
REPL's own framing, and against a real Lean where one is installed (marker ``lean``)."""

from __future__ import annotations

import os
import shutil

import pytest
from turngym.sandboxes.provers.lean import LeanConfig, LeanProver, lean_cheat, lean_proof_body

STATEMENT = "(n : Nat) : n + 0 = n"
SOURCE = f"theorem turngym_goal {STATEMENT} := by simp"
NO_AXIOMS = {"messages": [{"severity": "info", "pos": {"line": 1, "column": 0}, "endPos": {"line": 1, "column": 6},
                           "data": "'turngym_goal' does not depend on any axioms"}], "env": 1}


def axioms(names):
    return {"messages": [{"severity": "info", "pos": {"line": 1, "column": 0}, "endPos": {"line": 1, "column": 6},
                          "data": f"'turngym_goal' depends on axioms: [{', '.join(names)}]"}], "env": 1}


def test_a_good_proof_checks_and_the_header_loads_once(crafted_lean):
    prover = crafted_lean([
        ({"cmd": "import Lean"}, {"env": 0}),
        ({"cmd": SOURCE, "env": 0}, {"env": 1}),
        ({"cmd": "#print axioms turngym_goal", "env": 1}, axioms(["propext"])),
    ], header="import Lean")
    assert prover.check(STATEMENT, "```\nby simp\n```".strip("`\n")).ok
    assert prover.check(STATEMENT, f"theorem mine {STATEMENT} :=\n  by simp").ok
    with prover.pool.lease() as repl:
        assert repl.requests == 1 + 2 * 2  # the header once, then two requests per check
    prover.close()


@pytest.mark.parametrize("extra, cheat", [
    (["sorryAx"], "axiom sorryAx"),
    (["propext", "Lean.ofReduceBool"], "axiom Lean.ofReduceBool"),
    (["my_axiom"], "axiom my_axiom"),
])
def test_axioms_beyond_the_standard_three_score_zero(crafted_lean, extra, cheat):
    prover = crafted_lean([({"cmd": SOURCE}, {"env": 0}),
                           ({"cmd": "#print axioms turngym_goal", "env": 0}, axioms(extra))])
    result = prover.check(STATEMENT, "by simp")
    assert not result.ok and result.cheat == cheat
    prover.close()


def test_a_sorry_the_text_scan_cannot_see_scores_zero(crafted_lean):
    reply = {"sorries": [{"proofState": 0, "goal": "n : Nat\n⊢ n + 0 = n"}],
             "messages": [{"severity": "warning", "data": "declaration uses `sorry`"}], "env": 0}
    prover = crafted_lean([({"cmd": SOURCE}, reply)])
    result = prover.check(STATEMENT, "by simp")
    assert not result.ok and result.cheat == "sorry"
    prover.close()


def test_lean_errors_come_back_for_repair(crafted_lean):
    reply = {"messages": [{"severity": "error", "pos": {"line": 1, "column": 40}, "data": "unsolved goals\nn : Nat\n⊢ n + 0 = n"}], "env": 0}
    prover = crafted_lean([({"cmd": SOURCE}, reply)])
    result = prover.check(STATEMENT, "by simp")
    assert not result.ok and result.cheat is None and result.errors == ["unsolved goals\nn : Nat\n⊢ n + 0 = n"]
    prover.close()


CHEATS = {
    "sorry": ("by sorry", "sorry"),
    "admit": ("by\n  admit", "admit"),
    "native_decide": ("by native_decide", "native_decide"),
    "ofReduceBool": ("Lean.ofReduceBool _ _ rfl", "native_decide"),
    "skip_kernel": ("by\n  set_option debug.skipKernelTC true in simp", "set_option debug.skipKernelTC"),
    "implemented_by": ("by simp\n@[implemented_by foo] def bar := 1", "implemented_by"),
    "unsafe": ("by simp\nunsafe def x := 1", "unsafe"),
    "axiom": ("by simp\naxiom ax : False", "axiom"),
    "second_theorem": ("by simp\ntheorem turngym_goal : True := trivial", "new top-level command `theorem`"),
    "different_statement": ("theorem foo : True := trivial", "restated theorem"),
}


@pytest.mark.parametrize("proof, cheat", CHEATS.values(), ids=CHEATS.keys())
def test_cheats_score_zero_before_lean_sees_them(crafted_lean, proof, cheat):
    prover = crafted_lean([])  # a cheat must never reach the REPL
    result = prover.check(STATEMENT, proof)
    assert not result.ok and result.cheat == cheat
    assert prover.pool.started == 0
    prover.close()


def test_proof_body_extraction():
    assert lean_proof_body(f"theorem x {STATEMENT} := by\n  simp", STATEMENT) == ("by\n  simp", None)
    assert lean_proof_body(":= rfl", STATEMENT) == ("rfl", None)
    assert lean_proof_body("theorem x : True := trivial", STATEMENT)[1] is not None
    assert lean_cheat("by\n  simp [Nat.add_zero]\n  omega") is None


def test_tactic_mode_goals_errors_and_done(crafted_lean):
    start = {"sorries": [{"proofState": 0, "goal": "⊢ ∀ (n : Nat), n + 0 = n"}],
             "messages": [{"severity": "warning", "data": "declaration uses `sorry`"}], "env": 0}
    prover = crafted_lean([
        ({"cmd": "theorem turngym_goal : ∀ n : Nat, n + 0 = n := by sorry"}, start),
        ({"tactic": "intro n", "proofState": 0}, {"proofStatus": "Incomplete: open goals remain", "proofState": 1, "goals": ["n : Nat\n⊢ n + 0 = n"]}),
        ({"tactic": "exact foo", "proofState": 1}, {"proofStatus": "Incomplete: contains sorry", "proofState": 2, "goals": [],
                                                     "messages": [{"severity": "error", "data": "Unknown identifier `foo`"}]}),
        ({"tactic": "simp", "proofState": 1}, {"proofStatus": "Completed", "proofState": 3, "goals": []}),
        ({"cmd": "theorem turngym_goal : ∀ n : Nat, n + 0 = n := by\n  intro n\n  simp"}, {"env": 1}),
        ({"cmd": "#print axioms turngym_goal", "env": 1}, NO_AXIOMS),
    ])
    s0 = prover.start(": ∀ n : Nat, n + 0 = n")
    assert s0.goals == ("⊢ ∀ (n : Nat), n + 0 = n",)
    s1 = prover.apply(s0, "intro n").state
    assert s1.goals == ("n : Nat\n⊢ n + 0 = n",) and s1.anchor == "n : Nat\n⊢ n + 0 = n"
    bad = prover.apply(s1, "exact foo")
    assert bad.error == "Unknown identifier `foo`" and bad.state == s1 and not bad.done
    assert prover.apply(s1, "native_decide").cheat == "native_decide"
    done = prover.apply(s1, "simp")
    assert done.done and done.state.tactics == ("intro n", "simp")
    prover.close()


def test_without_lean_the_prover_says_so_in_one_sentence():
    prover = LeanProver(LeanConfig(command=["lake-that-is-not-installed", "env", "repl"]))
    assert prover.available().startswith("Lean is not installed: `lake-that-is-not-installed` is not on PATH")


# -- real Lean ---------------------------------------------------------------------------------
LEAN_PROJECT = os.environ.get("TURNGYM_LEAN_PROJECT")


@pytest.mark.lean
@pytest.mark.skipif(shutil.which("lake") is None or not LEAN_PROJECT,
                    reason="needs Lean: `lake` on PATH and TURNGYM_LEAN_PROJECT = a Lake project with the REPL")
def test_real_lean_reference_proofs_check_and_cheats_fail():
    from turngym.envs.prover.suites import load_lean4_core

    prover = LeanProver(LeanConfig(project_dir=LEAN_PROJECT, pool_size=1))
    try:
        failures = {t.id: r.errors for t in load_lean4_core()
                    if not (r := prover.check(t.metadata["statement"], t.answer, t.metadata["header"])).ok}
        assert failures == {}
        for proof in ("by sorry", "by native_decide", "by decide"):
            result = prover.check(": 2 + 2 = 5", proof)
            assert not result.ok
        state = prover.start(STATEMENT)
        assert prover.apply(state, "simp").done
    finally:
        prover.close()
