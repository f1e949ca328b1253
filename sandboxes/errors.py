"""Errors a user can cause and fix around sandboxes; each message is one sentence saying how.

The CLI (``turngym.cli_sandbox``) lists :class:`SandboxUnavailable` and :class:`ImageBuildError`
in ``USER_ERRORS`` so they end as one line and exit code 2, never a traceback.
"""

from __future__ import annotations

__all__ = [
    "SandboxError",
    "SandboxUnavailable",
    "DockerNotInstalled",
    "DockerNotRunning",
    "ImageMissing",
    "ImageBuildError",
    "PoolExhausted",
    "SandboxClosed",
    "UnsafePath",
]


class SandboxError(Exception):
    """Base class of every sandbox error."""


class SandboxUnavailable(SandboxError):
    """The backend asked for cannot run on this machine (as configured)."""


class DockerNotInstalled(SandboxUnavailable):
    def __init__(self) -> None:
        super().__init__(
            "Docker is not installed: install it (apt-get install docker.io) or use LocalSandbox."
        )


class DockerNotRunning(SandboxUnavailable):
    def __init__(self, detail: str = "") -> None:
        extra = f" ({detail})" if detail else ""
        super().__init__(
            "the Docker Engine is not reachable: start it (`dockerd &` or scripts/ci-docker.sh)"
            f" and check DOCKER_HOST{extra}."
        )


class ImageMissing(SandboxUnavailable):
    def __init__(self, image: str, profile: str) -> None:
        self.image = image
        super().__init__(
            f"the sandbox image {image} is missing: build it with "
            f"`turngym sandbox build-image --profile {profile}`."
        )


class ImageBuildError(SandboxError):
    """Building the sandbox image failed; the message says what to install or supply."""


class PoolExhausted(SandboxError):
    """Every sandbox in the pool is checked out and none came back within the wait."""


class SandboxClosed(SandboxError):
    """The sandbox was used after ``close()``."""


class UnsafePath(SandboxError, ValueError):
    """A file path for put_file/get_file leaves the workdir or goes through a symlink."""
