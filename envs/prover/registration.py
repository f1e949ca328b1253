"""Registration of the theorem-proving environments and their suites."""

from __future__ import annotations

from turngym.envs.registration import register
from turngym.envs.tasks import register_suite


def register_all() -> None:
    register_suite("coq-core", "turngym.envs.prover.suites:load_coq_core",
                   "Coq: 65 Nat/bool/list/logic lemmas with reference proofs (train/test)")
    register_suite("lean4-core", "turngym.envs.prover.suites:load_lean4_core",
                   "Lean 4 core (no Mathlib): 62 Nat/List/logic lemmas with reference proofs (train/test)")
    coq, lean = "turngym.envs.prover.env:CoqEnv", "turngym.envs.prover.env:LeanEnv"
    register("turngym/Coq-v0", coq, {"suite": "coq-core", "mode": "proof"},
             "Coq, whole proofs: reply with a proof script; repair it after coqc's errors.")
    register("turngym/Coq-Tactic-v0", coq, {"suite": "coq-core", "mode": "tactic", "max_turns": 20},
             "Coq, tactic mode: one tactic per reply; the observation is the goals.")
    register("turngym/Lean-v0", lean, {"suite": "lean4-core", "mode": "proof"},
             "Lean 4, whole proofs through the REPL (needs a Lean project): repair after errors.")
    register("turngym/Lean-Tactic-v0", lean, {"suite": "lean4-core", "mode": "tactic", "max_turns": 20},
             "Lean 4, tactic mode through the REPL (needs a Lean project).")
