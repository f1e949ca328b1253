"""Sandboxes: where code written by a model runs (the lowest layer of turngym).

Public API::

    from turngym.sandboxes import (DockerSandbox, LocalSandbox, SandboxPool, ExecResult,
                                   SandboxLimits, make_sandbox, shared_pool, close_shared_pools)

    with make_sandbox("local") as sb:          # or "docker"; "auto" prefers Docker
        r = sb.python("print(1)")               # ExecResult(stdout="1\\n", status="ok", ...)

The protocol and its guarantees are in :mod:`turngym.sandboxes.base`; backends are looked up
by name in :data:`BACKENDS` (lazy "module:Class" strings), so importing this package does not
import the docker SDK.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from turngym.sandboxes.base import ExecResult, Sandbox, SandboxLimits, Status
from turngym.sandboxes.errors import (
    DockerNotInstalled,
    DockerNotRunning,
    ImageBuildError,
    ImageMissing,
    PoolExhausted,
    SandboxClosed,
    SandboxError,
    SandboxUnavailable,
    UnsafePath,
)
from turngym.sandboxes.local import LocalSandbox
from turngym.sandboxes.pool import SandboxPool, SharedPool, close_shared_pools, shared_pool

if TYPE_CHECKING:
    from turngym.sandboxes.docker import DockerSandbox

__all__ = [
    "BACKENDS",
    "DockerNotInstalled",
    "DockerNotRunning",
    "DockerSandbox",
    "ExecResult",
    "ImageBuildError",
    "ImageMissing",
    "LocalSandbox",
    "PoolExhausted",
    "Sandbox",
    "SandboxClosed",
    "SandboxError",
    "SandboxLimits",
    "SandboxPool",
    "SandboxUnavailable",
    "SharedPool",
    "Status",
    "UnsafePath",
    "close_shared_pools",
    "make_sandbox",
    "register_backend",
    "shared_pool",
]

BACKENDS: dict[str, str] = {
    "docker": "turngym.sandboxes.docker:DockerSandbox",
    "local": "turngym.sandboxes.local:LocalSandbox",
}


def register_backend(name: str, entry_point: str) -> None:
    """Make ``make_sandbox(name)`` build ``entry_point`` ("pkg.module:Class")."""
    BACKENDS[name] = entry_point


def _load(entry_point: str) -> type[Sandbox]:
    module, _, attr = entry_point.partition(":")
    return getattr(importlib.import_module(module), attr)


def make_sandbox(backend: str = "auto", limits: SandboxLimits | dict | None = None,
                 **options: Any) -> Sandbox:
    """A sandbox of ``backend`` ("docker", "local", or "auto": Docker when it is reachable
    and its image is built, else local). ``options`` go to the backend's constructor."""
    if isinstance(limits, dict):
        limits = SandboxLimits(**limits)
    if backend == "auto":
        from turngym.sandboxes.docker import DockerSandbox as _Docker

        try:
            return _Docker(limits, **options)
        except SandboxUnavailable:
            return LocalSandbox(limits)
    if backend not in BACKENDS:
        import difflib

        close = difflib.get_close_matches(backend, BACKENDS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise SandboxUnavailable(f"unknown sandbox backend {backend!r}{hint}: choose one of {', '.join(sorted(BACKENDS))}.")
    return _load(BACKENDS[backend])(limits, **options)


def __getattr__(name: str) -> Any:
    if name == "DockerSandbox":  # lazy: the docker SDK is imported only when asked for
        from turngym.sandboxes.docker import DockerSandbox

        return DockerSandbox
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
