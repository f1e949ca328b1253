"""The Coq backend with the real coqc: every reference proof checks, every cheat scores 0."""

from __future__ import annotations

import shutil

import pytest
import turngym.sandboxes.provers.coq as coq_module
from turngym.envs.prover.suites import load_coq_core
from turngym.sandboxes.provers.coq import CoqProver, coq_proof_body, parse_show

pytestmark = pytest.mark.skipif(shutil.which("coqc") is None, reason="coqc is not installed (apt-get install coq)")


@pytest.fixture(scope="module")
def coq():
    return CoqProver()


def test_every_reference_proof_in_the_coq_suite_checks(coq):
    suite = load_coq_core()
    tasks = list(suite)
    results = coq.check_many([(t.metadata["statement"], t.answer, t.metadata["header"]) for t in tasks])
    failures = {t.id: r.errors for t, r in zip(tasks, results) if not r.ok}
    assert failures == {}
    assert len(results) == len(tasks) >= 50


def test_a_wrong_proof_fails_with_coqs_error_relative_to_the_proof(coq):
    result = coq.check("forall n : nat, n + 0 = n", "intros n.\nreflexivity.")
    assert not result.ok and result.cheat is None
    assert result.errors[0].startswith("At line 2, characters 0-11:")
    assert "Unable to unify" in result.errors[0]


STATEMENT = "forall n : nat, n + 0 = n"
CHEATS = {
    "admitted": ("intros n. Admitted.", "Admitted"),
    "admit": ("intros n. admit.", "admit"),
    "give_up": ("intros n. give_up.", "give_up"),
    "abort": ("Abort.", "Abort"),
    "axiom": ("Axiom cheat : forall n : nat, n + 0 = n. exact cheat.", "Axiom"),
    "parameter": ("Parameter cheat : forall n : nat, n + 0 = n. exact cheat.", "Parameter"),
    "hypothesis": ("Hypothesis cheat : forall n : nat, n + 0 = n. exact cheat.", "Hypothesis"),
    "early_qed_then_new_goal": ("Qed. Theorem turngym_goal2 : True. exact I.", "Qed"),
    "defined_on_a_different_goal": ("intros n. Defined. Goal True. exact I.", "Defined"),
    "guard_checking_off": ("intros n.\nUnset Guard Checking.\nlia.", "Unset"),
    "restated_different_statement": ("Theorem t : True. Proof. exact I. Qed.", "restated theorem"),
}


@pytest.mark.parametrize("proof, cheat", CHEATS.values(), ids=CHEATS.keys())
def test_cheats_score_zero(coq, proof, cheat):
    result = coq.check(STATEMENT, proof)
    assert not result.ok and result.cheat == cheat


def test_a_restatement_of_the_same_theorem_is_accepted(coq):
    proof = "Theorem mine : forall n : nat,\n  n + 0 = n.\nProof.\n  intros n. induction n; simpl; auto.\nQed."
    assert coq_proof_body(proof, STATEMENT)[1] is None
    assert coq.check(STATEMENT, proof).ok


def test_axioms_are_caught_by_print_assumptions_even_past_the_text_scan(coq, monkeypatch):
    # Classical logic's axiom is in the header (trusted); the proof text itself is clean.
    header = "Require Import Classical."
    result = coq.check("forall P : Prop, P \\/ ~ P", 'idtac "Closed under the global context". intros P. apply classic.', header)
    assert not result.ok and result.cheat == "axiom classic : forall P : Prop, P \\/ ~ P"
    # Defence in depth: with the text scan switched off, coqc itself still refuses.
    monkeypatch.setattr(coq_module, "coq_cheat", lambda body: None)
    for proof in ("intros n. Admitted.", "Qed. Theorem other : True. exact I."):
        assert not coq.check(STATEMENT, proof).ok
    assert not coq.check(STATEMENT, "Axiom ax : forall n : nat, n + 0 = n. exact ax.").ok


def test_a_proof_that_loops_times_out(coq):
    result = coq.check("True", "let rec f x := f x in f I.", timeout=1.5)
    assert not result.ok and result.timed_out


def test_tactic_mode_goals_errors_branching_and_done(coq):
    s0 = coq.start(STATEMENT)
    assert s0.goals == ("============================\n  forall n : nat, n + 0 = n",)
    s1 = coq.apply(s0, "intros n").state
    assert s1.tactics == ("intros n.",) and s1.goals[0].startswith("n : nat")
    # Two different tactics reaching the same goals give the same anchor (GiGPO).
    assert coq.apply(s0, "intro n.").state.anchor == s1.anchor
    bad = coq.apply(s1, "reflexivity.")
    assert bad.error and "Unable to unify" in bad.error and bad.state == s1 and not bad.done
    s2 = coq.apply(s1, "induction n as [|n IH].").state
    assert len(s2.goals) == 2
    cheat = coq.apply(s2, "admit.")
    assert cheat.cheat == "admit" and cheat.state == s2
    s3 = coq.apply(s2, "- reflexivity.")
    assert not s3.done and len(s3.goals) == 1
    done = coq.apply(s3.state, "- simpl. rewrite IH. reflexivity.")
    assert done.done and done.goals == () and done.error is None


def test_show_output_parses_into_goals():
    text = "2 goals\n\n  n : nat\n  ============================\n  0 + 0 = 0\n\ngoal 2 is:\n S n + 0 = S n\n"
    assert parse_show(text) == ("n : nat\n  ============================\n  0 + 0 = 0", "S n + 0 = S n")
    assert parse_show("No more goals.") == ()
