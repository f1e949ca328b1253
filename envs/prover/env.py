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

Tools: ``proof(text)`` (proof mode) or ``tactic(text)`` (tactic mode), run through the tool
contract (:func:`turngym.tools.dispatch`). A reply that is not a tool call is the shortcut: its
code block (or the whole reply) is the proof or tactic. A reply with no proof or tactic in it
(empty, control characters, or several code blocks in tactic mode) is answered with an error
observation and ``action_valid = False``. A proof that cheats (sorry,
admit, added axioms, kernel-skipping, a different statement) scores 0 and ``info["cheat"]``
names what was found.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field, field_validator

from turngym.envs.core import EnvUnavailable, TurnEnv
from turngym.envs.tasks import Task, TaskSuite
from turngym.sandboxes.provers.base import ProofState, Prover, ProverUnavailable, canonical_goals
from turngym.tools import ToolResult, ToolTurnOptions
from turngym.tools.base import Tool, ToolCall, ToolError, truncate_text
from turngym.tools.dispatch import dispatch, plain_output

__all__ = ["ProverEnv", "CoqEnv", "LeanEnv", "PROOF_TOOL", "TACTIC_TOOL", "parse_reply"]

#: Most characters of prover feedback shown per turn (head and tail kept): a prover echoes the
#: offending text, and a megabyte reply must not come back as a megabyte observation.
FEEDBACK_CHARS = 4000
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_BLOCK = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)```", re.DOTALL)


class ProofArgs(BaseModel):
    text: str = Field(min_length=1)
    """The proof (proof mode) or the one tactic (tactic mode)."""

    @field_validator("text")
    @classmethod
    def _no_control_characters(cls, text: str) -> str:
        if _CONTROL.search(text):
            raise ValueError("control characters, which no proof contains")
        return text


PROOF_TOOL = Tool("proof", "Submit a whole proof of the theorem; returns the prover's verdict.", ProofArgs)
TACTIC_TOOL = Tool("tactic", "Apply one tactic; returns the goals that remain.", ProofArgs)
#: One proof or tactic per reply; the prover's feedback is the whole observation.
_OPTIONS = ToolTurnOptions(max_calls_per_turn=1, observation_chars=1 << 20)


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
        self.tools = [PROOF_TOOL if mode == "proof" else TACTIC_TOOL]

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

    def _read(self, reply: str, calls: list[ToolCall]) -> list[ToolCall]:
        """The reply's tool call, else its code block (or the whole reply) as the proof or tactic."""
        if calls:
            return calls
        text, why = parse_reply(reply, self.language, single=self.mode == "tactic")
        if text is None:
            raise ToolError(why)
        return [ToolCall(name=self.tools[0].name, arguments={"text": text})]

    def _step(self, action: str) -> tuple[str, float, bool, dict[str, Any]]:
        assert self.task is not None
        handlers = {PROOF_TOOL.name: self._proof, TACTIC_TOOL.name: self._tactic}
        turn = dispatch(action, self.tools, handlers, _OPTIONS, style=self.call_style, read=self._read,
                        whole_reply=True, show=plain_output)
        if not turn.valid:
            return f"Invalid reply: {turn.error}. {self._format_hint()}", 0.0, False, {"action_valid": False, "anchor": self._anchor}
        return turn.observation, turn.reward, turn.terminated, {**turn.info, "anchor": self._anchor, "tool_calls": turn.ran}

    def _proof(self, args: ProofArgs) -> ToolResult:
        assert self.task is not None
        meta = self.task.metadata
        result = self.prover.check(meta["statement"], args.text, meta.get("header", ""))
        info: dict[str, Any] = {"success": result.ok, **({"cheat": result.cheat} if result.cheat else {})}
        if result.ok:
            self._anchor = (self.task.id, "proved")
            return ToolResult("The proof is complete.", 1.0, True, info)
        feedback = truncate_text("\n".join(result.errors), FEEDBACK_CHARS)[0]
        self._anchor = (self.task.id, feedback)
        return ToolResult(f"The proof was rejected:\n{feedback}", 0.0, False, info)

    def _tactic(self, args: ProofArgs) -> ToolResult:
        assert self._state is not None
        result = self.prover.apply(self._state, args.text)
        info: dict[str, Any] = {"success": result.done, **({"cheat": result.cheat} if result.cheat else {})}
        self._state = result.state
        self._most_goals = max(self._most_goals, len(result.state.goals))
        self._anchor = self._state.anchor
        if result.done:
            return ToolResult("No goals remain: the proof is complete.", 1.0, True, info)
        goals = canonical_goals(self._state.goals)
        error = truncate_text(result.error, FEEDBACK_CHARS)[0] if result.error else ""
        obs = f"Error: {error}\n\nGoals (unchanged):\n{goals}" if error else f"Goals:\n{goals}"
        reward = 0.0
        if self.partial_credit and self.turn >= self.max_turns and self._most_goals:
            closed = self._most_goals - len(self._state.goals)
            reward = self.partial_credit * closed / self._most_goals
        return ToolResult(obs, reward, False, info)

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
