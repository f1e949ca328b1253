"""The Lean backend's protocol layer against every real REPL transcript (Lean v4.33)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from turngym.sandboxes.provers.lean import LeanRepl, ReplReply, frame_command, reply_length
from turngym.sandboxes.provers.process import ProcessLimits
from turngym.sandboxes.provers.replay import (
    command_key,
    read_blocks,
    read_transcript,
    replay_command,
)

TRANSCRIPTS = Path(__file__).parent / "data" / "lean-repl-transcripts"
LIMITS = ProcessLimits(timeout=10, memory_bytes=None)
# These two upstream tests have inputs but no recorded replies.
NO_REPLIES = {"pickle_scoped_notation", "pickle_scoped_notation_2"}
NAMES = sorted(p.name[:-3] for p in TRANSCRIPTS.glob("*.in") if p.name[:-3] not in NO_REPLIES)


def test_the_in_repo_copy_is_complete():
    assert len(NAMES) >= 55
    assert (TRANSCRIPTS / "LICENSE").is_file()
    assert all((TRANSCRIPTS / f"{n}.expected.out").is_file() for n in NAMES)


def open_repl(name: str) -> LeanRepl:
    return LeanRepl(replay_command([TRANSCRIPTS / f"{name}.in", TRANSCRIPTS / f"{name}.expected.out"]), LIMITS)


@pytest.mark.parametrize("name", NAMES)
def test_every_transcript_round_trips(name):
    """Each recorded command, framed by the client, gets its recorded reply back, parsed into
    exactly the recorded fields (messages, sorries, goals, proofState, proofStatus, env, message)."""
    pairs = read_transcript(TRANSCRIPTS / f"{name}.in", TRANSCRIPTS / f"{name}.expected.out")
    repl = open_repl(name)
    try:
        for command_text, reply_text in pairs:
            command = json.loads(command_key(command_text))
            reply = repl.request(command)
            recorded = json.loads(reply_text)
            assert reply.model_dump(exclude_unset=True) == recorded
            assert reply.repl_error == ("message" in recorded)
            assert len(reply.errors) == ("message" in recorded) + sum(
                m["severity"] == "error" for m in recorded.get("messages", []))
        assert repl.requests == len(pairs)
    finally:
        repl.close()


def test_framing_is_one_line_and_a_blank_line_even_with_line_breaks():
    wire = frame_command({"cmd": "theorem t : 1 = 1 := by\n  rfl"})
    assert wire.endswith("\n\n") and wire.count("\n") == 2
    assert json.loads(wire) == {"cmd": "theorem t : 1 = 1 := by\n  rfl"}


def test_a_reply_is_complete_only_at_its_blank_line():
    text = (TRANSCRIPTS / "by_cases.expected.out").read_text().encode()
    first = read_blocks(text.decode())[0].encode()
    for cut in range(1, len(first) + 1):  # every partial read
        assert reply_length(bytearray(text[:cut])) is None
    end = reply_length(bytearray(text))
    assert end is not None and json.loads(text[:end]) == json.loads(first)
    assert reply_length(bytearray(b"\n\n  \n")) is None


def test_tactic_mode_replies_are_read_as_goals_and_status():
    repl = open_repl("by_cases")
    try:
        first = repl.request({"cmd": "theorem foo (x : Int) : x = x := by sorry"})
        assert first.env == 0 and first.uses_sorry and first.sorries[0].proofState == 0
        assert first.sorries[0].goal == "x : Int\n⊢ x = x"
        split = repl.request({"proofState": 0, "tactic": "by_cases h : x < 0"})
        assert split.proofState == 1 and split.proofStatus == "Incomplete: open goals remain"
        assert [g.splitlines()[0] for g in split.goals] == ["case pos", "case neg"]
        assert not split.errors and not split.uses_sorry
    finally:
        repl.close()


@pytest.mark.parametrize("name, request_, expect", [
    ("readme", {"tactic": "exact -37", "proofState": 1}, "completed"),
    ("invalid_tactic", {"tactic": "exact my_fake_premise", "proofState": 0}, "Unknown identifier `my_fake_premise`"),
    ("unknown_proof_state", {"tactic": "exact 42", "proofState": 1}, "Unknown proof state."),
    ("unknown_tactic", {"tactic": "exat 42", "proofState": 0}, "Lean error:\n<input>:1:1: unknown tactic"),
    ("unknown_environment", {"cmd": "def f : Nat := by sorry", "env": 5}, "Unknown environment."),
])
def test_errors_and_completion(name, request_, expect):
    pairs = read_transcript(TRANSCRIPTS / f"{name}.in", TRANSCRIPTS / f"{name}.expected.out")
    repl = open_repl(name)
    try:
        for command_text, _ in pairs:
            command = json.loads(command_key(command_text))
            reply = repl.request(command)
            if command == request_:
                break
        if expect == "completed":
            assert reply.proofStatus == "Completed" and reply.goals == [] and not reply.errors
        else:
            assert reply.errors == [expect]
    finally:
        repl.close()


def test_unsolved_goals_are_errors():
    reply = ReplReply.model_validate(json.loads(read_blocks((TRANSCRIPTS / "incomplete.expected.out").read_text())[1]))
    assert len(reply.errors) == 2 and all(e.startswith("unsolved goals") for e in reply.errors)
