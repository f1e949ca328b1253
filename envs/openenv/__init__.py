"""Interop with OpenEnv's protocol (the ``openenv-core`` package, extra ``[openenv]``).

Both directions, each in its own module (imported lazily: openenv-core is optional):

- :mod:`turngym.envs.openenv.server`: any registered turngym environment as an OpenEnv
  server (``turngym serve-env ENV_ID``): one environment instance per WebSocket session,
  bounded session count, idle sessions reaped, every environment closed at shutdown.
- :mod:`turngym.envs.openenv.client`: any OpenEnv server as a turngym environment
  (``turngym.make("openenv:http://HOST:PORT")`` or :class:`OpenEnvEnv` under a registered id).

The wire format of a served turngym environment (what a foreign client sees):

- action: ``{"message": str}`` — the model's raw reply.
- observation fields: ``text`` (the observation), ``task_id``, ``action_valid``,
  ``tool_calls``, ``anchor``, ``stratum``, ``success``, ``terminated``, ``truncated``,
  ``info`` (the other info keys), and on reset ``instructions``, ``tools`` and
  ``example_actions`` (the system prompt and tool schemas an agent needs, a few well-formed
  replies); the protocol's own ``reward`` and ``done`` (``terminated or truncated``).
- reset parameters: ``seed``, ``task_id`` (a task of the served suite), ``episode_id``,
  ``tool_call_style`` (the syntax the client's model writes tool calls in: ``hermes``,
  ``openai_json``, ``react``, ...; it holds for the session's later resets; the server's
  ``--tool-call-style`` applies until a client names one).
"""

from __future__ import annotations

from typing import Any

__all__ = ["OpenEnvEnv", "make_openenv_env", "make_app", "running"]


def __getattr__(name: str) -> Any:
    if name in ("OpenEnvEnv", "make_openenv_env"):
        from turngym.envs.openenv import client

        return getattr(client, name)
    if name in ("make_app", "running"):
        from turngym.envs.openenv import server

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
