"""``turngym sandbox build-image`` and ``turngym sandbox prune``."""

from __future__ import annotations

import argparse
import logging

from turngym.sandboxes.errors import ImageBuildError, SandboxUnavailable

USER_ERRORS = (SandboxUnavailable, ImageBuildError)


def add_commands(subparsers) -> None:
    parser = subparsers.add_parser("sandbox", help="build the sandbox image, prune leftover containers")
    sub = parser.add_subparsers(dest="sandbox_command", metavar="SUBCOMMAND", required=True)

    build = sub.add_parser("build-image", help="build the Docker sandbox image from debootstrap (idempotent)")
    build.add_argument("--profile", default="python", help="image profile (python, lean); default python")
    build.add_argument("--mirror", default=None, help="Debian mirror for debootstrap")
    build.add_argument("--force", action="store_true", help="rebuild even if the image exists")
    build.set_defaults(func=_build_image)

    prune = sub.add_parser("prune", help="remove sandbox containers left by dead runs")
    prune.add_argument("--all", action="store_true", help="remove every turngym sandbox container")
    prune.set_defaults(func=_prune)


def _build_image(args: argparse.Namespace) -> int:
    from turngym.sandboxes.image import DEFAULT_MIRROR, build_image

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    tag = build_image(args.profile, mirror=args.mirror or DEFAULT_MIRROR, force=args.force)
    print(tag)
    return 0


def _prune(args: argparse.Namespace) -> int:
    from turngym.sandboxes.docker import docker_client
    from turngym.sandboxes.reaper import prune

    removed = prune(docker_client(), everything=args.all)
    print(f"removed {removed} sandbox container(s)")
    return 0
