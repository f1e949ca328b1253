"""Scripted policies: the rollout engine runs them exactly as it runs a model.

Both follow the :class:`~turngym.agents.policy.Policy` contract, so everything that runs a real
model runs with them: with a tokenizer a reply comes with its token ids (plus EOS, as a model
that stopped would) and one constant log-probability per token; without one the ids and
logprobs are empty.

- :class:`ScriptedPolicy` replies from a list or from a function of the prompt text (tests,
  benchmarks); ``max_tokens`` and stop strings are applied as a real backend would.
- :class:`EpisodePolicy` replies from ``act(view)``, a function of the episode itself
  (:class:`~turngym.agents.policy.EpisodeView`: the latest observation and info, the
  environment, a per-episode scratch space): the environment's expert (:func:`expert_reply`,
  the warm start's demonstrations and ``scripted:solver``), a random baseline, an environment
  family's own scripted policies (:func:`per_episode`). ``act`` returning None ends the episode
  (the expert has no move from here). Its replies are played as written: an expert's reply is
  a demonstration, never cut by ``max_tokens`` or a stop string.
"""

from __future__ import annotations

import importlib
import itertools
import threading
from collections.abc import Callable, Sequence
from typing import Any

from turngym.agents.policy import ABORT, Completion, EpisodeView, Prompt, SamplingParams

__all__ = [
    "ActFn",
    "EpisodePolicy",
    "NoExpertError",
    "ScriptedPolicy",
    "episode_env",
    "expert",
    "expert_reply",
    "per_episode",
    "prompt_text",
    "register_expert",
]

#: ``fn(prompt_text, seed) -> reply``: the prompt as text (decoded ids or the chat messages).
ReplyFn = Callable[[str, "int | None"], str]
#: ``act(view) -> reply``, or None to end the episode: what an :class:`EpisodePolicy` plays.
ActFn = Callable[[EpisodeView], "str | None"]


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
        ids = _reply_ids(self.tokenizer, text, self.add_eos)
        if len(ids) > sampling.max_tokens:
            ids, finish = ids[: sampling.max_tokens], "length"
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
        return Completion(text=text, token_ids=ids, logprobs=[self.logprob] * len(ids), finish_reason=finish)


def _reply_ids(tokenizer: Any, text: str, add_eos: bool) -> list[int]:
    """The reply's token ids as a model that wrote it and stopped would have sampled them."""
    ids = list(tokenizer.encode(text, add_special_tokens=False))
    eos = getattr(tokenizer, "eos_token_id", None)
    if add_eos and eos is not None:
        ids.append(eos)
    return ids


class EpisodePolicy:
    """Replies ``act(view)`` for each episode's turn; see the module docstring.

    ``reads_episodes`` makes the rollout engine pass an
    :class:`~turngym.agents.policy.EpisodeView` per prompt; a None from ``act`` is answered
    with :data:`~turngym.agents.policy.ABORT`, which ends that episode without a step.
    """

    reads_episodes = True

    def __init__(self, act: ActFn, tokenizer: Any = None, logprob: float = -1.0, add_eos: bool = True) -> None:
        self.act = act
        self.tokenizer = tokenizer
        self.logprob = logprob
        self.add_eos = add_eos

    def generate(self, prompts: list[Prompt], sampling: SamplingParams,
                 episodes: Sequence[EpisodeView] = ()) -> list[Completion]:
        if len(episodes) != len(prompts):
            raise ValueError(f"an EpisodePolicy needs one episode per prompt (got {len(episodes)} for "
                             f"{len(prompts)}): run it with the rollout engine")
        return [self._complete(self.act(view)) for view in episodes]

    def _complete(self, text: str | None) -> Completion:
        if text is None:
            return Completion(text="", finish_reason=ABORT)
        if self.tokenizer is None:
            return Completion(text=text)
        ids = _reply_ids(self.tokenizer, text, self.add_eos)
        return Completion(text=text, token_ids=ids, logprobs=[self.logprob] * len(ids))


def per_episode(make: Callable[[EpisodeView], Any]) -> ActFn:
    """``act`` for scripted policy objects with ``start(task)`` and ``act(observation, info)``
    (an environment family's own, e.g. ``turngym.envs.search.policies``): ``make(view)`` builds a
    fresh one for each episode (seed it from ``view.seed``), started with the environment's task."""

    def act(view: EpisodeView) -> str | None:
        actor = view.state.get("actor")
        if actor is None:
            actor = view.state["actor"] = make(view)
            actor.start(episode_env(view).task)
        return actor.act(view.observation, view.info)

    return act


# -- the environment's expert ------------------------------------------------------------------


class NoExpertError(ValueError):
    """The environment has no expert: no ``expert_reply`` of its own and none registered."""


# Env class ("module:QualName") -> expert, or a lazy "module:function" string: for env
# classes one cannot edit (an env family's own expert belongs in its ``expert_reply``).
_EXPERTS: dict[str, str | Callable[[Any], str | None]] = {}


def register_expert(env_class: str, expert: str | Callable[[Any], str | None]) -> None:
    """Register ``expert(env) -> reply | None`` for an env class named ``"module:QualName"``."""
    _EXPERTS[env_class] = expert


def expert_reply(env: Any) -> str | None:
    """The env's expert reply in its current state, or None: nothing solves the task from here.

    An env class that overrides ``TurnEnv.expert_reply`` has a solver. Otherwise an expert
    registered for the class (or a base class) answers; with neither, :class:`NoExpertError`.
    """
    from turngym.envs.core import TurnEnv

    if type(env).expert_reply is not TurnEnv.expert_reply:
        return env.expert_reply()
    for cls in type(env).__mro__:
        name = f"{cls.__module__}:{cls.__qualname__}"
        expert = _EXPERTS.get(name)
        if expert is None:
            continue
        if isinstance(expert, str):
            module, _, attr = expert.partition(":")
            expert = _EXPERTS[name] = getattr(importlib.import_module(module), attr)
        return expert(env)
    raise NoExpertError(
        f"there is no expert for {type(env).__name__}; give the env an expert_reply() method "
        "or register one with turngym.agents.scripted.register_expert"
    )


def expert(view: EpisodeView) -> str | None:
    """``act`` of the environment's expert: :func:`expert_reply` in the episode's current state."""
    return expert_reply(episode_env(view))


def episode_env(view: EpisodeView) -> Any:
    """The environment of ``view``, for a scripted policy that reads its state (a clear error
    where the environments live in other processes)."""
    if view.env is None:
        raise RuntimeError("this scripted policy reads the environment, which only an in-process "
                           "environment pool (ThreadEnvPool) can show")
    return view.env
