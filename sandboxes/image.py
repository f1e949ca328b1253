"""Sandbox images built locally from a ``debootstrap`` root filesystem (no registry needed).

Recipe (``RECIPE_VERSION`` names it; change it when the steps below change):

1. ``debootstrap --variant=minbase --include=<profile packages> <suite> <dir> <mirror>``
2. add the unprivileged ``sandbox`` user (uid/gid :data:`SANDBOX_UID`) and an empty ``/work``,
   copy the profile's extra tree (if any) to its place, drop apt lists and caches;
3. tar the tree (numeric owners) to ``~/.cache/turngym/rootfs-<tag>.tar`` — a rebuild of the
   image from a cached tarball takes seconds;
4. ``docker import`` the tarball as ``turngym-sandbox:<profile>-<content hash>``.

The tag is a hash of the recipe version, the suite and the profile's package list, so building
is idempotent: an image with that tag already present is returned as is. Profiles live in the
:data:`PROFILES` registry; add one with :func:`register_profile`.

Profiles
--------
- ``python``: ``python3`` (Debian's 3.11) — for code tasks; this is the default.
- ``lean``: a Lean 4 toolchain cannot be installed from Debian. The user supplies it: set
  ``TURNGYM_LEAN_TOOLCHAIN`` to a directory holding a Lean toolchain (e.g.
  ``~/.elan/toolchains/leanprover--lean4---v4.9.0``, with ``bin/lean`` and ``bin/lake``) and,
  optionally, a built leanprover-community ``repl`` binary in its ``bin/``. It is copied to
  ``/opt/lean`` in the image and ``/opt/lean/bin`` is put on ``PATH``. The toolchain's
  content is part of the tag (its file list, sizes and mtimes).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from turngym.sandboxes.errors import ImageBuildError

__all__ = [
    "ImageProfile",
    "PROFILES",
    "RECIPE_VERSION",
    "SANDBOX_UID",
    "IMAGE_REPOSITORY",
    "register_profile",
    "get_profile",
    "image_tag",
    "build_image",
    "cache_dir",
]

log = logging.getLogger(__name__)

RECIPE_VERSION = "1"
SANDBOX_UID = 1000
IMAGE_REPOSITORY = "turngym-sandbox"
DEFAULT_SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
IMAGE_LABEL = "turngym.image"


@dataclass(frozen=True)
class ImageProfile:
    """What goes into one sandbox image."""

    name: str
    packages: tuple[str, ...]
    """Debian packages installed by debootstrap on top of minbase."""
    description: str = ""
    extra_tree: Callable[[], tuple[Path, str] | None] | None = None
    """Returns (host directory, path in the image) to copy in, or None; may raise
    :class:`ImageBuildError` saying what the user must supply."""
    env_path: tuple[str, ...] = ()
    """Directories put in front of PATH in the image."""
    suite: str = DEFAULT_SUITE
    extra: dict = field(default_factory=dict)


PROFILES: dict[str, ImageProfile] = {}


def register_profile(profile: ImageProfile) -> None:
    PROFILES[profile.name] = profile


def get_profile(name: str) -> ImageProfile:
    try:
        return PROFILES[name]
    except KeyError:
        known = ", ".join(sorted(PROFILES))
        raise ImageBuildError(f"unknown image profile {name!r}: choose one of {known}.") from None


def _lean_toolchain() -> tuple[Path, str]:
    root = os.environ.get("TURNGYM_LEAN_TOOLCHAIN")
    if not root or not (Path(root) / "bin" / "lean").exists():
        raise ImageBuildError(
            "the lean profile needs a Lean 4 toolchain: set TURNGYM_LEAN_TOOLCHAIN to a toolchain"
            " directory with bin/lean (e.g. ~/.elan/toolchains/<version>)."
        )
    return Path(root), "opt/lean"


register_profile(ImageProfile(
    name="python",
    packages=("python3",),
    description="Debian bookworm minbase + python3 (code tasks)",
))
register_profile(ImageProfile(
    name="lean",
    packages=("ca-certificates", "git", "libgmp10"),
    description="Debian bookworm minbase + a user-supplied Lean 4 toolchain at /opt/lean",
    extra_tree=_lean_toolchain,
    env_path=("/opt/lean/bin",),
))


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    path = Path(base) / "turngym"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _tree_fingerprint(root: Path) -> list:
    return sorted(
        [str(p.relative_to(root)), p.stat().st_size, int(p.stat().st_mtime)]
        for p in root.rglob("*") if p.is_file()
    )


def image_tag(profile: ImageProfile) -> str:
    """``turngym-sandbox:<profile>-<hash>``: the hash covers everything that goes in."""
    content = {
        "recipe": RECIPE_VERSION,
        "suite": profile.suite,
        "packages": sorted(profile.packages),
        "uid": SANDBOX_UID,
        "env_path": list(profile.env_path),
    }
    if profile.extra_tree is not None:
        tree = profile.extra_tree()
        if tree is not None:
            content["extra"] = [tree[1], _tree_fingerprint(tree[0])]
    digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:12]
    return f"{IMAGE_REPOSITORY}:{profile.name}-{digest}"


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise ImageBuildError(f"{cmd[0]} failed ({proc.returncode}): {' | '.join(tail)}")


def _debootstrap_rootfs(profile: ImageProfile, mirror: str, tarball: Path) -> None:
    if shutil.which("debootstrap") is None:
        raise ImageBuildError("debootstrap is not installed: run `apt-get install debootstrap`.")
    if os.geteuid() != 0:
        raise ImageBuildError("building the sandbox image runs debootstrap, which needs root: run it with sudo.")
    with tempfile.TemporaryDirectory(prefix="turngym-rootfs-", dir=cache_dir()) as tmp:
        root = Path(tmp) / "root"
        log.info("debootstrap %s (%s) into %s", profile.suite, ",".join(profile.packages), root)
        cmd = ["debootstrap", "--variant=minbase"]
        if profile.packages:
            cmd.append("--include=" + ",".join(profile.packages))
        _run([*cmd, profile.suite, str(root), mirror])
        _finish_rootfs(profile, root)
        partial = tarball.with_suffix(".partial")
        with tarfile.open(partial, "w") as tar:
            for entry in sorted(root.iterdir()):
                tar.add(entry, arcname=entry.name)
        partial.replace(tarball)  # atomic: a half-written tarball is never used


def _finish_rootfs(profile: ImageProfile, root: Path) -> None:
    uid = SANDBOX_UID
    with open(root / "etc/passwd", "a") as f:
        f.write(f"sandbox:x:{uid}:{uid}:sandbox:/work:/bin/sh\n")
    with open(root / "etc/group", "a") as f:
        f.write(f"sandbox:x:{uid}:\n")
    (root / "work").mkdir(exist_ok=True)
    os.chown(root / "work", uid, uid)
    for junk in ("var/lib/apt/lists", "var/cache/apt/archives", "var/log"):
        shutil.rmtree(root / junk, ignore_errors=True)
        (root / junk).mkdir(parents=True, exist_ok=True)
    if profile.extra_tree is not None:
        tree = profile.extra_tree()
        if tree is not None:
            shutil.copytree(tree[0], root / tree[1], symlinks=True, dirs_exist_ok=True)


def build_image(
    profile: str | ImageProfile = "python",
    *,
    client=None,
    mirror: str = DEFAULT_MIRROR,
    force: bool = False,
) -> str:
    """Build (or find) the image for ``profile`` and return its tag. Idempotent."""
    from turngym.sandboxes.docker import docker_client

    prof = get_profile(profile) if isinstance(profile, str) else profile
    tag = image_tag(prof)  # first: a profile missing what the user must supply fails here
    client = client or docker_client()
    if not force and client.images.list(name=tag):
        log.info("sandbox image %s is already built", tag)
        return tag
    tarball = cache_dir() / f"rootfs-{tag.split(':', 1)[1]}.tar"
    if force or not tarball.exists():
        _debootstrap_rootfs(prof, mirror, tarball)
    path = ":".join([*prof.env_path, "/usr/local/bin:/usr/bin:/bin"])
    repository, tag_part = tag.split(":", 1)
    changes = [
        f"USER {SANDBOX_UID}:{SANDBOX_UID}",
        "WORKDIR /work",
        f"ENV PATH={path}",
        "ENV HOME=/work",
        "ENV LANG=C.UTF-8",
        'CMD ["/bin/sh"]',
        f"LABEL {IMAGE_LABEL}={prof.name}",
    ]
    client.api.import_image(src=str(tarball), repository=repository, tag=tag_part, changes=changes)
    if not client.images.list(name=tag):
        raise ImageBuildError(f"docker import of {tarball} did not produce {tag}.")
    return tag
