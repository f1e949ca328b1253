"""From a policy spec to an episode runner.

Specs, by scheme (the prefix before the first ``:``):

- ``scripted:<name>`` (see :mod:`~turngym.agents.evaluation.scripted`);
- ``openai:URL#MODEL``: any OpenAI-compatible chat-completions endpoint
  (:class:`~turngym.agents.openai_http.OpenAIPolicy`; key from ``OPENAI_API_KEY``; the
  environment's tools go as the request's ``tools`` and native tool calls come back as the
  environment's ``<tool_call>`` text);
- ``vllm:SPEC``: a vLLM engine in this process over a folder, a Hugging Face id or a turngym
  model name (:func:`~turngym.agents.vllm_policy.load_vllm_policy`; needs a CUDA GPU);
- anything else — a Hugging Face id or path, ``smollm2``, ``tiny``, a turngym checkpoint —
  goes to ``turngym.agents.models.load_policy(spec)``.

Every policy, scripted or model, is run by the rollout engine through :func:`policy_runner`.

Schemes are a registry (:data:`RUNNER_SCHEMES`: prefix before the first ``:`` -> factory), so
a new kind of spec is one :func:`register_scheme` call, not another branch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from turngym.agents.evaluation.runner import EpisodeRunner, EvalConfigError, policy_runner
from turngym.agents.evaluation.scripted import scripted_runner

__all__ = ["RUNNER_SCHEMES", "policy_runner", "register_scheme", "runner_for_spec"]

def _openai_runner(rest: str, options: dict[str, Any]) -> EpisodeRunner:
    from turngym.agents.openai_http import OpenAIPolicy

    try:
        policy = OpenAIPolicy.from_spec(rest)
    except ValueError as err:
        raise EvalConfigError(str(err)) from None
    return _closing(policy_runner(policy, options), policy)


def _vllm_runner(rest: str, options: dict[str, Any]) -> EpisodeRunner:
    from turngym.agents.vllm_policy import VLLMUnavailable, load_vllm_policy

    try:
        policy = load_vllm_policy(rest)
    except VLLMUnavailable as err:
        raise EvalConfigError(str(err)) from None
    return _closing(policy_runner(policy, options), policy)


def _closing(runner: EpisodeRunner, policy: Any) -> EpisodeRunner:
    """The runner with a ``close()`` that releases the policy (``turngym eval`` calls it)."""
    runner.close = policy.close  # type: ignore[attr-defined]
    return runner


def _scripted(name: str, options: dict[str, Any]) -> EpisodeRunner:
    """``scripted:<name>``, run by the rollout engine with the ``rollout`` option as model policies are."""
    return scripted_runner(name, options.get("env_kwargs"), options.get("rollout"))


#: ``factory(rest of the spec, options) -> EpisodeRunner``, by spec scheme.
RUNNER_SCHEMES: dict[str, Callable[[str, dict[str, Any]], EpisodeRunner]] = {
    "scripted": _scripted,
    "openai": _openai_runner,
    "vllm": _vllm_runner,
}


def register_scheme(scheme: str, factory: Callable[[str, dict[str, Any]], EpisodeRunner]) -> None:
    """Handle specs ``<scheme>:<rest>`` with ``factory(rest, options)``."""
    RUNNER_SCHEMES[scheme] = factory


def _model_runner(spec: str, options: dict[str, Any]) -> EpisodeRunner:
    try:
        models = importlib.import_module("turngym.agents.models")
    except ModuleNotFoundError as err:
        if err.name != "turngym.agents.models":
            raise
        models = None
    load_policy = getattr(models, "load_policy", None)
    if load_policy is None:
        raise EvalConfigError(f"policy spec {spec!r} needs turngym.agents.models.load_policy, which this installation lacks")
    return policy_runner(load_policy(spec), options)


def runner_for_spec(spec: str, **options: Any) -> EpisodeRunner:
    """The episode runner for a policy spec (see the module docstring)."""
    scheme, sep, rest = spec.partition(":")
    factory = RUNNER_SCHEMES.get(scheme) if sep else None
    if factory is None:
        return _model_runner(spec, options)
    return factory(rest, options)
