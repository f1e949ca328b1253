"""Shared helpers for the prover tests: where the recorded Lean REPL transcripts are, and a
way to start a replay "REPL" over crafted transcripts."""

from __future__ import annotations

import json

import pytest
from turngym.sandboxes.provers.lean import LeanConfig, LeanProver
from turngym.sandboxes.provers.process import ProcessLimits
from turngym.sandboxes.provers.replay import replay_command


@pytest.fixture
def crafted_lean(tmp_path):
    """``make(pairs)`` -> a LeanProver whose REPL is a replay process answering ``pairs`` of
    (request dict, reply dict), written as a transcript in the REPL's own framing."""

    def make(pairs, **config) -> LeanProver:
        inp = tmp_path / "crafted.in"
        out = tmp_path / "crafted.expected.out"
        inp.write_text("\n\n".join(json.dumps(c, ensure_ascii=False) for c, _ in pairs) + "\n")
        out.write_text("\n\n".join(json.dumps(r, ensure_ascii=False, indent=1) for _, r in pairs) + "\n")
        return LeanProver(LeanConfig(command=replay_command([inp, out]), limits=ProcessLimits(timeout=10, memory_bytes=None), **config))

    return make
