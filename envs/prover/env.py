"""Theorem-proving environments: prove the task's statement in Coq or Lean 4.

Two modes (env kwarg ``mode``):

``proof``
    One reply = a whole proof (in a ```coq / ```lean code block, or bare). The prover checks it
    against the statement the environment builds itself. Accepted: reward 1, episode ends.
    Rejected: the prover's errors are the observation and the agent may repair the proof, up
    to ``max_turns`` replies. ``anchor`` = (task id, the feedback the agent acts on).

``tactic``
    One reply = one tactic. The observation is the goals left (or the tactic's error, with the
    goals unchanged: a failing tactic is a valid action). ``anchor`` = the canonical goal state,
    which repeats across trajectories that reach the same goals (GiGPO's step groups). Reward 1
    when no goal remains; with ``partial_credit > 0`` an unfinished episode's last step earns
    ``partial_credit * closed / opened`` (goals closed out of the most goals open at once).

A reply with no proof or tactic in it (empty, control characters, or several code blocks in
tactic mode) is
answered with an error observation and ``action_valid = False``. A proof that cheats (sorry,
admit, added axioms, kernel-skipping, a different statement) scores 0 and ``info["cheat"]``
names what was found.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal

from turngym.envs.core import EnvUnavailable, TurnEnv
from turngym.envs.tasks import Task, TaskSuite
from turngym.sandboxes.provers.base import ProofState, Prover, ProverUnavailable, canonical_goals
from turngym.tools.base import truncate_text

__all__ = ["ProverEnv", "CoqEnv", "LeanEnv", "parse_reply"]

#: Most characters of prover feedback shown per turn (head and tail kept): a prover echoes the
#: offending text, and a megabyte reply must not come back as a megabyte observation.
FEEDBACK_CHARS = 4000
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_BLOCK = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)```", re.DOTALL)


def parse_reply(reply: str, language: str, single: bool = False) -> tuple[str | None, str]:
    """The proof or tactic in a reply: ``(text, "")`` or ``(None, why the reply is invalid)``.

    Code blocks tagged with ``language`` (or untagged) win; without any block the whole reply
    is taken. ``single``: exactly one block is allowed (tactic mode)."""
    blocks = [body for tag, body in _BLOCK.findall(reply) if tag.lower() in ("", language)]
    if blocks:
        if single and len(blocks) > 1:
            return None, f"reply with one tactic, got {len(blocks)} code blocks"
        text = blocks[-1].strip()
    else:
        text = reply.strip()
    if not text:
        return None, "the reply holds no proof" if not single else "the reply holds no tactic"
    if _CONTROL.search(text):
        return None, "the reply holds control characters, which no proof contains"
    return text, ""


class ProverEnv(TurnEnv):
    """Base of the prover environments; subclasses name the language and build the prover."""

    language: ClassVar[str] = ""
    mode: Literal["proof", "tactic"]

    def __init__(
        self,
        suite: str | TaskSuite | None = None,
        split: str = "train",
        mode: Literal["proof", "tactic"] = "proof",
        max_turns: int | None = None,
        partial_credit: float = 0.0,
        prover: Prover | None = None,
        prover_config: dict[str, Any] | None = None,
        render_mode: str | None = None,
    ) -> None:
        if mode not in ("proof", "tactic"):
            raise ValueError(f"mode must be 'proof' or 'tactic', not {mode!r}")
        super().__init__(suite, split, max_turns or (4 if mode == "proof" else 20), render_mode)
        self.mode = mode
        self.partial_credit = partial_credit
        self._prover = prover
        self._prover_config = prover_config or {}
        self._state: ProofState | None = None
        self._most_goals = 0
        self._anchor: Any = None
        self.instructions = self._instructions()

    # -- what a language provides ----------------------------------------------------------
    def _make_prover(self, config: dict[str, Any]) -> Prover:
        raise NotImplementedError

    def _theorem_text(self, task: Task) -> str:
        raise NotImplementedError

    def _instructions(self) -> str:
        raise NotImplementedError

    # -- plumbing --------------------------------------------------------------------------
    @property
    def prover(self) -> Prover:
        if self._prover is None:
            try:
                self._prover = self._make_prover(self._prover_config)
            except ProverUnavailable as err:  # the env layer's name for "missing here"
                raise EnvUnavailable(str(err)) from None
        return self._prover

    def _reset_task(self, task: Task) -> tuple[str, dict[str, Any]]:
        statement, header = task.metadata["statement"], task.metadata.get("header", "")
        intro = f"{task.prompt}\n\n{self._theorem_text(task)}"
        prover = self.prover  # a prover that cannot run here fails now, with one sentence
        if self.mode == "proof":
            self._state = None
            self._anchor = (task.id, "")
            return intro, {"anchor": self._anchor}
        self._state = prover.start(statement, header)
        self._most_goals = len(self._state.goals)
        self._anchor = self._state.anchor
        return f"{intro}\n\nGoals:\n{canonical_goals(self._state.goals)}", {"anchor": self._anchor}

    def _step(self, action: str) -> tuple[str, float, bool, dict[str, Any]]:
        assert self.task is not None
        text, why = parse_reply(action, self.language, single=self.mode == "tactic")
        if text is None:
            return f"Invalid reply: {why}. {self._format_hint()}", 0.0, False, {"action_valid": False, "anchor": self._anchor}
        return self._step_proof(text) if self.mode == "proof" else self._step_tactic(text)

    def _step_proof(self, proof: str) -> tuple[str, float, bool, dict[str, Any]]:
        assert self.task is not None
        meta = self.task.metadata
        result = self.prover.check(meta["statement"], proof, meta.get("header", ""))
        info: dict[str, Any] = {"success": result.ok}
        if result.cheat:
            info["cheat"] = result.cheat
        if result.ok:
            self._anchor = (self.task.id, "proved")
            return "The proof is complete.", 1.0, True, {**info, "anchor": self._anchor}
        feedback = truncate_text("\n".join(result.errors), FEEDBACK_CHARS)[0]
        self._anchor = (self.task.id, feedback)
        return f"The proof was rejected:\n{feedback}", 0.0, False, {**info, "anchor": self._anchor}

    def _step_tactic(self, tactic: str) -> tuple[str, float, bool, dict[str, Any]]:
        assert self._state is not None
        result = self.prover.apply(self._state, tactic)
        info: dict[str, Any] = {"success": result.done}
        if result.cheat:
            info["cheat"] = result.cheat
        self._state = result.state
        self._most_goals = max(self._most_goals, len(result.state.goals))
        self._anchor = self._state.anchor
        info["anchor"] = self._anchor
        if result.done:
            return "No goals remain: the proof is complete.", 1.0, True, info
        goals = canonical_goals(self._state.goals)
        error = truncate_text(result.error, FEEDBACK_CHARS)[0] if result.error else ""
        obs = f"Error: {error}\n\nGoals (unchanged):\n{goals}" if error else f"Goals:\n{goals}"
        reward = 0.0
        if self.partial_credit and self.turn >= self.max_turns and self._most_goals:
            closed = self._most_goals - len(self._state.goals)
            reward = self.partial_credit * closed / self._most_goals
        return obs, reward, False, info

    def _format_hint(self) -> str:
        if self.mode == "tactic":
            return f"Reply with one {self.language} tactic (bare, or in a ```{self.language} block)."
        return f"Reply with a proof in a ```{self.language} code block."

    def close(self) -> None:
        if self._prover is not None:
            self._prover.close()
        super().close()


class CoqEnv(ProverEnv):
    description = "Prove a statement in Coq (coqc): whole proofs or one tactic per turn."
    language = "coq"

    def _make_prover(self, config: dict[str, Any]) -> Prover:
        from turngym.sandboxes.provers.coq import CoqConfig, CoqProver

        return CoqProver(CoqConfig(**config))

    def _theorem_text(self, task: Task) -> str:
        header = task.metadata.get("header", "")
        return f"{header}\nTheorem goal : {task.metadata['statement']}.".strip()

    def _instructions(self) -> str:
        if self.mode == "tactic":
            return ("You prove Coq theorems one tactic at a time. Reply with exactly one tactic "
                    "(e.g. `intros n.`); you will see the goals that remain.")
        return ("You prove Coq theorems. Reply with the proof script between `Proof.` and `Qed.` "
                "in a ```coq code block. Admitted, admit and new axioms are not accepted.")

    def example_actions(self) -> list[str]:
        if self.mode == "tactic":
            return ["intros.", "```coq\nauto.\n```", ""]
        return ["```coq\nintros. auto.\n```", "Proof. reflexivity. Qed.", ""]


class LeanEnv(ProverEnv):
    description = "Prove a statement in Lean 4 (the leanprover-community REPL)."
    language = "lean"

    def _make_prover(self, config: dict[str, Any]) -> Prover:
        from turngym.sandboxes.provers.lean import LeanConfig, LeanProver

        prover = LeanProver(LeanConfig(**config))
        reason = prover.available()
        if reason:
            raise ProverUnavailable(reason)
        return prover

    def _theorem_text(self, task: Task) -> str:
        header = task.metadata.get("header", "")
        return f"{header}\ntheorem goal {task.metadata['statement']} := by".strip()

    def _instructions(self) -> str:
        if self.mode == "tactic":
            return ("You prove Lean 4 theorems one tactic at a time. Reply with exactly one tactic "
                    "(e.g. `intro n`); you will see the goals that remain.")
        return ("You prove Lean 4 theorems. Reply with what follows `:=` (e.g. `by simp`) in a "
                "```lean code block. sorry, admit, native_decide and new axioms are not accepted.")

    def example_actions(self) -> list[str]:
        if self.mode == "tactic":
            return ["intro h", "```lean\nsimp\n```", ""]
        return ["```lean\nby simp\n```", "by omega", ""]
