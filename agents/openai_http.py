"""Any OpenAI-compatible chat-completions endpoint as a :class:`~turngym.agents.policy.Policy`.

``OpenAIPolicy(OpenAIConfig(base_url=..., model=...)).generate(prompts, sampling)`` sends one
``POST {base_url}/chat/completions`` per prompt (each prompt is a list of chat messages),
``max_concurrency`` at a time over one pooled ``httpx.Client``.
``OpenAIPolicy.from_spec("http://host:8000/v1#model")`` builds one from the ``openai:URL#MODEL``
policy spec that ``turngym eval`` takes.

- **Tools**: ``generate(prompts, sampling, tools=[schemas per prompt])`` sends each prompt's
  tool schemas (OpenAI function format, ``Tool.schema()``) as the request's ``tools``; without
  them, ``config.tools`` / the ``tools`` attribute go with every request, and with neither the
  request has no ``tools`` (plain text). ``native_tools = True`` tells the rollout engine to
  pass each episode's tools this way instead of describing them in the system message.
- **Replies**: ``Completion.text`` is the message content; structured ``tool_calls`` returned by
  the server are kept in ``Completion.tool_calls`` (the agent turns them into the environment's
  ``<tool_call>`` text, :meth:`turngym.agents.agent.Agent.action_text`). With
  ``render_tool_calls`` they are also appended to ``text`` as Hermes
  ``<tool_call>{"name": ..., "arguments": ...}</tool_call>`` blocks, for callers that use the
  policy without the agent. ``finish_reason`` ``tool_calls`` is reported as ``stop``.
- **Logprobs**: with ``logprobs=True`` the per-token logprobs the server returns; token ids
  when the server returns them (``return_token_ids``, as vLLM and ``turngym serve`` do), else
  empty. Hosted models give text only, which is enough for evaluation.
- **Failures**: 429, 5xx, timeouts and connection errors are retried up to ``max_retries``
  times with exponential backoff (``backoff_s * 2**attempt``, capped at ``backoff_max_s``, with
  full jitter; a ``Retry-After`` header is honoured); other 4xx answers and exhausted retries
  raise :class:`EndpointError` with one sentence.
- **Key**: read from the environment variable named by ``api_key_env`` (default
  ``OPENAI_API_KEY``; sent as a bearer token when set; local servers need none).
- **Limits**: ``timeout_s`` per request, ``max_concurrency`` requests in flight.

Only text comes back from hosted models (no prompt token ids), so this policy serves
evaluation and data collection; training needs a backend that returns the exact ids.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from pydantic import BaseModel, Field

from turngym.agents.policy import Completion, Prompt, SamplingParams

__all__ = ["EndpointError", "OpenAIConfig", "OpenAIPolicy", "backoff_delay", "parse_openai_spec"]

RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})


class EndpointError(RuntimeError):
    """The endpoint refused a request or stayed unavailable through every retry."""


class OpenAIConfig(BaseModel):
    """How to reach an OpenAI-compatible endpoint."""

    base_url: str = "http://127.0.0.1:8000/v1"
    """The API root, up to and including ``/v1``."""
    model: str = "turngym"
    """The ``model`` field sent with each request."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the API key (unset: no Authorization header)."""
    timeout_s: float = 120.0
    """Per-request timeout (connect, read, write, pool)."""
    max_retries: int = 5
    """Retries after the first attempt on 429/5xx/timeouts/connection errors."""
    backoff_s: float = 0.5
    """First retry delay; doubles each retry."""
    backoff_max_s: float = 30.0
    """Longest delay between retries."""
    max_concurrency: int = 8
    """Most requests in flight at once."""
    logprobs: bool = False
    """Ask for per-token logprobs (and token ids, where the server supports it)."""
    tools: list[dict[str, Any]] = Field(default_factory=list)
    """OpenAI function schemas sent with every request."""
    render_tool_calls: bool = False
    """Also append returned tool calls to ``Completion.text`` as Hermes ``<tool_call>`` blocks
    (off by default: the agent renders ``Completion.tool_calls`` itself)."""
    extra_body: dict[str, Any] = Field(default_factory=dict)
    """Extra JSON fields merged into each request body."""


def parse_openai_spec(spec: str) -> OpenAIConfig:
    """``"http://host:8000/v1#name"`` (the part after ``openai:``) -> base_url and model."""
    url, sep, model = spec.partition("#")
    if not url.startswith(("http://", "https://")) or not sep or not model.strip():
        raise ValueError(f"policy spec 'openai:{spec}' must look like openai:http://HOST:PORT/v1#MODEL")
    return OpenAIConfig(base_url=url, model=model.strip())


def backoff_delay(attempt: int, base_s: float, max_s: float, rng: random.Random) -> float:
    """Full-jitter exponential backoff: uniform in ``[0, min(max_s, base_s * 2**attempt)]``."""
    return rng.uniform(0.0, min(max_s, base_s * (2**attempt)))


class OpenAIPolicy:
    """Chat-message prompts -> completions from an OpenAI-compatible endpoint (see module doc)."""

    native_tools = True
    """Takes tool schemas per request (``generate(..., tools=...)``) and returns structured calls."""

    def __init__(
        self,
        config: OpenAIConfig | None = None,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        **overrides: Any,
    ) -> None:
        self.config = (config or OpenAIConfig()).model_copy(update=overrides)
        self.tools = list(self.config.tools)
        self._sleep = sleep
        self._rng = random.Random()
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.config.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        limit = max(1, self.config.max_concurrency)
        self._client = httpx.Client(
            base_url=self.config.base_url.rstrip("/") + "/",
            headers=headers,
            timeout=httpx.Timeout(self.config.timeout_s),
            limits=httpx.Limits(max_connections=limit, max_keepalive_connections=limit),
            transport=transport,
        )
        self._pool = ThreadPoolExecutor(max_workers=limit, thread_name_prefix="turngym-openai")

    @classmethod
    def from_spec(cls, spec: str, **overrides: Any) -> OpenAIPolicy:
        """The policy for ``openai:URL#MODEL`` (``spec`` is the part after ``openai:``)."""
        return cls(parse_openai_spec(spec), **overrides)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._client.close()

    def __enter__(self) -> OpenAIPolicy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def generate(
        self,
        prompts: list[Prompt],
        sampling: SamplingParams,
        tools: list[list[dict[str, Any]]] | None = None,
    ) -> list[Completion]:
        """One completion per prompt; ``tools``: each prompt's tool schemas (default ``self.tools``)."""
        for prompt in prompts:
            if not prompt or not isinstance(prompt[0], dict):
                raise TypeError("OpenAIPolicy takes chat-message prompts, not token ids")
        if sampling.seeds is not None and len(sampling.seeds) != len(prompts):
            raise ValueError(f"got {len(sampling.seeds)} seeds for {len(prompts)} prompts")
        if tools is not None and len(tools) != len(prompts):
            raise ValueError(f"got {len(tools)} tool lists for {len(prompts)} prompts")
        seeds = sampling.seeds or [None] * len(prompts)
        tool_lists = tools if tools is not None else [self.tools] * len(prompts)
        bodies = [self._body(p, sampling, s, t) for p, s, t in zip(prompts, seeds, tool_lists)]
        return list(self._pool.map(self._complete, bodies))

    def _body(self, messages: list[dict[str, Any]], sampling: SamplingParams, seed: int | None,
              tools: list[dict[str, Any]]) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.config.model,
            "messages": messages,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_tokens": sampling.max_tokens,
        }
        if sampling.stop:
            body["stop"] = list(sampling.stop)
        if seed is not None:
            body["seed"] = int(seed)
        if tools:
            body["tools"] = tools
        if self.config.logprobs:
            body["logprobs"] = True
            body["return_token_ids"] = True
        body.update(self.config.extra_body)
        return body

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        """The JSON reply to one request, retrying what is worth retrying."""
        last_problem = ""
        for attempt in range(self.config.max_retries + 1):
            retry_after: float | None = None
            try:
                response = self._client.post("chat/completions", json=body)
            except httpx.TransportError as err:  # timeouts, refused or dropped connections
                last_problem = f"{type(err).__name__}: {err}"
            else:
                if response.status_code < 300:
                    return response.json()
                last_problem = f"HTTP {response.status_code}: {_error_message(response)}"
                if response.status_code not in RETRY_STATUSES:
                    raise EndpointError(f"{self.config.base_url} refused the request ({last_problem})")
                retry_after = _retry_after(response)
            if attempt == self.config.max_retries:
                break
            delay = backoff_delay(attempt, self.config.backoff_s, self.config.backoff_max_s, self._rng)
            if retry_after is not None:
                delay = min(max(delay, retry_after), self.config.backoff_max_s)
            self._sleep(delay)
        raise EndpointError(
            f"{self.config.base_url} failed after {self.config.max_retries + 1} attempts ({last_problem})"
        )

    def _complete(self, body: dict[str, Any]) -> Completion:
        reply = self._post(body)
        try:
            choice = reply["choices"][0]
            message = choice.get("message") or {}
        except (KeyError, IndexError, TypeError):
            raise EndpointError(f"{self.config.base_url} sent a reply without choices") from None
        text = message.get("content") or ""
        tool_calls = list(message.get("tool_calls") or [])
        if tool_calls and self.config.render_tool_calls:
            text = (text + "".join(_hermes_block(call) for call in tool_calls)).lstrip("\n")
        logprobs_block = choice.get("logprobs") or {}
        logprobs = [float(t["logprob"]) for t in (logprobs_block.get("content") or [])]
        finish = choice.get("finish_reason") or "stop"
        return Completion(
            text=text,
            token_ids=[int(i) for i in choice.get("token_ids") or []],
            logprobs=logprobs,
            finish_reason="length" if finish == "length" else "stop",
            tool_calls=tool_calls,
        )


def _hermes_block(call: dict[str, Any]) -> str:
    function = call.get("function") or {}
    arguments = function.get("arguments", "{}")
    try:  # OpenAI sends arguments as a JSON string; keep it verbatim when it is not JSON
        arguments_json = json.dumps(json.loads(arguments)) if isinstance(arguments, str) else json.dumps(arguments)
    except json.JSONDecodeError:
        arguments_json = arguments
    return f'\n<tool_call>\n{{"name": {json.dumps(function.get("name", ""))}, "arguments": {arguments_json}}}\n</tool_call>'


def _error_message(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except Exception:  # noqa: BLE001 — any non-OpenAI error body
        return response.text[:200].strip() or response.reason_phrase


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return max(0.0, float(response.headers["Retry-After"]))
    except (KeyError, ValueError):
        return None
