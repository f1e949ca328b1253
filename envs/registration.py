"""Registering and making environments, on top of Gymnasium's registry.

- ``register(id, entry_point="pkg.module:Class", kwargs=..., description=...)`` records the
  environment in Gymnasium's registry (the entry point is imported only on ``make``) and keeps
  a one-line description for ``turngym envs``.
- Third-party packages are discovered through the entry-point group ``turngym.envs``: each
  entry point names a callable that registers that package's environments (or a module whose
  import does). They are loaded once, on the first ``make`` or listing.
- ``make(id)`` answers an unknown id with :class:`UnknownEnvError` and a "did you mean ...".
- Ids of the form ``SCHEME:REST`` with a scheme in :data:`ID_SCHEMES` are made by that
  scheme's factory from ``REST``: ``make("openenv:http://HOST:PORT")`` is any OpenEnv server.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import logging
from typing import Any

import gymnasium as gym

__all__ = ["ENTRY_POINT_GROUP", "UnknownEnvError", "register", "make", "registered_envs", "load_plugins"]

ENTRY_POINT_GROUP = "turngym.envs"
log = logging.getLogger(__name__)

#: ``make("SCHEME:REST", **kw)`` calls the factory (a lazy "pkg.module:function") with REST.
ID_SCHEMES: dict[str, str] = {"openenv": "turngym.envs.openenv.client:make_openenv_env"}

_DESCRIPTIONS: dict[str, str] = {}
_plugins_loaded = False


class UnknownEnvError(gym.error.Error, ValueError):
    """No environment is registered under the id asked for."""


def register(
    id: str,
    entry_point: str | Any,
    kwargs: dict[str, Any] | None = None,
    description: str = "",
    **gym_kwargs: Any,
) -> None:
    """Register an environment under ``id`` (e.g. ``"mypkg/Maze-v0"``)."""
    # Gymnasium's passive checker is replaced by turngym's own conformance checker.
    gym_kwargs.setdefault("disable_env_checker", True)
    spec = gym.registry.get(id)
    if spec is not None and spec.entry_point == entry_point and spec.kwargs == (kwargs or {}):
        _DESCRIPTIONS[id] = description or _DESCRIPTIONS.get(id, "")
        return  # the same registration again (e.g. a plug-in loaded twice): nothing to do
    gym.register(id=id, entry_point=entry_point, kwargs=kwargs or {}, **gym_kwargs)
    _DESCRIPTIONS[id] = description


def load_plugins() -> None:
    """Import every package registered under the ``turngym.envs`` entry-point group (once)."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
            if callable(obj):
                obj()
        except Exception as err:  # a broken plug-in must not take turngym down with it
            log.warning("turngym: could not load environments from %s (%s): %s", ep.name, ep.value, err)


def registered_envs() -> dict[str, str]:
    """turngym environments (built-in and plug-in) -> one-line description."""
    load_plugins()
    return {env_id: _DESCRIPTIONS[env_id] for env_id in sorted(_DESCRIPTIONS) if env_id in gym.registry}


def _unknown(env_id: str) -> UnknownEnvError:
    known = list(gym.registry)
    lowered = {k.lower(): k for k in known}
    close = [lowered[c] for c in difflib.get_close_matches(env_id.lower(), list(lowered), n=3, cutoff=0.6)]
    if close:
        return UnknownEnvError(f"no environment named {env_id!r}; did you mean {' or '.join(repr(c) for c in close)}?")
    return UnknownEnvError(f"no environment named {env_id!r}; `turngym envs` lists the registered ones")


def make(id: str, **kwargs: Any) -> gym.Env:
    """Make a registered environment; unknown ids raise :class:`UnknownEnvError`."""
    load_plugins()
    scheme, colon, rest = id.partition(":")
    if colon and scheme in ID_SCHEMES and id not in gym.registry:
        module, _, attr = ID_SCHEMES[scheme].partition(":")
        return getattr(importlib.import_module(module), attr)(rest, **kwargs)
    if id not in gym.registry:
        raise _unknown(id)
    return gym.make(id, **kwargs)
