"""A local model as an OpenAI-compatible chat-completions endpoint (``turngym serve``).

Routes:

- ``GET /v1/models`` -> ``{"object": "list", "data": [{"id": NAME, "object": "model", ...}]}``
- ``POST /v1/chat/completions`` with ``messages``, optional ``tools`` (rendered through the
  tokenizer's chat template, ``apply_chat_template(messages, tools=..., add_generation_prompt=
  True)``), ``temperature``, ``top_p``, ``max_tokens`` / ``max_completion_tokens``, ``stop``,
  ``seed``, ``logprobs`` (per-token logprobs of the reply, as OpenAI returns them) and the vLLM
  extension ``return_token_ids`` (the reply's exact token ids in ``choices[0].token_ids``).
  When the reply holds Hermes ``<tool_call>{json}</tool_call>`` blocks that parse
  (:func:`turngym.tools.parsers.parse_tool_calls`), they come back as ``message.tool_calls`` with
  ``finish_reason: "tool_calls"`` and the blocks leave ``content``; a malformed block stays in
  ``content`` untouched (bad model output is the caller's observation, not a server error).
- ``GET /health`` -> ``{"status": "ok"}``.

One request = one completion (``n`` must be 1; no streaming). Requests that arrive while the
model is busy are batched: a single worker thread takes every queued request, groups them by
sampling settings and runs one batched ``generate`` per group, so concurrent clients share
forward passes. The HTTP server is the standard library's ``ThreadingHTTPServer``.
"""

from __future__ import annotations

import json
import logging
import queue
import random
import re
import threading
import time
import uuid
from concurrent.futures import Future
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from turngym.agents.policy import Completion, SamplingParams
from turngym.tools.parsers import detect_style, parse_tool_calls

__all__ = ["ChatService", "RequestError", "make_server"]

log = logging.getLogger(__name__)

_TOOL_CALL_BLOCK = re.compile(r"<tool_call>.*?(?:</tool_call>|$)", re.DOTALL)


class RequestError(ValueError):
    """A request the server cannot serve; answered with HTTP 400 and this message."""


class _Batcher:
    """One worker thread that runs queued requests in batches of equal sampling settings."""

    def __init__(self, policy: Any) -> None:
        self.policy = policy
        self.jobs: queue.Queue[tuple[list[int], SamplingParams, Future] | None] = queue.Queue()
        self.thread = threading.Thread(target=self._run, name="turngym-serve-batcher", daemon=True)
        self.thread.start()

    def submit(self, prompt_ids: list[int], sampling: SamplingParams) -> Completion:
        done: Future = Future()
        self.jobs.put((prompt_ids, sampling, done))
        return done.result()

    def close(self) -> None:
        self.jobs.put(None)
        self.thread.join()

    def _run(self) -> None:
        while True:
            first = self.jobs.get()
            if first is None:
                return
            pending = [first]
            closing = False
            while True:  # take everything already queued, without waiting for more
                try:
                    job = self.jobs.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    closing = True
                    break
                pending.append(job)
            groups: dict[str, list[tuple[list[int], SamplingParams, Future]]] = {}
            for job in pending:
                groups.setdefault(job[1].model_dump_json(exclude={"seeds"}), []).append(job)
            for jobs in groups.values():
                self._run_group(jobs)
            if closing:
                return

    def _run_group(self, jobs: list[tuple[list[int], SamplingParams, Future]]) -> None:
        sampling = jobs[0][1].model_copy(update={"seeds": [j[1].seeds[0] for j in jobs]})
        try:
            completions = self.policy.generate([j[0] for j in jobs], sampling)
        except Exception as err:  # noqa: BLE001 — handed to each waiting request
            for _, _, done in jobs:
                done.set_exception(err)
            return
        for (_, _, done), completion in zip(jobs, completions):
            done.set_result(completion)


class ChatService:
    """Turns OpenAI chat-completion requests into policy calls and responses."""

    def __init__(self, policy: Any, model_name: str, tool_style: str | None = None) -> None:
        self.policy = policy
        self.tokenizer = policy.tokenizer
        self.model_name = model_name
        # calls are read in the syntax the model's chat template teaches, unless told otherwise
        self.tool_style = tool_style or detect_style(self.tokenizer, model_name)
        self.created = int(time.time())
        self._seeds = random.Random()
        self._batcher = _Batcher(policy)

    def close(self) -> None:
        self._batcher.close()

    def models(self) -> dict[str, Any]:
        return {
            "object": "list",
            "data": [{"id": self.model_name, "object": "model", "created": self.created, "owned_by": "turngym"}],
        }

    def chat_completion(self, body: dict[str, Any]) -> dict[str, Any]:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            raise RequestError("messages must be a non-empty list of message objects")
        if body.get("stream"):
            raise RequestError("stream is not supported by turngym serve")
        if body.get("n", 1) != 1:
            raise RequestError("n must be 1")
        tools = body.get("tools") or None
        try:
            prompt_ids = self.tokenizer.apply_chat_template(
                [_plain_message(m) for m in messages],
                tools=tools,
                add_generation_prompt=True,
                tokenize=True,
                return_dict=False,
            )
        except Exception as err:  # jinja errors on malformed messages
            raise RequestError(f"cannot render the messages with the chat template: {err}") from None
        stop = body.get("stop") or []
        seed = body.get("seed")
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        if max_tokens is None:
            max_tokens = 256
        if not isinstance(max_tokens, int) or max_tokens < 1:
            raise RequestError("max_tokens must be a positive integer")
        try:
            sampling = SamplingParams(
                temperature=1.0 if body.get("temperature") is None else body["temperature"],
                top_p=1.0 if body.get("top_p") is None else body["top_p"],
                max_tokens=max_tokens,
                stop=[stop] if isinstance(stop, str) else stop,
                seeds=[int(seed) if seed is not None else self._seeds.getrandbits(62)],
            )
        except (ValueError, TypeError) as err:
            raise RequestError(f"invalid sampling parameters: {str(err).splitlines()[0]}") from None
        completion = self._batcher.submit([int(i) for i in prompt_ids], sampling)
        choice = self._choice(completion, want_logprobs=bool(body.get("logprobs")))
        if body.get("return_token_ids"):
            choice["token_ids"] = completion.token_ids
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model_name,
            "choices": [choice],
            "usage": {
                "prompt_tokens": len(prompt_ids),
                "completion_tokens": len(completion.token_ids),
                "total_tokens": len(prompt_ids) + len(completion.token_ids),
            },
        }

    def _choice(self, completion: Completion, want_logprobs: bool) -> dict[str, Any]:
        content: str | None = completion.text
        finish = completion.finish_reason
        message: dict[str, Any] = {"role": "assistant"}
        parsed = parse_tool_calls(completion.text, self.tool_style)
        if parsed.calls and not parsed.errors:
            message["tool_calls"] = [
                {
                    "id": f"call_{uuid.uuid4().hex[:24]}",
                    "type": "function",
                    "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
                }
                for call in parsed.calls
            ]
            content = _TOOL_CALL_BLOCK.sub("", completion.text).strip() or None
            finish = "tool_calls"
        message["content"] = content
        choice: dict[str, Any] = {"index": 0, "message": message, "finish_reason": finish, "logprobs": None}
        if want_logprobs:
            entries = []
            for token_id, logprob in zip(completion.token_ids, completion.logprobs):
                token = self.tokenizer.decode([token_id])
                entries.append({"token": token, "logprob": logprob, "bytes": list(token.encode()), "top_logprobs": []})
            choice["logprobs"] = {"content": entries}
        return choice


def _plain_message(message: dict[str, Any]) -> dict[str, Any]:
    """OpenAI content parts (``[{"type": "text", "text": ...}]``) joined into one string."""
    content = message.get("content")
    if isinstance(content, list):
        text = "".join(part.get("text", "") for part in content if isinstance(part, dict))
        return {**message, "content": text}
    return message


class _Handler(BaseHTTPRequestHandler):
    service: ChatService  # set on the subclass made by make_server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 — stdlib signature
        log.debug("%s " + format, self.address_string(), *args)

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str, kind: str = "invalid_request_error") -> None:
        self._send(status, {"error": {"message": message, "type": kind, "code": status}})

    def do_GET(self) -> None:  # noqa: N802 — stdlib name
        path = self.path.split("?", 1)[0].rstrip("/")
        if path == "/v1/models":
            self._send(HTTPStatus.OK, self.service.models())
        elif path == "/health":
            self._send(HTTPStatus.OK, {"status": "ok"})
        else:
            self._error(HTTPStatus.NOT_FOUND, f"no route GET {path}", "not_found")

    def do_POST(self) -> None:  # noqa: N802 — stdlib name
        path = self.path.split("?", 1)[0].rstrip("/")
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if path != "/v1/chat/completions":
            self._error(HTTPStatus.NOT_FOUND, f"no route POST {path}", "not_found")
            return
        try:
            body = json.loads(raw or b"null")
            if not isinstance(body, dict):
                raise RequestError("the request body must be a JSON object")
            self._send(HTTPStatus.OK, self.service.chat_completion(body))
        except json.JSONDecodeError as err:
            self._error(HTTPStatus.BAD_REQUEST, f"the request body is not valid JSON: {err}")
        except RequestError as err:
            self._error(HTTPStatus.BAD_REQUEST, str(err))
        except Exception as err:  # noqa: BLE001 — a server bug must answer 500, not hang the client
            log.exception("chat completion failed")
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"internal error: {err}", "server_error")


def make_server(policy: Any, host: str = "127.0.0.1", port: int = 8000, model_name: str = "turngym") -> ThreadingHTTPServer:
    """A ready-to-run server (``serve_forever()``; ``shutdown()`` + ``server_close()`` to stop).

    ``port=0`` picks a free port; read it from ``server.server_address[1]``. The server's
    ``service`` attribute is its :class:`ChatService` (call ``service.close()`` after stopping).
    """
    service = ChatService(policy, model_name)
    handler = type("ChatHandler", (_Handler,), {"service": service})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    server.service = service  # type: ignore[attr-defined]
    return server
