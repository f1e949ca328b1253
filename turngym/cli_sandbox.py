"""``turngym sandbox status``, ``turngym sandbox build-image`` and ``turngym sandbox prune``."""

from __future__ import annotations

import argparse
import logging

from turngym.sandboxes.errors import ImageBuildError, SandboxUnavailable

USER_ERRORS = (SandboxUnavailable, ImageBuildError)


def add_commands(subparsers) -> None:
    parser = subparsers.add_parser("sandbox", help="sandbox status (fork servers), build the image, prune leftovers")
    sub = parser.add_subparsers(dest="sandbox_command", metavar="SUBCOMMAND", required=True)

    status = sub.add_parser("status", help="start a sandbox of each backend: is its fork server up, how fast is an exec")
    status.add_argument("--backend", choices=["local", "docker"], action="append",
                        help="backend to check (repeatable); default: both")
    status.set_defaults(func=_status)

    build = sub.add_parser("build-image", help="build the Docker sandbox image from debootstrap (idempotent)")
    build.add_argument("--profile", default="python", help="image profile (python, lean); default python")
    build.add_argument("--mirror", default=None, help="Debian mirror for debootstrap")
    build.add_argument("--force", action="store_true", help="rebuild even if the image exists")
    build.set_defaults(func=_build_image)

    prune = sub.add_parser("prune", help="remove sandbox containers left by dead runs")
    prune.add_argument("--all", action="store_true", help="remove every turngym sandbox container")
    prune.set_defaults(func=_prune)


def _status(args: argparse.Namespace) -> int:
    import statistics
    import time

    from turngym.sandboxes import make_sandbox

    for backend in args.backend or ["local", "docker"]:
        try:
            sb = make_sandbox(backend)
        except SandboxUnavailable as err:
            print(f"{backend}: unavailable ({err})")
            continue
        with sb:
            times = []
            for _ in range(5):
                t0 = time.perf_counter()
                result = sb.python("print(1)")
                times.append((time.perf_counter() - t0) * 1000)
            server = "up" if sb.fork_server_up else "down (execs take the slower path)"
            detail = f"; {sb.fork.last_error}" if getattr(sb, "fork", None) and sb.fork.last_error else ""
            isolation = getattr(sb, "isolation", "container")
            print(f"{backend} ({isolation}): fork server {server}{detail}; python exec p50 "
                  f"{statistics.median(times):.1f} ms ({result.status}); {sb.fork_stats}")
    return 0


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
