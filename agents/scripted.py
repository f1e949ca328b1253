"""A scripted policy: replies from a list or a function, for tests and benchmarks.

It follows the :class:`~turngym.agents.policy.Policy` contract exactly, so everything that runs
a real model runs with it: with a tokenizer it returns the reply's token ids (plus EOS, as a
model that stopped would) and one constant log-probability per token; without one the ids and
logprobs are empty. ``max_tokens`` and stop strings are applied as a real backend would.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Sequence
from typing import Any

from turngym.agents.policy import Completion, Prompt, SamplingParams

__all__ = ["ScriptedPolicy", "prompt_text"]

#: ``fn(prompt_text, seed) -> reply``: the prompt as text (decoded ids or the chat messages).
ReplyFn = Callable[[str, "int | None"], str]


def prompt_text(prompt: Prompt, tokenizer: Any = None) -> str:
    """The prompt as text: decoded token ids, or the chat messages as ``role: content`` lines."""
    if prompt and isinstance(prompt[0], dict):
        return "\n".join(f"{m.get('role', '')}: {m.get('content') or ''}" for m in prompt)  # type: ignore[union-attr]
    if tokenizer is None or not prompt:
        return ""
    return tokenizer.decode(prompt)


class ScriptedPolicy:
    """Replies in turn from ``replies`` (cycling), or ``replies(prompt_text, seed)`` per prompt.

    ``calls`` counts ``generate`` calls and ``batch_sizes`` records how many prompts each had,
    so tests can check how a caller batches.
    """

    def __init__(
        self,
        replies: Sequence[str] | ReplyFn,
        tokenizer: Any = None,
        logprob: float = -1.0,
        add_eos: bool = True,
    ) -> None:
        if callable(replies):
            self._fn: ReplyFn = replies
        else:
            if not replies:
                raise ValueError("a scripted policy needs at least one reply")
            cycle, lock = itertools.cycle(list(replies)), threading.Lock()

            def next_reply(_text: str, _seed: int | None) -> str:
                with lock:
                    return next(cycle)

            self._fn = next_reply
        self.tokenizer = tokenizer
        self.logprob = logprob
        self.add_eos = add_eos
        self.calls = 0
        self.batch_sizes: list[int] = []

    def generate(self, prompts: list[Prompt], sampling: SamplingParams) -> list[Completion]:
        self.calls += 1
        self.batch_sizes.append(len(prompts))
        seeds = sampling.seeds or [None] * len(prompts)
        if len(seeds) != len(prompts):
            raise ValueError(f"got {len(seeds)} seeds for {len(prompts)} prompts")
        return [self._complete(p, s, sampling) for p, s in zip(prompts, seeds)]

    def _complete(self, prompt: Prompt, seed: int | None, sampling: SamplingParams) -> Completion:
        text = self._fn(prompt_text(prompt, self.tokenizer), seed)
        finish = "stop"
        for stop in sampling.stop:
            cut = text.find(stop)
            if cut >= 0:
                text = text[: cut + len(stop)]
        if self.tokenizer is None:
            if len(text) > sampling.max_tokens:  # no tokenizer: a character stands for a token
                text, finish = text[: sampling.max_tokens], "length"
            return Completion(text=text, finish_reason=finish)
        ids = list(self.tokenizer.encode(text, add_special_tokens=False))
        eos = getattr(self.tokenizer, "eos_token_id", None)
        if self.add_eos and eos is not None:
            ids.append(eos)
        if len(ids) > sampling.max_tokens:
            ids, finish = ids[: sampling.max_tokens], "length"
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
        return Completion(text=text, token_ids=ids, logprobs=[self.logprob] * len(ids), finish_reason=finish)
