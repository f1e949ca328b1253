"""Prover backends behind one interface (see :mod:`turngym.sandboxes.provers.base`):
Coq through ``coqc``, Lean 4 through the leanprover-community REPL, and a replay process that
answers Lean REPL requests with recorded replies (tests)."""

from turngym.sandboxes.provers.base import (
    CheckResult,
    ProofState,
    Prover,
    ProverError,
    ProverUnavailable,
    TacticResult,
    canonical_goals,
)
from turngym.sandboxes.provers.coq import CoqConfig, CoqProver
from turngym.sandboxes.provers.lean import LeanConfig, LeanProver
from turngym.sandboxes.provers.process import ProcessLimits

__all__ = [
    "CheckResult",
    "CoqConfig",
    "CoqProver",
    "LeanConfig",
    "LeanProver",
    "ProcessLimits",
    "ProofState",
    "Prover",
    "ProverError",
    "ProverUnavailable",
    "TacticResult",
    "canonical_goals",
]
