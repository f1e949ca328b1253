"""``turngym serve MODEL``: a local model as an OpenAI-compatible endpoint.

MODEL is any spec :func:`turngym.agents.models.load_model` takes: ``smollm2``, ``tiny``, a
checkpoint directory or a Hugging Face id. Then any OpenAI client (or ``turngym eval --policy
http://HOST:PORT/v1``) can use it.
"""

from __future__ import annotations

import argparse
import logging

from turngym.agents.models import ModelSpecError

__all__ = ["USER_ERRORS", "add_commands"]

log = logging.getLogger("turngym.serve")

USER_ERRORS: tuple[type[BaseException], ...] = (ModelSpecError, OSError)


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve a local model as an OpenAI-compatible chat-completions endpoint",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("model", metavar="MODEL", help="smollm2, tiny[:opts], a model directory or a Hugging Face id")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on; 0 picks a free one (default: 8000)")
    parser.add_argument("--name", default=None, help="model name reported by /v1/models (default: MODEL)")
    parser.add_argument("--max-batch-size", type=int, default=32, help="most requests per forward batch (default: 32)")
    parser.add_argument("--device", default=None, help="torch device, e.g. cuda or cpu (default: where the model loads)")
    parser.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    from turngym.agents.models import load_policy
    from turngym.agents.serve import make_server

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    policy = load_policy(args.model, max_batch_size=args.max_batch_size, device=args.device)
    server = make_server(policy, args.host, args.port, model_name=args.name or args.model)
    host, port = server.server_address[:2]
    log.info("serving %s at http://%s:%s/v1 (Ctrl-C to stop)", args.model, host, port)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        log.info("stopping")
    finally:
        server.server_close()
        server.service.close()
    return 0
