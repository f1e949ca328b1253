"""The Coq backend with the real coqc: every reference proof checks, every cheat scores 0."""

from __future__ import annotations

import shutil

import pytest
import turngym.sandboxes.provers.coq as coq_module
from turngym.envs.prover.suites import load_coq_core
from turngym.sandboxes.provers.coq import CoqProver, coq_cheat, coq_code, coq_proof_body, parse_show

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
    # comments and strings do not hide a command: Coq reads the text the way coq_code does
    "after_an_empty_comment": ("(**) Unset Guard Checking.\nintros n. lia.", "Unset"),
    "after_nested_comments": ("(* (* *) *) Unset Guard Checking.\nintros n. lia.", "Unset"),
    "after_a_comment_with_a_closer_in_a_string": ('(* "*)" *) Unset Guard Checking.\nintros n. lia.', "Unset"),
    "between_strings_that_look_like_a_comment": ('idtac "(*". Unset Guard Checking. idtac "*)". intros n. lia.', "Unset"),
    "glued_to_a_comment": ("intros n.(* *)Unset Guard Checking. lia.", "Unset"),
    "after_a_bullet": ("intros n. - Unset Guard Checking. lia.", "Unset"),
    "after_a_glued_bullet": ("-Unset Guard Checking.\nintros n. lia.", "Unset"),
    "after_a_brace": ("{ Unset Guard Checking. intros n. lia. }", "Unset"),
    "behind_control_prefixes": ("Time Timeout 5 Unset Guard Checking.\nintros n. lia.", "Unset"),
    "behind_an_attribute": ("#[local] Unset Guard Checking.\nintros n. lia.", "Unset"),
    "admitted_after_a_comment": ("intros n. (**)Admitted.", "Admitted"),
    "restated_different_statement": ("Theorem t : True. Proof. exact I. Qed.", "restated theorem"),
}


@pytest.mark.parametrize("proof, cheat", CHEATS.values(), ids=CHEATS.keys())
def test_cheats_score_zero(coq, proof, cheat):
    result = coq.check(STATEMENT, proof)
    assert not result.ok and result.cheat == cheat


def test_comments_and_strings_are_read_as_coq_reads_them():
    assert coq_code('a (* b (* c *) "*)" *) d "x""y" (*) e *) f') == ('a   d ""   f', ['x""y'])
    assert coq_code("intros. (* never closed") == ("intros.  ", [])


@pytest.mark.parametrize("proof", [
    "(* Admitted would be cheating; Unset Guard Checking too. *) intros n. induction n; simpl; auto.",
    "intros n. destruct n as [|m]. - reflexivity. - simpl. rewrite <- plus_n_O. reflexivity.",
    'idtac "Set Printing All". intros n. induction n; simpl; auto.',
    "intros n. (* Set *) assert (H : forall A : Set, A -> A) by auto. induction n; simpl; auto.",
])
def test_honest_proofs_with_comments_strings_and_bullets_are_not_refused(coq, proof):
    assert coq_cheat(proof) is None
    assert coq.check(STATEMENT, proof).ok


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
