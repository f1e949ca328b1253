"""Coq backend: whole proofs checked with ``coqc``; tactic mode by replaying the script.

Whole proofs
    The checker writes ``header``, ``Theorem turngym_goal : STATEMENT.``, ``Proof.``, the
    model's body, its own ``Qed.`` and ``Print Assumptions turngym_goal.`` into a fresh ``.v``
    file and runs ``coqc`` on it under :class:`ProcessLimits`. The body may not contain
    vernacular that ends, restarts or weakens the proof (``Qed``, ``Admitted``, ``Abort``,
    ``Axiom``, new theorems, ``Unset Guard Checking``, ...) nor ``admit``/``give_up``. The
    filter reads the text as Coq's lexer does (:func:`coq_code`: nested comments, strings, and
    a command behind bullets, braces, attributes or ``Time``/``Timeout`` prefixes), so a leading
    ``(**)`` or a ``"(*"`` string hides nothing; and it does not stand alone: the
    assumptions printed after ``Qed`` must read "Closed under the global context". The
    assumptions are read only after a marker whose name holds a random nonce the model never
    sees, so a proof cannot print a fake verdict.

Tactic mode
    Correctness first: a :class:`ProofState` is the tactic script so far, and ``apply`` runs
    ``coqc`` on the statement plus the script plus the new tactic, then ``Show.``. Each step
    costs one ``coqc`` start (~0.2 s) and is O(script length), in exchange for no interactive
    protocol to keep in sync and states that can branch freely. When no goal remains the whole
    script goes through :meth:`CoqProver.check`, so ``done`` means the kernel accepted it.
    The goals are Coq's ``Show.`` text: the first goal in full, the others' conclusions.
"""

from __future__ import annotations

import re
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from turngym.sandboxes.provers.base import CheckResult, ProofState, ProverUnavailable, TacticResult
from turngym.sandboxes.provers.process import ProcessLimits, run_limited

__all__ = ["CoqConfig", "CoqProver", "coq_cheat", "coq_code", "coq_proof_body"]

THEOREM = "turngym_goal"

# Words that may not appear anywhere in a proof body (Coq is case-sensitive).
_FORBIDDEN_WORDS = (
    "Admitted admit give_up Abort Axiom Axioms Parameter Parameters Hypothesis Hypotheses "
    "Variable Variables Conjecture Qed Defined Save Theorem Lemma Fact Remark Corollary "
    "Proposition Example Definition Fixpoint CoFixpoint Inductive CoInductive Instance Goal "
    "Reset Back BackTo Drop Require Redirect Load Extraction Declare Obligation Obligations "
    "Module Section Program Polymorphic Cd Unshelve Admit"
).split()
_FORBIDDEN = re.compile(r"(?<![\w'])(" + "|".join(_FORBIDDEN_WORDS) + r")(?![\w'])")
# Commands that are only a command at the start of a sentence (``Set`` is also a sort). A
# sentence starts at the text's start, after a period followed by a blank, or after a brace;
# before its command may come braces, bullets (``-``, ``+``, ``*``, glued or not), goal
# selectors, attributes (``#[local]``) and control prefixes (``Time``, ``Timeout 5``, ``Fail``,
# ``Succeed``, ``Instructions``): coqc runs ``- Time #[local] Unset Guard Checking.``.
_FORBIDDEN_SENTENCE = re.compile(
    r"""(?:^|\.(?=\s)|[{}])
        (?:\s|[{}]|[-+*]+|\#\[[^\]]*\]
           |(?:all|par|!|\d+(?:\s*[-,]\s*\d+)*|\[\s*[\w']+\s*\])\s*:(?!=)
           |(?:Time|Fail|Succeed|Instructions|Timeout\s+\d+)(?=\s))*
        (Set|Unset|Local|Global|Context|Import|Export|End|Add|Remove|Print|Opaque|Transparent)\b""",
    re.VERBOSE)
# Coq's lexer: comments nest, and strings (with "" for a quote) are read inside comments too, so
# a "*)" in a string does not end the comment around it, nor a "(*" in a string start one.
_LEXEMES = re.compile(r'\(\*|\*\)|"(?:[^"]|"")*"?')
_CODE_WORD = re.compile(r"[A-Za-z_][\w']*")


def coq_code(body: str) -> tuple[str, list[str]]:
    """``body`` as Coq reads it: the text with every comment made one blank and every string
    literal made ``""``, and the strings' contents."""
    code, strings, depth, start = [], [], 0, 0
    for match in _LEXEMES.finditer(body):
        token = match.group()
        if depth == 0 and token == "(*":
            code.append(body[start:match.start()] + " ")
            depth = 1
        elif depth == 0 and token.startswith('"'):
            code.append(body[start:match.start()] + '""')
            strings.append(token[1:-1] if len(token) > 1 and token.endswith('"') else token[1:])
            start = match.end()
        elif depth and token == "(*":
            depth += 1
        elif depth and token == "*)":
            depth -= 1
            if depth == 0:
                start = match.end()
    if depth == 0:
        code.append(body[start:])  # an unclosed comment runs to the end (coqc refuses it)
    return "".join(code), strings


def coq_cheat(body: str) -> str | None:
    """The first forbidden device in a proof body, or None. Comments are skipped as Coq skips
    them; a forbidden word inside a string literal still counts (strings can name notations)."""
    code, strings = coq_code(body)
    for text in (code, "\n".join(strings)):
        match = _FORBIDDEN.search(text)
        if match:
            return match.group(1)
    match = _FORBIDDEN_SENTENCE.search(code)
    if match:
        return match.group(1)
    return None


_RESTATEMENT = re.compile(
    r"^\s*(?:Theorem|Lemma|Fact|Remark|Corollary|Proposition|Example)\s+[\w']+\s*:\s*(.*?)\.\s*(?=Proof\b)",
    re.DOTALL,
)
_PROOF_START = re.compile(r"^\s*Proof\s*\.")
_PROOF_END = re.compile(r"(?:Qed|Defined)\s*\.\s*$")


def _squash(text: str) -> str:
    return " ".join(text.split())


def coq_proof_body(reply: str, statement: str) -> tuple[str, str | None]:
    """The proof body inside a reply, and a reason when the reply restates a *different*
    theorem. Accepts a bare tactic script, ``Proof. ... Qed.``, or the full
    ``Theorem name : STATEMENT. Proof. ... Qed.`` when STATEMENT is the one asked for."""
    text = reply.strip()
    match = _RESTATEMENT.match(text)
    if match:
        if _squash(match.group(1)) != _squash(statement):
            return "", "the reply states a different theorem; give a proof of the statement as given"
        text = text[match.end():]
    text = _PROOF_START.sub("", text, count=1)
    text = _PROOF_END.sub("", text.rstrip(), count=1)
    return text.strip(), None


class CoqConfig(BaseModel):
    """How to run Coq."""

    model_config = ConfigDict(frozen=True)

    coqc: str = "coqc"
    """The ``coqc`` executable (looked up on PATH unless a prefix is given)."""
    prefix: list[str] = Field(default_factory=list)
    """Command prefix the prover runs under (``["bwrap", ...]``, ``["docker", "run", "-i", ...]``)."""
    header: str = ""
    """Vernacular put before every theorem (``Require Import Arith Lia.``); tasks add their own."""
    limits: ProcessLimits = ProcessLimits(timeout=20.0, memory_bytes=2 << 30)
    """Deadline, memory and output caps of one ``coqc`` run."""
    workers: int = 2
    """How many ``coqc`` processes ``check_many`` runs at once."""


_LOCATION = re.compile(r'File "[^"]*", line (\d+), characters (\d+)-(\d+):')
_GOAL_COUNT = re.compile(r"^(\d+) goals?\b", re.MULTILINE)
_OTHER_GOAL = re.compile(r"^goal \d+ is:\n", re.MULTILINE)


def parse_show(text: str) -> tuple[str, ...]:
    """Goals from the text of Coq's ``Show.``."""
    text = text.strip()
    if not text or "No more goals" in text and "unfocused" not in text:
        return ()
    match = _GOAL_COUNT.search(text)
    if not match:
        return ()
    body = text[match.end():].strip("\n")
    parts = [p.strip("\n") for p in _OTHER_GOAL.split(body)]
    return tuple(p.strip() for p in parts if p.strip())


def _errors(stderr: str, first_body_line: int) -> list[str]:
    """coqc's error messages with positions relative to the proof body."""
    def relocate(m: re.Match) -> str:
        line = int(m.group(1)) - first_body_line + 1
        where = f"line {line}" if line >= 1 else "the statement"
        return f"At {where}, characters {m.group(2)}-{m.group(3)}:"

    text = _LOCATION.sub(relocate, stderr.strip())
    return [part.strip() for part in re.split(r"\n(?=At )", text) if part.strip()]


class CoqProver:
    """The :class:`~turngym.sandboxes.provers.base.Prover` for Coq (see the module docstring)."""

    name = "coq"

    def __init__(self, config: CoqConfig | None = None) -> None:
        self.config = config or CoqConfig()
        if not self.config.prefix and shutil.which(self.config.coqc) is None:
            raise ProverUnavailable(f"Coq is not installed: {self.config.coqc!r} is not on PATH (Debian: apt-get install coq)")

    # -- files -----------------------------------------------------------------------------
    def _source(self, statement: str, body: str, nonce: str, tail: str, header: str) -> tuple[str, int]:
        lines = [
            self.config.header,
            header,
            f"Definition turngym_marker_{nonce} := tt.",
            f"Theorem {THEOREM} : {statement}.",
            "Proof.",
        ]
        prelude = "\n".join(lines) + "\n"
        first_body_line = prelude.count("\n") + 1
        return prelude + body + "\n" + tail, first_body_line

    def _run(self, source: str, timeout: float | None = None) -> tuple[str, str, str]:
        limits = self.config.limits if timeout is None else self.config.limits.model_copy(update={"timeout": timeout})
        with tempfile.TemporaryDirectory(prefix="turngym-coq-") as tmp:
            path = Path(tmp) / "Turngym.v"
            path.write_text(source, encoding="utf-8")
            result = run_limited([self.config.coqc, "-q", str(path)], limits, self.config.prefix, cwd=tmp)
        return result.status, result.stdout, result.stderr.replace(str(path), "proof.v")

    # -- whole proofs ----------------------------------------------------------------------
    def check(self, statement: str, proof: str, header: str = "", timeout: float | None = None) -> CheckResult:
        start = time.monotonic()
        body, refused = coq_proof_body(proof, statement)
        if refused:
            return CheckResult(ok=False, errors=[refused], cheat="restated theorem")
        cheat = coq_cheat(body)
        if cheat:
            return CheckResult(ok=False, errors=[f"`{cheat}` is not allowed in a proof"], cheat=cheat)
        nonce = secrets.token_hex(8)
        marker = f"turngym_marker_{nonce}"
        tail = f"Qed.\nPrint {marker}.\nPrint Assumptions {THEOREM}.\n"
        source, first = self._source(statement, body, nonce, tail, header)
        status, stdout, stderr = self._run(source, timeout)
        duration = time.monotonic() - start
        if status == "timeout":
            return CheckResult(ok=False, errors=["the proof check timed out"], timed_out=True, duration=duration)
        if status != "ok":
            return CheckResult(ok=False, errors=_errors(stderr, first) or [f"coqc failed ({status})"], duration=duration)
        _, found, verdict = stdout.partition(f"{marker} = tt")
        if not found:
            return CheckResult(ok=False, errors=["coqc printed no verdict"], duration=duration)
        if "Closed under the global context" not in verdict:
            axioms = verdict.split("Axioms:", 1)[-1].strip() if "Axioms:" in verdict else verdict.strip()
            return CheckResult(ok=False, errors=[f"the proof depends on axioms: {axioms}"], cheat=f"axiom {axioms}", duration=duration)
        return CheckResult(ok=True, duration=duration)

    def check_many(self, items: Iterable[tuple[str, str, str]], workers: int | None = None) -> list[CheckResult]:
        """Check several ``(statement, proof, header)`` triples, ``workers`` (default
        ``config.workers``) coqc runs at a time; results in the order given."""
        items = list(items)
        with ThreadPoolExecutor(max_workers=workers or self.config.workers) as pool:
            return list(pool.map(lambda item: self.check(*item), items))

    # -- tactic mode -----------------------------------------------------------------------
    def _goals_after(self, statement: str, tactics: tuple[str, ...], header: str) -> tuple[tuple[str, ...] | None, str | None]:
        nonce = secrets.token_hex(8)
        marker = f"turngym_marker_{nonce}"
        source, first = self._source(statement, "\n".join(tactics), nonce, f"Print {marker}.\nShow.\n", header)
        status, stdout, stderr = self._run(source)
        if status == "timeout":
            return None, "the tactic timed out"
        _, found, shown = stdout.partition(f"{marker} = tt\n     : unit")
        if not found:
            errors = _errors(stderr, first)
            return None, "\n".join(errors) or f"coqc failed ({status})"
        return parse_show(shown), None

    def start(self, statement: str, header: str = "") -> ProofState:
        goals, error = self._goals_after(statement, (), header)
        if goals is None:
            raise ValueError(f"Coq rejected the statement: {error}")
        return ProofState(statement=statement, header=header, goals=goals)

    def apply(self, state: ProofState, tactic: str) -> TacticResult:
        sentence = tactic.strip()
        cheat = coq_cheat(sentence)
        if cheat:
            return TacticResult(state=state, error=f"`{cheat}` is not allowed in a proof", cheat=cheat)
        if not sentence.endswith((".", "{", "}")) and sentence.strip("-+* ") != "":
            sentence += "."
        tactics = (*state.tactics, sentence)
        goals, error = self._goals_after(state.statement, tactics, state.header)
        if goals is None:
            return TacticResult(state=state, error=error)
        new_state = state.model_copy(update={"tactics": tactics, "goals": goals})
        if goals:
            return TacticResult(state=new_state)
        verdict = self.check(state.statement, "\n".join(tactics), state.header)
        if not verdict.ok:
            return TacticResult(state=state, error="\n".join(verdict.errors), cheat=verdict.cheat)
        return TacticResult(state=new_state, done=True)

    def close(self) -> None:
        pass
