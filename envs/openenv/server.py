"""A registered turngym environment served over OpenEnv's protocol (``turngym serve-env``).

openenv-core's own server does the protocol: :class:`HTTPEnvServer` gives every WebSocket
session (``/ws``) its own environment from a factory, runs that environment's calls in the
session's own thread (so thread-bound resources such as a Playwright browser stay in one
thread), refuses sessions beyond ``max_concurrent_envs`` and reaps sessions idle longer than
``session_timeout``. This module supplies the adapter (:class:`TurnGymEnvironment`: a turngym
env as an OpenEnv ``Environment``), the action/observation/state models, two read-only routes
of its own (``/turngym/suite``: task ids and splits, never prompts or answers;
``/turngym/sessions``: how many sessions are open) and a shutdown step that closes every
session still open, then the process-wide sandbox pools.

The stateless HTTP ``/reset`` and ``/step`` of the protocol make a fresh environment per
request (openenv-core's design); episodes of more than one step need ``/ws``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

from turngym.envs.core import EnvUnavailable
from turngym.envs.registration import make, registered_envs
from turngym.envs.tasks import SuiteError
from turngym.tools.parsers import PARSERS

try:
    from fastapi import FastAPI, HTTPException, WebSocketDisconnect
    from openenv.core.env_server.http_server import HTTPEnvServer
    from openenv.core.env_server.interfaces import Environment
    from openenv.core.env_server.types import (
        Action,
        ConcurrencyConfig,
        EnvironmentMetadata,
        Observation,
        State,
    )
    from pydantic import Field
except ImportError as err:  # the [openenv] extra is optional
    raise EnvUnavailable(f"serving over OpenEnv needs openenv-core: pip install 'turngym[openenv]' ({err})") from err

__all__ = ["TurnAction", "TurnGymEnvironment", "TurnObservation", "TurnState", "bind", "make_app", "running", "uvicorn_server"]

log = logging.getLogger("turngym.serve_env")

#: Info keys that travel in observation fields of their own; the rest go in ``info``.
_OWN_KEYS = ("task_id", "action_valid", "tool_calls", "anchor", "stratum", "success")


class TurnAction(Action):
    """One turn of the agent: its raw reply, which the environment parses itself."""

    message: str = Field(..., description="The model's reply, as text")


class TurnObservation(Observation):
    """What a turngym environment says after a reset or a step (``reward``/``done`` are the
    protocol's own; ``done`` is ``terminated or truncated``). An info field is None when the
    environment's ``info`` did not have that key."""

    text: str = Field("", description="The observation: the new text the agent sees this turn")
    task_id: str | None = Field(None, description="The id of the current task")
    action_valid: bool | None = Field(None, description="False when the reply could not be parsed")
    tool_calls: list[dict[str, Any]] | None = Field(None, description="The tool calls that ran this step")
    anchor: Any = Field(None, description="Raw environment state before the next action (GiGPO)")
    stratum: Any = Field(None, description="Structural features of the trajectory so far (Stratified GRPO)")
    success: bool | None = Field(None, description="Whether the task was solved (at episode end)")
    terminated: bool = Field(False, description="The task ended (solved, failed, answered)")
    truncated: bool = Field(False, description="The turn budget ran out")
    info: dict[str, Any] = Field(default_factory=dict, description="The environment's other info keys")
    instructions: str = Field("", description="How to act here: the agent's system prompt (reset only)")
    tools: list[dict[str, Any]] = Field(default_factory=list, description="Tool schemas, OpenAI format (reset only)")
    example_actions: list[str] = Field(default_factory=list, description="A few well-formed replies (reset only)")


class TurnState(State):
    """The session's episode: which environment, task and turn, and the current anchor."""

    env_id: str = ""
    task_id: str = ""
    anchor: Any = None
    done: bool = False


def plain(value: Any) -> Any:
    """``value`` as JSON data: tuples become lists, numpy values plain numbers, the rest repr."""

    def default(obj: Any) -> Any:
        if hasattr(obj, "tolist"):  # numpy arrays and scalars
            return obj.tolist()
        if isinstance(obj, (set, frozenset)):
            return sorted(obj, key=repr)
        return repr(obj)

    return json.loads(json.dumps(value, default=default))


class TurnGymEnvironment(Environment[TurnAction, TurnObservation, TurnState]):
    """A turngym environment behind OpenEnv's ``Environment`` interface.

    The turngym environment is made on the first reset, in the session's thread (so the
    protocol's stateless ``/state`` and ``/metadata`` requests, which build an instance just to
    read it, stay cheap). Reset parameters: ``seed``, ``task_id``, ``episode_id`` and
    ``tool_call_style`` (the syntax the client's model writes tool calls in, a style of
    ``turngym.tools.PARSERS``). A style named once holds for the session's later resets, as it
    does for an in-process environment; before a client names one, ``tool_call_style`` given
    here (the server's default) applies, else the environment's own default (Hermes).
    """

    SUPPORTS_CONCURRENT_SESSIONS = True  # each session gets its own instance; nothing shared

    def __init__(self, env_id: str, env_kwargs: dict[str, Any] | None = None,
                 tool_call_style: str | None = None) -> None:
        super().__init__()
        self.env_id = env_id
        self.env_kwargs = dict(env_kwargs or {})
        self.env: Any = None
        self._state = TurnState(env_id=env_id)
        self._style = tool_call_style

    def reset(self, seed: int | None = None, episode_id: str | None = None,
              task_id: str | None = None, tool_call_style: str | None = None, **unknown: Any) -> TurnObservation:
        if unknown:
            raise ValueError(f"unknown reset parameter(s): {', '.join(sorted(unknown))} "
                             "(known: seed, task_id, episode_id, tool_call_style)")
        if self.env is None:
            self.env = make(self.env_id, **self.env_kwargs)
        style = tool_call_style or self._style
        options = {"task": task_id} if task_id else {}
        if style:  # the environment checks it (one sentence for an unknown style)
            options["tool_call_style"] = style
        obs, info = self.env.reset(seed=seed, options=options or None)
        self._style = style
        base = self.env.unwrapped
        self._state = TurnState(env_id=self.env_id, episode_id=episode_id or uuid.uuid4().hex,
                                task_id=str(info.get("task_id", "")), anchor=plain(info.get("anchor")))
        return self._observation(obs, None, False, False, info,
                                 instructions=getattr(base, "instructions", ""),
                                 tools=[t.schema() for t in getattr(base, "tools", [])],
                                 example_actions=list(base.example_actions()) if hasattr(base, "example_actions") else [])

    def step(self, action: TurnAction, timeout_s: float | None = None, **kwargs: Any) -> TurnObservation:
        if self.env is None:
            raise RuntimeError("reset the session before stepping it")
        if self._state.done:
            raise RuntimeError("the episode has ended; reset to start another")
        obs, reward, terminated, truncated, info = self.env.step(action.message)
        done = bool(terminated or truncated)
        self._state = self._state.model_copy(update={"step_count": self._state.step_count + 1,
                                                     "anchor": plain(info.get("anchor")), "done": done})
        return self._observation(obs, float(reward), bool(terminated), bool(truncated), info)

    @staticmethod
    def _observation(text: str, reward: float | None, terminated: bool, truncated: bool,
                     info: dict[str, Any], **extra: Any) -> TurnObservation:
        own = {k: plain(info[k]) for k in _OWN_KEYS if k in info}
        rest = {str(k): plain(v) for k, v in info.items() if k not in _OWN_KEYS}
        return TurnObservation(text=text, reward=reward, done=terminated or truncated, terminated=terminated,
                               truncated=truncated, info=rest, **own, **extra)

    @property
    def state(self) -> TurnState:
        return self._state  # replaced whole on every call: safe to read from the server's loop

    def get_metadata(self) -> EnvironmentMetadata:
        from turngym import __version__

        return EnvironmentMetadata(name=self.env_id, version=f"turngym {__version__}",
                                   description=registered_envs().get(self.env_id, "") or f"turngym environment {self.env_id}")

    def close(self) -> None:
        env, self.env = self.env, None
        if env is not None:
            env.close()


def _suite_listing(env_id: str, env_kwargs: dict[str, Any]) -> dict[str, Any] | None:
    """Make the environment once (an unknown id or a missing component fails here, before the
    server starts) and list its suite's task ids and splits (None: it has no suite)."""
    probe = make(env_id, **env_kwargs)
    try:
        suite = probe.unwrapped.suite
        return {"name": suite.name, "tasks": [{"id": t.id, "split": t.split} for t in suite]}
    except (AttributeError, SuiteError):
        return None
    finally:
        probe.close()


def make_app(env_id: str, env_kwargs: dict[str, Any] | None = None, max_sessions: int = 64,
             idle_timeout_s: float | None = 300.0, tool_call_style: str | None = None) -> FastAPI:
    """The FastAPI app serving ``env_id`` over OpenEnv's protocol (``app.state.openenv`` is the
    :class:`HTTPEnvServer`). ``tool_call_style``: the tool-call syntax sessions read until their
    client names one at reset (None: the environment's default); an unknown style raises
    ``ValueError`` here, before the server starts."""
    if tool_call_style is not None and tool_call_style not in PARSERS:
        raise ValueError(f"unknown tool-call style {tool_call_style!r}; known: {', '.join(sorted(PARSERS))}")
    env_kwargs = dict(env_kwargs or {})
    listing = _suite_listing(env_id, env_kwargs)
    factory = functools.partial(TurnGymEnvironment, env_id, env_kwargs, tool_call_style)
    server = HTTPEnvServer(factory, TurnAction, TurnObservation,
                           concurrency_config=ConcurrencyConfig(max_concurrent_envs=max_sessions,
                                                                session_timeout=idle_timeout_s))
    app = FastAPI(title=f"turngym {env_id} (OpenEnv protocol)")
    server.register_routes(app)
    app.add_middleware(_QuietClientClose)
    app.state.openenv = server

    @app.get("/turngym/suite", tags=["turngym"])
    def suite() -> dict[str, Any]:
        if listing is None:
            raise HTTPException(status_code=404, detail=f"{env_id} has no task suite")
        return listing

    @app.get("/turngym/sessions", tags=["turngym"])
    def sessions() -> dict[str, int]:
        return {"active": server.active_sessions, "max": server.max_concurrent_envs}

    async def close_sessions() -> None:
        # Sessions whose connection did not end before shutdown: close their environments with
        # openenv-core's own teardown (in each session's thread), then the shared sandbox pools.
        open_ids = list(server._sessions)
        for session_id in open_ids:
            await server._destroy_session(session_id)
        from turngym.sandboxes.pool import close_shared_pools

        close_shared_pools()
        log.info("shut down: closed %d session(s) still open; no environment left", len(open_ids))

    app.router.on_shutdown.append(close_sessions)
    return app


class _QuietClientClose:
    """ASGI middleware: a client that closes its WebSocket right after sending ``close`` makes
    openenv-core's final ``websocket.close()`` raise (the session is already torn down by then);
    that is a normal end of a session, not an error to log with a traceback."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await self.app(scope, receive, send)
        except WebSocketDisconnect:
            if scope["type"] != "websocket":
                raise


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (port 0: a free one), so the URL is known before serving starts."""
    return socket.create_server((host, port))


def uvicorn_server(app: FastAPI, log_level: str = "warning") -> Any:
    """A uvicorn server for ``app``: ``.run(sockets=[bind(...)])`` serves until SIGINT/SIGTERM
    (or ``should_exit``), then runs the app's shutdown (every session closed)."""
    import uvicorn

    return uvicorn.Server(uvicorn.Config(app, log_level=log_level, lifespan="on", timeout_graceful_shutdown=10))


@contextlib.contextmanager
def running(app: FastAPI, host: str = "127.0.0.1", port: int = 0, timeout_s: float = 30.0) -> Iterator[str]:
    """Serve ``app`` in a background thread (tests, benchmarks); yields its base URL and stops
    it, shutdown hooks included, on exit."""
    sock = bind(host, port)
    server = uvicorn_server(app)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="openenv-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:  # uvicorn sets it once the app's startup ran
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"the OpenEnv server did not start within {timeout_s:.0f} s")
        thread.join(0.02)
    try:
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout_s)
        sock.close()
