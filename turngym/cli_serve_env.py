"""``turngym serve-env ENV_ID``: a registered environment served over OpenEnv's protocol.

Any OpenEnv client (openenv-core's ``GenericEnvClient``, TRL, SkyRL, ``turngym.make(
"openenv:URL")``) then runs episodes on it over ``/ws``: one environment instance per session,
at most ``--max-sessions`` at once, sessions idle for ``--idle-timeout`` seconds closed, and
every environment (its sandbox, browser or prover) closed when the server stops.
"""

from __future__ import annotations

import argparse
import json
import logging

from turngym.envs import EnvUnavailable, SuiteError, UnknownEnvError

__all__ = ["USER_ERRORS", "add_commands"]

log = logging.getLogger("turngym.serve_env")

USER_ERRORS: tuple[type[BaseException], ...] = (UnknownEnvError, EnvUnavailable, SuiteError, OSError)


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve-env",
        help="serve an environment over OpenEnv's protocol (HTTP/WebSocket reset/step/state)",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("env_id", metavar="ENV_ID", help="a registered environment id (`turngym envs`)")
    parser.add_argument("--env-kwargs", default="{}", metavar="JSON",
                        help='constructor arguments of the environment, e.g. \'{"max_turns": 10}\'')
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on; 0 picks a free one (default: 8000)")
    parser.add_argument("--max-sessions", type=int, default=64, help="most sessions open at once (default: 64)")
    parser.add_argument("--idle-timeout", type=float, default=300.0,
                        help="seconds without a message after which a session is closed; 0 never (default: 300)")
    parser.add_argument("--tool-call-style", default=None, metavar="STYLE",
                        help="the tool-call syntax sessions read until their client names one at reset "
                             "(hermes, openai_json, react, ...; default: the environment's own, Hermes)")
    parser.set_defaults(func=run_serve_env)


def run_serve_env(args: argparse.Namespace) -> int:
    from turngym.cli import fail

    try:
        env_kwargs = json.loads(args.env_kwargs)
    except json.JSONDecodeError as err:
        raise fail(f"--env-kwargs is not JSON ({err.msg})") from None
    if not isinstance(env_kwargs, dict):
        raise fail("--env-kwargs must be a JSON object")
    if args.max_sessions < 1 or args.idle_timeout < 0:
        raise fail("--max-sessions must be at least 1 and --idle-timeout at least 0")
    from turngym.tools.parsers import PARSERS

    if args.tool_call_style is not None and args.tool_call_style not in PARSERS:
        raise fail(f"--tool-call-style must be one of {', '.join(sorted(PARSERS))}, not {args.tool_call_style!r}")
    from turngym.envs.openenv.server import bind, make_app, uvicorn_server

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    app = make_app(args.env_id, env_kwargs, max_sessions=args.max_sessions, idle_timeout_s=args.idle_timeout or None,
                   tool_call_style=args.tool_call_style)
    sock = bind(args.host, args.port)
    host, port = sock.getsockname()[:2]
    # The line a supervisor (or a test) reads to learn the address; flushed before serving.
    print(f"serving {args.env_id} over OpenEnv at http://{host}:{port} (Ctrl-C to stop)", flush=True)
    # On SIGINT/SIGTERM uvicorn shuts down gracefully (the app's shutdown closes every session)
    # and then re-raises the signal, so the exit status says which signal stopped the server.
    uvicorn_server(app).run(sockets=[sock])
    return 0
