"""The prover contract: one interface for every proof assistant turngym drives.

A :class:`Prover` checks proofs of a *statement* it builds itself (the model only ever supplies
a proof, so it cannot weaken the theorem):

``check(statement, proof) -> CheckResult``
    Whole-proof mode. ``statement`` is the theorem's type in the prover's language (Coq:
    ``forall n : nat, n + 0 = n``; Lean: the binders and type after the name,
    ``(n : Nat) : n + 0 = n``); ``header`` is what precedes it (``Require Import Lia.``,
    ``import Mathlib``), the same for many statements, so backends may load it once. ``proof`` is the body (Coq: the tactic script between
    ``Proof.`` and ``Qed.``; Lean: what follows ``:=``). ``CheckResult.ok`` is True only when the
    prover accepted the proof *and* no cheat was found: no ``sorry``/``admit``/``Admitted``, no
    axiom beyond the prover's standard ones (``#print axioms`` / ``Print Assumptions``), no
    kernel-skipping option, no redefinition of the statement. A rejected proof carries the
    prover's error messages (for repair turns) and, for cheats, ``cheat`` names what was found.

``start(statement) -> ProofState`` and ``apply(state, tactic) -> TacticResult``
    Tactic mode. A :class:`ProofState` is immutable: ``apply`` never changes its argument, so
    an agent may branch from any state. A tactic that fails is a normal result
    (``TacticResult.error`` set, ``state`` unchanged); ``done`` is True when no goal remains and
    the finished proof passed the same checks as ``check``.

Errors the *user* causes (the prover is not installed, the configured project does not exist)
raise :class:`ProverUnavailable` with one clear sentence. Model output never raises: a timeout
or a crash of the prover on a model's proof is a failed :class:`CheckResult`.
"""

from __future__ import annotations

import re
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "CheckResult",
    "ProofState",
    "Prover",
    "ProverError",
    "ProverUnavailable",
    "TacticResult",
    "canonical_goals",
]


class ProverError(RuntimeError):
    """The prover process misbehaved (died, timed out, answered garbage)."""


class ProverUnavailable(ProverError):
    """The prover cannot run here (not installed, project missing); one clear sentence."""


class CheckResult(BaseModel):
    """The verdict on one whole proof."""

    model_config = ConfigDict(frozen=True)

    ok: bool
    """True when the proof is complete, accepted by the prover and free of cheats."""
    errors: list[str] = Field(default_factory=list)
    """The prover's error messages (or why the proof was refused), for repair turns."""
    cheat: str | None = None
    """What forbidden device was found (``sorry``, ``axiom ax``, ...), when one was."""
    timed_out: bool = False
    """The prover ran past its deadline (the proof is then not ok)."""
    duration: float = 0.0
    """Seconds the check took."""


class ProofState(BaseModel):
    """One point in a tactic proof: the goals left and how we got here.

    ``tactics`` is the path from the statement, so a backend that lost its process (recycled,
    crashed) can rebuild the state by replaying it; ``handle`` is the backend's own reference
    (Lean: REPL proof-state id and the process generation), never needed for correctness.
    """

    model_config = ConfigDict(frozen=True)

    statement: str
    header: str = ""
    """What comes before the theorem (imports, opens); part of the proof's context."""
    tactics: tuple[str, ...] = ()
    goals: tuple[str, ...] = ()
    """The goals left, one string each, as the prover prints them."""
    handle: Any = None

    @property
    def done(self) -> bool:
        return not self.goals

    @property
    def anchor(self) -> str:
        """The canonical goal state: the same goals give the same anchor on any path (GiGPO)."""
        return canonical_goals(self.goals)


class TacticResult(BaseModel):
    """The outcome of one tactic."""

    model_config = ConfigDict(frozen=True)

    state: ProofState
    """The state after the tactic (the state before it when the tactic failed)."""
    error: str | None = None
    """Why the tactic failed (the prover's message, or the cheat found); None on success."""
    cheat: str | None = None
    done: bool = False
    """No goal remains and the whole proof passed the final check."""

    @property
    def goals(self) -> tuple[str, ...]:
        return self.state.goals


@runtime_checkable
class Prover(Protocol):
    """What every backend implements (see the module docstring)."""

    name: str

    def check(self, statement: str, proof: str, header: str = "", timeout: float | None = None) -> CheckResult: ...

    def start(self, statement: str, header: str = "") -> ProofState: ...

    def apply(self, state: ProofState, tactic: str) -> TacticResult: ...

    def close(self) -> None: ...


_SPACES = re.compile(r"[ \t]+")


def canonical_goals(goals: tuple[str, ...] | list[str]) -> str:
    """Goals as one canonical text: runs of blanks collapsed, blank lines and trailing space
    dropped, hypothesis names kept (renaming a hypothesis is a different state to the agent)."""
    parts = []
    for goal in goals:
        lines = [_SPACES.sub(" ", line).strip() for line in goal.strip().splitlines()]
        parts.append("\n".join(line for line in lines if line))
    return "\n\n".join(parts) if parts else "no goals"
