"""Lean 4 backend: the leanprover-community REPL (``lake env repl``) over its JSON protocol.

Protocol (what :class:`LeanRepl` speaks; tested against real recorded transcripts)
    Each request is one JSON object on one line followed by a blank line; each reply is a JSON
    object (pretty-printed over several lines, never with a blank line inside) followed by a
    blank line. Requests: ``{"cmd": SRC, "env": N?}`` elaborates source in environment N (none:
    a fresh one) and answers ``env`` (the new environment), ``messages`` (``severity``
    info/warning/error, ``pos``, ``endPos``, ``data``) and ``sorries`` (``goal`` and a
    ``proofState`` to continue from); ``{"tactic": T, "proofState": N}`` runs a tactic and
    answers ``proofState``, ``goals``, ``proofStatus`` ("Completed", "Incomplete: open goals
    remain", "Incomplete: contains sorry") and ``messages``. A request the REPL cannot serve
    (unknown environment or proof state, unparsable tactic) answers ``{"message": ...}``.

Environment reuse
    A header (``import Mathlib``) takes seconds to minutes to load, so each REPL process loads
    a header once (``{"cmd": HEADER}``) and every check runs in ``{"cmd": ..., "env": N}``.

Checking (no cheating)
    The checker writes ``theorem turngym_goal STATEMENT := PROOF`` itself. The proof text may
    not contain ``sorry``/``admit``, ``native_decide``/``ofReduceBool``, ``axiom``,
    ``implemented_by``/``extern``/``unsafe``, ``debug.skipKernelTC`` nor a new top-level
    command (a second theorem, a redefinition); the reply must hold no error and no sorry; and
    ``#print axioms turngym_goal`` (a separate request, so a proof cannot fake its output) must
    list nothing beyond ``propext``, ``Classical.choice`` and ``Quot.sound``.

Processes
    REPLs run locally (``lake env repl`` with ``cwd`` = the configured Lean project) or under a
    command prefix (``docker run -i --rm IMAGE`` for an image the user built), in a
    :class:`~turngym.sandboxes.provers.pool.WorkerPool` that recycles a process after
    ``max_uses`` checks or when its memory grew by ``max_rss_growth`` bytes; a request past
    its deadline kills the process group and the check fails as timed out.
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from turngym.sandboxes.provers.base import (
    CheckResult,
    ProofState,
    ProverError,
    ProverUnavailable,
    TacticResult,
)
from turngym.sandboxes.provers.pool import WorkerPool
from turngym.sandboxes.provers.process import InteractiveProcess, ProcessLimits

__all__ = [
    "ALLOWED_AXIOMS",
    "LeanConfig",
    "LeanProver",
    "LeanRepl",
    "ReplReply",
    "frame_command",
    "lean_cheat",
    "lean_proof_body",
    "parse_axioms",
    "reply_length",
]

THEOREM = "turngym_goal"
ALLOWED_AXIOMS = frozenset({"propext", "Classical.choice", "Quot.sound"})


# -- the protocol --------------------------------------------------------------------------
class Position(BaseModel):
    line: int
    column: int


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")

    severity: str
    """``info``, ``warning`` or ``error``."""
    pos: Position | None = None
    endPos: Position | None = None
    data: str = ""


class Sorry(BaseModel):
    model_config = ConfigDict(extra="allow")

    goal: str = ""
    proofState: int | None = None
    pos: Position | None = None
    endPos: Position | None = None


class ReplReply(BaseModel):
    """One REPL reply; fields absent from the reply keep their defaults."""

    model_config = ConfigDict(extra="allow")

    env: int | None = None
    messages: list[Message] = Field(default_factory=list)
    sorries: list[Sorry] = Field(default_factory=list)
    goals: list[str] | None = None
    proofState: int | None = None
    proofStatus: str | None = None
    message: str | None = None
    """Set when the REPL could not serve the request at all (unknown env, unparsable tactic)."""

    @property
    def repl_error(self) -> bool:
        return self.message is not None

    @property
    def errors(self) -> list[str]:
        """Everything that makes the request a failure, as text."""
        found = [self.message] if self.message is not None else []
        return found + [m.data for m in self.messages if m.severity == "error"]

    @property
    def uses_sorry(self) -> bool:
        return bool(self.sorries) or (self.proofStatus or "").endswith("contains sorry") or any(
            "declaration uses 'sorry'" in m.data or "declaration uses `sorry`" in m.data for m in self.messages
        )


def frame_command(command: dict[str, Any]) -> str:
    """One request on the wire: a single JSON line (line breaks escaped) and a blank line."""
    return json.dumps(command, ensure_ascii=False) + "\n\n"


def reply_length(buffer: bytearray | bytes) -> int | None:
    """Length of the first whole reply in ``buffer`` (through its blank line), or None."""
    start = 0
    while start < len(buffer) and buffer[start] in b" \t\r\n":
        start += 1
    if start == len(buffer):
        return None
    end = buffer.find(b"\n\n", start)
    return None if end < 0 else end + 2


class LeanRepl:
    """One REPL process: ``request(command) -> ReplReply``, with header environments cached."""

    _ids = itertools.count()

    def __init__(self, argv: list[str], limits: ProcessLimits, prefix: list[str] | None = None, cwd: str | None = None) -> None:
        self.process = InteractiveProcess(argv, limits, prefix or [], cwd=cwd)
        self.uid = next(self._ids)
        """Tells processes apart, so a proof state is only continued in the process that made it."""
        self._header_envs: dict[str, int | None] = {}
        self.requests = 0
        """Requests sent so far (environment reuse is visible in it)."""

    def request(self, command: dict[str, Any], timeout: float | None = None) -> ReplReply:
        """Send one request and parse its reply; raises :class:`ProverError` when the process
        dies, times out (its group is killed) or answers something that is not JSON."""
        self.requests += 1
        try:
            self.process.write(frame_command(command))
            raw = self.process.read_until(reply_length, timeout)
        except (TimeoutError, EOFError, OverflowError, BrokenPipeError) as err:
            if isinstance(err, BrokenPipeError):
                err = EOFError(f"process exited (code {self.process.proc.wait()})")
            stderr = self.process.stderr.decode(errors="replace").strip()[-500:]
            raise ProverError(f"Lean REPL: {err}" + (f" ({stderr})" if stderr else "")) from None
        try:
            return ReplReply.model_validate(json.loads(raw))
        except (json.JSONDecodeError, ValueError) as err:
            raise ProverError(f"Lean REPL answered something that is not a reply: {raw[:200]!r} ({err})") from None

    def header_env(self, header: str) -> int | None:
        """The environment holding ``header`` (loaded on first use); None for no header."""
        if not header.strip():
            return None
        if header not in self._header_envs:
            reply = self.request({"cmd": header}, timeout=max(self.process.limits.timeout, 600.0))
            if reply.errors or reply.env is None:
                raise ProverError(f"the Lean header failed to load: {'; '.join(reply.errors)[:500]}")
            self._header_envs[header] = reply.env
        return self._header_envs[header]

    def alive(self) -> bool:
        return self.process.alive()

    def rss_bytes(self) -> int:
        return self.process.rss_bytes()

    def close(self) -> None:
        self.process.close()


# -- cheating and proof text ---------------------------------------------------------------
_CHEATS = [
    (re.compile(r"(?<![\w.'])sorry(?![\w'])"), "sorry"),
    (re.compile(r"(?<![\w.'])admit(?![\w'])"), "admit"),
    (re.compile(r"native_decide|ofReduceBool|ofReduceNat|Lean\.reduceBool"), "native_decide"),
    (re.compile(r"skipKernelTC|debug\.skip"), "set_option debug.skipKernelTC"),
    (re.compile(r"implemented_by|(?<![\w.'])extern(?![\w'])"), "implemented_by"),
    (re.compile(r"(?<![\w.'])unsafe(?![\w'])"), "unsafe"),
    (re.compile(r"(?<![\w.'])axiom(?![\w'])"), "axiom"),
    (re.compile(r"(?<![\w.'])(?:opaque|run_cmd|run_tac|run_elab|#eval|elab|macro|macro_rules|syntax)(?![\w'])"), "metaprogramming command"),
]
# A top-level command at the start of a line would end the proof and declare something else.
_NEW_COMMAND = re.compile(
    r"^(?:theorem|lemma|def|abbrev|example|instance|structure|inductive|class|namespace|section|"
    r"end|open|set_option|attribute|import|universe|variable|mutual|noncomputable|private|"
    r"protected|notation|infix|infixl|infixr|prefix|postfix|local|scoped|@\[|#)",
    re.MULTILINE,
)


def lean_cheat(proof: str) -> str | None:
    """The first forbidden device in a proof text, or None."""
    for pattern, name in _CHEATS:
        if pattern.search(proof):
            return name
    match = _NEW_COMMAND.search(proof)
    if match:
        return f"new top-level command `{match.group(0)}`"
    return None


_RESTATED = re.compile(r"^\s*(?:theorem|lemma|example)\s*([^\s:(\[{⦃]*)\s*(.*?)\s*:=\s*", re.DOTALL)


def lean_proof_body(reply: str, statement: str) -> tuple[str, str | None]:
    """The proof (what follows ``:=``) in a reply, and a reason when the reply restates a
    *different* theorem. Accepts ``by ...``, a term, ``:= ...`` or the whole
    ``theorem NAME STATEMENT := ...`` when STATEMENT is the one asked for."""
    text = reply.strip()
    match = _RESTATED.match(text)
    if match:
        if " ".join(match.group(2).split()) != " ".join(statement.split()):
            return "", "the reply states a different theorem; give a proof of the statement as given"
        text = text[match.end():]
    elif text.startswith(":="):
        text = text[2:]
    return text.strip(), None


_DEPENDS = re.compile(r"depends on axioms:\s*\[(.*?)\]", re.DOTALL)


def parse_axioms(reply: ReplReply) -> set[str] | None:
    """The axioms a ``#print axioms`` reply lists (empty for none), or None if it says neither."""
    for message in reply.messages:
        if "does not depend on any axioms" in message.data:
            return set()
        match = _DEPENDS.search(message.data)
        if match:
            return {name.strip() for name in match.group(1).split(",") if name.strip()}
    return None


def _indent(tactics: tuple[str, ...]) -> str:
    return "\n".join("  " + line for tactic in tactics for line in tactic.splitlines())


# -- the prover ----------------------------------------------------------------------------
class LeanConfig(BaseModel):
    """How to run Lean."""

    model_config = ConfigDict(frozen=True)

    project_dir: str | None = None
    """A Lake project with the REPL as a dependency (``lake env repl`` runs there). None: the
    current directory."""
    command: list[str] = Field(default_factory=lambda: ["lake", "env", "repl"])
    """The REPL command. With a ``docker run`` prefix this is the command inside the image."""
    prefix: list[str] = Field(default_factory=list)
    """Command prefix (``["docker", "run", "-i", "--rm", "--network=none", "my-lean-image"]``)."""
    header: str = ""
    """Loaded once per REPL process (``import Mathlib``); tasks may add their own header."""
    limits: ProcessLimits = ProcessLimits(timeout=60.0, memory_bytes=None)
    """Per-request deadline and output cap; memory via ``memory_bytes`` (RLIMIT_AS; leave None
    for Mathlib, whose memory-mapped .olean files exceed any sane address-space limit, and
    rely on ``max_rss_growth`` or the container's ``--memory``)."""
    pool_size: int = 1
    """How many REPL processes run at once."""
    max_uses: int = 200
    """A REPL process is replaced after this many checks."""
    max_rss_growth: int | None = 4 << 30
    """... or when its resident memory grew by this many bytes."""


class LeanProver:
    """The :class:`~turngym.sandboxes.provers.base.Prover` for Lean 4 (see the module docstring)."""

    name = "lean"

    def __init__(self, config: LeanConfig | None = None) -> None:
        self.config = config or LeanConfig()
        self.pool: WorkerPool[LeanRepl] = WorkerPool(
            self._start_repl, self.config.pool_size, self.config.max_uses, self.config.max_rss_growth
        )

    def available(self) -> str | None:
        """Why Lean cannot run here (one sentence), or None when it can."""
        if self.config.prefix:
            return None
        exe = self.config.command[0]
        if shutil.which(exe) is None:
            return (f"Lean is not installed: `{exe}` is not on PATH (install elan, or run the REPL "
                    "in a Docker image via LeanConfig.prefix)")
        project = Path(self.config.project_dir or ".")
        if exe == "lake" and not any((project / name).exists() for name in ("lakefile.lean", "lakefile.toml")):
            return f"{project.resolve()} is not a Lake project with the REPL (set LeanConfig.project_dir)"
        return None

    def _start_repl(self) -> LeanRepl:
        reason = self.available()
        if reason:
            raise ProverUnavailable(reason)
        return LeanRepl(self.config.command, self.config.limits, self.config.prefix, self.config.project_dir)

    def _header(self, header: str) -> str:
        return "\n".join(h for h in (self.config.header, header) if h.strip())

    # -- whole proofs ----------------------------------------------------------------------
    def check(self, statement: str, proof: str, header: str = "", timeout: float | None = None) -> CheckResult:
        start = time.monotonic()
        body, refused = lean_proof_body(proof, statement)
        if refused:
            return CheckResult(ok=False, errors=[refused], cheat="restated theorem")
        cheat = lean_cheat(body)
        if cheat:
            return CheckResult(ok=False, errors=[f"`{cheat}` is not allowed in a proof"], cheat=cheat)
        source = f"theorem {THEOREM} {statement} := {body}"
        try:
            with self.pool.lease() as repl:
                env = repl.header_env(self._header(header))
                reply = repl.request(_with_env({"cmd": source}, env), timeout)
                if reply.errors or reply.uses_sorry or reply.env is None:
                    return self._failed(reply, start)
                axioms_reply = repl.request({"cmd": f"#print axioms {THEOREM}", "env": reply.env}, timeout)
        except ProverError as err:
            if isinstance(err, ProverUnavailable):
                raise
            return CheckResult(ok=False, errors=[str(err)], timed_out="no reply within" in str(err), duration=time.monotonic() - start)
        axioms = parse_axioms(axioms_reply)
        duration = time.monotonic() - start
        if axioms is None:
            return CheckResult(ok=False, errors=["Lean printed no axioms verdict"], duration=duration)
        extra = sorted(axioms - ALLOWED_AXIOMS)
        if extra:
            return CheckResult(ok=False, errors=[f"the proof depends on axioms: {', '.join(extra)}"], cheat=f"axiom {', '.join(extra)}", duration=duration)
        return CheckResult(ok=True, duration=duration)

    def _failed(self, reply: ReplReply, start: float) -> CheckResult:
        errors = reply.errors
        cheat = None
        if not errors and reply.uses_sorry:
            errors, cheat = ["the proof uses sorry"], "sorry"
        return CheckResult(ok=False, errors=errors or ["Lean gave no environment"], cheat=cheat, duration=time.monotonic() - start)

    # -- tactic mode -----------------------------------------------------------------------
    def _open(self, repl: LeanRepl, statement: str, header: str) -> tuple[int, tuple[str, ...]]:
        env = repl.header_env(self._header(header))
        reply = repl.request(_with_env({"cmd": f"theorem {THEOREM} {statement} := by sorry"}, env))
        if reply.errors or len(reply.sorries) != 1 or reply.sorries[0].proofState is None:
            raise ValueError(f"Lean rejected the statement: {'; '.join(reply.errors) or 'no proof state'}")
        return reply.sorries[0].proofState, (reply.sorries[0].goal,)

    def start(self, statement: str, header: str = "") -> ProofState:
        with self.pool.lease() as repl:
            proof_state, goals = self._open(repl, statement, header)
            return ProofState(statement=statement, header=header, goals=goals, handle=(repl.uid, proof_state))

    def _proof_state_in(self, repl: LeanRepl, state: ProofState) -> int:
        """``state``'s proof-state id in ``repl``, rebuilt by replaying its tactics when it was
        made in another (recycled) process."""
        if state.handle is not None and state.handle[0] == repl.uid:
            return state.handle[1]
        proof_state, _ = self._open(repl, state.statement, state.header)
        for tactic in state.tactics:
            reply = repl.request({"tactic": tactic, "proofState": proof_state})
            if reply.errors or reply.proofState is None:
                raise ProverError(f"replaying the tactic {tactic!r} failed: {'; '.join(reply.errors)}")
            proof_state = reply.proofState
        return proof_state

    def apply(self, state: ProofState, tactic: str) -> TacticResult:
        cheat = lean_cheat(tactic)
        if cheat:
            return TacticResult(state=state, error=f"`{cheat}` is not allowed in a proof", cheat=cheat)
        try:
            with self.pool.lease() as repl:
                reply = repl.request({"tactic": tactic, "proofState": self._proof_state_in(repl, state)})
                uid = repl.uid
        except ProverError as err:
            if isinstance(err, ProverUnavailable):
                raise
            return TacticResult(state=state, error=str(err))
        if reply.errors:
            return TacticResult(state=state, error="\n".join(reply.errors))
        if reply.uses_sorry:
            return TacticResult(state=state, error="the tactic uses sorry", cheat="sorry")
        if reply.proofState is None or reply.goals is None:
            return TacticResult(state=state, error="Lean gave no proof state")
        new_state = state.model_copy(update={
            "tactics": (*state.tactics, tactic), "goals": tuple(reply.goals), "handle": (uid, reply.proofState)})
        if reply.goals:
            return TacticResult(state=new_state)
        verdict = self.check(state.statement, "by\n" + _indent(new_state.tactics), state.header)
        if not verdict.ok:
            return TacticResult(state=state, error="\n".join(verdict.errors), cheat=verdict.cheat)
        return TacticResult(state=new_state, done=True)

    def close(self) -> None:
        self.pool.close()


def _with_env(command: dict[str, Any], env: int | None) -> dict[str, Any]:
    return command if env is None else {**command, "env": env}
