"""Any OpenEnv server as a turngym environment: ``turngym.make("openenv:http://HOST:PORT")``.

:class:`OpenEnvEnv` drives the server with openenv-core's own client (one WebSocket session
per environment instance, so one per episode in a rollout) and trains and evaluates like a
built-in environment: text in, text out, the server's reward.

- **A turngym server** (``turngym serve-env``): everything travels as served — observation
  text, ``info`` (task id, action validity, tool calls, anchor, stratum, success), terminated
  vs truncated, instructions, tool schemas and example replies — and the tasks are the
  served suite's (ids and splits from ``/turngym/suite``; prompts and answers stay on the
  server). The tool-call style named at reset (``options["tool_call_style"]``, as the rollout
  engine names the model's) is sent on, so the server reads calls in the agent's syntax.
- **Any other OpenEnv server**: the action is ``{action_field: reply}`` (by default the
  action schema's ``message`` field, or its only string field); the observation text is
  ``text_field`` (by default the observation schema's only string field, else the whole
  observation as JSON), its other plain fields go to ``info["openenv"]``. The tasks are
  seeds: ``seed-0``..``seed-999`` (train) and ``test-seed-0``..``test-seed-99`` (test) reset
  the server with that seed, so a group of episodes of one task starts from the same state.
  ``info["anchor"]`` is the server's ``/state`` less its episode id and step count, when the
  state holds anything more. ``info["success"]`` is the observation's ``success`` field when
  it has one; otherwise, with ``success_reward=R``, a final reward of at least R.

Pass ``suite=`` (a suite name, JSONL path or :class:`TaskSuite`) to choose the tasks
yourself; their ids are then sent as ``task_id`` with the seed.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import httpx

from turngym.envs.core import EnvUnavailable, TurnEnv, canonical_anchor
from turngym.envs.tasks import Task, TaskSuite

__all__ = ["OpenEnvEnv", "RemoteInfo", "SchemaTool", "make_openenv_env", "remote_info", "seed_suite"]

#: Seed tasks of a server without a suite: train seeds 0.., test seeds from TEST_SEED_BASE.
TRAIN_SEEDS, TEST_SEEDS, TEST_SEED_BASE = 1000, 100, 1_000_000
#: State fields every OpenEnv server has; the rest (if any) is the raw state, the anchor.
_STATE_BOOKKEEPING = frozenset({"episode_id", "step_count"})
#: Observation fields of a turngym server that are info keys.
_INFO_FIELDS = ("task_id", "action_valid", "tool_calls", "anchor", "stratum", "success")
#: Observation fields of the protocol itself (never the observation text).
_PROTOCOL_FIELDS = frozenset({"reward", "done", "metadata"})


class SchemaTool:
    """A tool known only by its OpenAI-format schema (the server runs it)."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self._schema = schema
        function = schema.get("function", {})
        self.name = str(function.get("name", ""))
        self.description = str(function.get("description", ""))

    def schema(self) -> dict[str, Any]:
        return self._schema


def seed_suite(name: str = "openenv-seeds") -> TaskSuite:
    """Tasks that are reset seeds (for servers that have no task ids)."""
    train = [Task(id=f"seed-{i}", metadata={"openenv_seed": i}, split="train") for i in range(TRAIN_SEEDS)]
    test = [Task(id=f"test-seed-{i}", metadata={"openenv_seed": TEST_SEED_BASE + i}, split="test")
            for i in range(TEST_SEEDS)]
    return TaskSuite(name, train + test)


class RemoteInfo:
    """What a server's ``/schema`` (and, for a turngym server, ``/turngym/suite``) says."""

    def __init__(self, url: str, action: dict[str, Any], observation: dict[str, Any],
                 suite: TaskSuite | None) -> None:
        self.url = url
        self.action_props = {k: v for k, v in action.get("properties", {}).items() if k != "metadata"}
        self.obs_props = {k: v for k, v in observation.get("properties", {}).items() if k not in _PROTOCOL_FIELDS}
        self.turngym = observation.get("title") == "TurnObservation" and {"text", "anchor"} <= set(self.obs_props)
        self.suite = suite

    def action_field(self) -> str:
        if "message" in self.action_props:
            return "message"
        strings = [k for k, v in self.action_props.items() if v.get("type") == "string"]
        if len(strings) == 1:
            return strings[0]
        raise ValueError(f"cannot tell which action field of {self.url} takes the reply "
                         f"(fields: {', '.join(self.action_props) or 'none'}); pass action_field=")

    def text_field(self) -> str | None:
        if self.turngym:
            return "text"
        strings = [k for k, v in self.obs_props.items() if v.get("type") == "string"]
        return strings[0] if len(strings) == 1 else None


def _http_url(url: str) -> str:
    url = url.rstrip("/")
    for ws, http in (("ws://", "http://"), ("wss://", "https://")):
        if url.startswith(ws):
            return http + url[len(ws):]
    return url if "://" in url else f"http://{url}"


@functools.lru_cache(maxsize=64)
def remote_info(url: str, timeout_s: float = 10.0) -> RemoteInfo:
    """The server's schemas and suite, asked once per URL and process (a rollout makes an
    environment per episode)."""
    try:
        with httpx.Client(base_url=url, timeout=timeout_s, trust_env=False) as http:
            schema = http.get("/schema")
            schema.raise_for_status()
            listing = http.get("/turngym/suite")
    except httpx.HTTPError as err:
        raise EnvUnavailable(f"no OpenEnv server answers at {url} ({err})") from None
    suite = None
    if listing.status_code == 200:
        body = listing.json()
        suite = TaskSuite(str(body.get("name", url)), [Task(id=t["id"], split=t["split"]) for t in body["tasks"]])
    body = schema.json()
    return RemoteInfo(url, body.get("action", {}), body.get("observation", {}), suite)


class OpenEnvEnv(TurnEnv):
    """An OpenEnv server as a turngym environment; see the module docstring."""

    description = "An OpenEnv server (HTTP/WebSocket reset/step/state) as a turngym environment."

    def __init__(
        self,
        url: str,
        suite: str | TaskSuite | None = None,
        split: str = "train",
        max_turns: int = 1000,
        action_field: str | None = None,
        text_field: str | None = None,
        connect_timeout_s: float = 10.0,
        message_timeout_s: float = 300.0,
        success_reward: float | None = None,
        render_mode: str | None = None,
    ) -> None:
        try:
            import openenv.core  # noqa: F401  (the client below is openenv-core's own)
        except ImportError as err:
            raise EnvUnavailable(f"OpenEnv servers as environments need openenv-core: pip install 'turngym[openenv]' ({err})") from None
        self.url = _http_url(url)
        self.remote = remote_info(self.url, connect_timeout_s)
        super().__init__(suite=suite if suite is not None else (self.remote.suite or seed_suite()), split=split,
                         max_turns=max_turns, render_mode=render_mode)
        self.action_field = action_field or self.remote.action_field()
        self.text_field = text_field if text_field is not None else self.remote.text_field()
        self.timeouts = (connect_timeout_s, message_timeout_s)
        self.success_reward = success_reward
        self._client: Any = None
        self._seed: int | None = None
        self._state_anchor = not self.remote.turngym
        self._remote_truncated = False
        self._examples: list[str] = []

    def example_actions(self) -> list[str]:
        """A turngym server's example replies (known after the first reset)."""
        return list(self._examples)

    # -- the session ------------------------------------------------------------------------------
    def _session(self) -> Any:
        if self._client is None:
            from openenv.core import GenericEnvClient

            client = GenericEnvClient(base_url=self.url, connect_timeout_s=self.timeouts[0],
                                      message_timeout_s=self.timeouts[1]).sync()
            client.connect()
            self._client = client
        return self._client

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()
        super().close()

    # -- reset and step ---------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        self._seed = seed
        return super().reset(seed=seed, options=options)

    def _reset_task(self, task: Task) -> tuple[str, dict[str, Any]]:
        if "openenv_seed" in task.metadata:
            params: dict[str, Any] = {"seed": task.metadata["openenv_seed"]}
        else:
            params = {"task_id": task.id} | ({"seed": self._seed} if self._seed is not None else {})
        if self.remote.turngym and self._agent_style is not None:  # the server parses the replies
            params["tool_call_style"] = self._agent_style
        result = self._session().reset(**params)
        obs = result.observation
        if self.remote.turngym:
            self.instructions = str(obs.get("instructions", ""))
            self.tools = [SchemaTool(s) for s in obs.get("tools", [])]
            self._examples = [str(a) for a in obs.get("example_actions", [])]
        self._remote_truncated = False
        text, info = self._read(obs)
        if self._state_anchor:
            info["anchor"] = self._anchor()
            self._state_anchor = info["anchor"] is not None  # a bare state never gains fields later
        return text, info

    def _step(self, action: str) -> tuple[str, float, bool, dict[str, Any]]:
        result = self._session().step({self.action_field: action})
        text, info = self._read(result.observation)
        self._remote_truncated = bool(result.observation.get("truncated")) if self.remote.turngym else False
        if self._state_anchor:
            info["anchor"] = self._anchor()
        reward, terminated = float(result.reward or 0.0), bool(result.done) and not self._remote_truncated
        if terminated and "success" not in info and self.success_reward is not None:
            info["success"] = reward >= self.success_reward
        return text, reward, terminated, info

    def step(self, action: str):
        obs, reward, terminated, truncated, info = super().step(action)
        if self._remote_truncated:  # the server's turn budget ran out: truncated, not terminated
            terminated, truncated = False, True
            info.setdefault("success", False)
        return obs, reward, terminated, truncated, info

    def _read(self, obs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """The observation text and the info it carries."""
        if self.remote.turngym:
            # None: the served environment's info did not have that key
            info = {k: obs[k] for k in _INFO_FIELDS if obs.get(k) is not None}
            for key in ("anchor", "stratum"):  # JSON made tuples lists; the contract wants hashables
                if key in info:
                    info[key] = canonical_anchor(info[key])
            return str(obs.get("text", "")), {**obs.get("info", {}), **info}
        text = str(obs.get(self.text_field, "")) if self.text_field else json.dumps(obs, sort_keys=True, default=repr)
        rest = {k: v for k, v in obs.items() if k != self.text_field and isinstance(v, (str, int, float, bool, type(None)))}
        info: dict[str, Any] = {"openenv": rest} if rest else {}
        if isinstance(obs.get("success"), bool):
            info["success"] = obs["success"]
        return text, info

    def _anchor(self) -> Any:
        state = self._session().state()
        raw = {k: v for k, v in (state or {}).items() if k not in _STATE_BOOKKEEPING}
        return json.dumps(raw, sort_keys=True, default=repr) if raw else None


def make_openenv_env(url: str, **kwargs: Any) -> OpenEnvEnv:
    """``make("openenv:URL", **kwargs)``: :class:`OpenEnvEnv` on ``URL``."""
    if not url:
        raise ValueError("openenv: needs a server URL, e.g. openenv:http://127.0.0.1:8000")
    return OpenEnvEnv(url, **kwargs)
