"""Guess a number between 1 and 100; the environment answers "higher" or "lower"."""

import re

import turngym
from turngym.envs import Task, TaskSuite, TurnEnv

_GUESS = re.compile(r"<guess>\s*(\d+)\s*</guess>")


class GuessEnv(TurnEnv):
    description = "Guess a number from 1 to 100 with higher/lower hints."
    instructions = "Find the secret number from 1 to 100. Reply with <guess>N</guess>."

    def __init__(self, max_turns: int = 10, **kwargs):
        tasks = [Task(id=f"guess-{n}", answer=n, split="test" if n % 5 == 0 else "train") for n in range(1, 101)]
        super().__init__(suite=TaskSuite("guess", tasks), max_turns=max_turns, **kwargs)

    def _reset_task(self, task):
        self.low, self.high = 1, 100
        return self.instructions, {"anchor": (self.low, self.high)}

    def _step(self, action):
        match = _GUESS.search(action)
        if not match:
            return "Invalid reply: use <guess>N</guess>.", 0.0, False, {"action_valid": False, "anchor": (self.low, self.high)}
        guess, secret = int(match.group(1)), self.task.answer
        calls = [{"name": "guess", "arguments": {"n": guess}}]
        if guess == secret:
            return "Correct!", 1.0, True, {"success": True, "anchor": (self.low, self.high), "tool_calls": calls}
        if guess < secret:
            self.low = max(self.low, guess + 1)
        else:
            self.high = min(self.high, guess - 1)
        hint = "higher" if guess < secret else "lower"
        return f"{guess} is wrong: go {hint}.", 0.0, False, {"anchor": (self.low, self.high), "tool_calls": calls}

    def example_actions(self):
        return ["<guess>50</guess>", "<guess>25</guess>"]


def register_envs():
    turngym.register("guess/Guess-v0", entry_point="turngym_guess:GuessEnv", description=GuessEnv.description)
    turngym.register("guess/Stock-v0", entry_point="turngym_guess.stock:StockEnv", description="Look up stock with a tool; answer the total.")
