"""A loopback HTTP server for turngym's own web apps, one per environment instance.

The apps are server-rendered HTML (plain links and forms, no scripts), so what the agent does
lands in Python state the environment reads directly: :class:`AppState` is the whole truth of
one episode, reset from the task at the start of each episode. ``GET /api/state`` shows it as
JSON (handy when debugging a policy).

An app contributes routes: ``(method, path regex, handler)``; a handler takes the state and the
:class:`Request` and returns a :class:`Response`. The server binds ``127.0.0.1`` on a free port.
"""

from __future__ import annotations

import copy
import html
import http.server
import json
import re
import threading
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["AppServer", "AppState", "Request", "Response", "Route", "page", "esc", "redirect"]

esc = html.escape


@dataclass
class AppState:
    """Everything the apps remember during one episode."""

    cart: list[dict[str, Any]] = field(default_factory=list)
    """Cart lines: ``{"product", "color", "size", "quantity"}``."""
    orders: list[dict[str, Any]] = field(default_factory=list)
    """Placed orders: ``{"items", "name", "address", "shipping"}``."""
    form_draft: dict[str, Any] = field(default_factory=dict)
    """The registration form's fields so far (it spans pages)."""
    registrations: list[dict[str, Any]] = field(default_factory=list)
    """Submitted registrations."""
    settings: dict[str, Any] = field(default_factory=dict)
    """The saved settings."""
    saves: int = 0
    """How many times the settings were saved."""


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    form: dict[str, list[str]]

    def field(self, name: str, default: str = "") -> str:
        values = self.form.get(name) or [self.query.get(name, default)]
        return values[0].strip()


@dataclass
class Response:
    body: str = ""
    status: int = 200
    location: str | None = None


Route = tuple[str, str, Callable[[AppState, Request, re.Match], Response]]


def redirect(location: str) -> Response:
    return Response(status=303, location=location)


def page(title: str, body: str, nav: str = "") -> Response:
    return Response(
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{esc(title)}</title></head><body>{nav}<main>{body}</main></body></html>"
    )


class AppServer:
    """Serves ``routes`` on 127.0.0.1 (free port) until :meth:`close`."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes = [(method, re.compile(pattern + r"\Z"), fn) for method, pattern, fn in routes]
        self.state = AppState()
        self.lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

            def do_GET(self) -> None:
                server._handle(self, "GET")

            def do_POST(self) -> None:
                server._handle(self, "POST")

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="turngym-webapp-http", daemon=True)
        self._thread.start()

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def reset(self, state: AppState) -> None:
        with self.lock:
            self.state = copy.deepcopy(state)

    def snapshot_state(self) -> AppState:
        with self.lock:
            return copy.deepcopy(self.state)

    def _handle(self, h: http.server.BaseHTTPRequestHandler, method: str) -> None:
        parts = urllib.parse.urlsplit(h.path)
        query = dict(urllib.parse.parse_qsl(parts.query))
        form: dict[str, list[str]] = {}
        if method == "POST":
            length = min(int(h.headers.get("Content-Length") or 0), 1 << 16)
            form = urllib.parse.parse_qs(h.rfile.read(length).decode("utf-8", "replace"), keep_blank_values=True)
        request = Request(method, parts.path, query, form)
        if method == "GET" and parts.path == "/api/state":
            with self.lock:
                response = Response(json.dumps(asdict(self.state)))
            self._send(h, response, "application/json")
            return
        for route_method, pattern, fn in self.routes:
            match = pattern.match(parts.path)
            if route_method == method and match:
                with self.lock:
                    response = fn(self.state, request, match)
                break
        else:
            response = page("Not found", "<h1>Page not found</h1>")
            response.status = 404
        self._send(h, response, "text/html; charset=utf-8")

    @staticmethod
    def _send(h: http.server.BaseHTTPRequestHandler, response: Response, content_type: str) -> None:
        body = response.body.encode()
        h.send_response(response.status)
        if response.location:
            h.send_header("Location", response.location)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(body)))
        h.send_header("Cache-Control", "no-store")
        h.end_headers()
        h.wfile.write(body)

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
