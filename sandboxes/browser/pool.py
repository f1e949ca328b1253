"""A pooled headless Chromium, driven by Playwright, with one fresh context per episode.

The contract
------------
- :class:`BrowserPool` owns one Playwright driver and one Chromium browser (Debian's
  ``/usr/bin/chromium``; Playwright's browser download is never used). Playwright's async API
  runs on an event loop in a dedicated daemon thread, so environments stepped from many threads
  share one browser and their calls run concurrently; every call from outside waits on the loop
  with a deadline (:meth:`BrowserPool.run`).
- :meth:`BrowserPool.new_session` opens a :class:`BrowserSession`: a fresh ``BrowserContext``
  (no cookies, storage or cache shared with any other episode) and one page, taken from a few
  spare ones the pool creates ahead of time (``spare_contexts``); contexts are never reused. Every Playwright
  action in it has a deadline (``action_timeout_s`` / ``navigation_timeout_s``), and every
  request the page makes is checked by :func:`request_allowed`: only the session's own origins
  (and ``file://`` under its own folder, when it has one) pass; everything else is aborted and
  recorded in :attr:`BrowserSession.blocked`.
- :meth:`BrowserPool.close` closes the browser and stops the driver, so no Chromium process
  outlives the pool; the pool also closes itself at interpreter exit (``atexit``).
- :func:`shared_pool` is the process-wide pool environments use unless given one.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import logging
import os
import threading
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, Field

from turngym.sandboxes.pool import close_shared_pool as registry_close_shared_pool
from turngym.sandboxes.pool import shared_pool as registry_shared_pool

__all__ = [
    "BrowserConfig",
    "BrowserError",
    "BrowserPool",
    "BrowserSession",
    "BrowserUnavailableError",
    "request_allowed",
    "shared_pool",
    "close_shared_pool",
]

log = logging.getLogger(__name__)
T = TypeVar("T")


class BrowserError(RuntimeError):
    """A browser operation that failed or ran past its deadline."""


class BrowserUnavailableError(BrowserError):
    """Playwright or Chromium is missing (one clear sentence saying what to install)."""


def _default_no_sandbox() -> bool:
    # Chromium refuses to start its setuid/namespace sandbox as root ("Running as root without
    # --no-sandbox is not supported"); containers and CI run as root. Off for ordinary users.
    return hasattr(os, "geteuid") and os.geteuid() == 0


class BrowserConfig(BaseModel):
    """How the pooled Chromium is started and how long its actions may take."""

    executable_path: str = "/usr/bin/chromium"
    """The Chromium binary (Debian's package); Playwright's own browser download is never used."""
    headless: bool = True
    """Run without a window."""
    no_sandbox: bool = Field(default_factory=_default_no_sandbox)
    """Pass ``--no-sandbox``; needed only when running as root, where Chromium's sandbox cannot start."""
    action_timeout_s: float = 5.0
    """Deadline of each page action (click, fill, evaluate, snapshot)."""
    navigation_timeout_s: float = 15.0
    """Deadline of each navigation (page load)."""
    launch_timeout_s: float = 60.0
    """Deadline for starting the browser."""
    viewport_width: int = 800
    """Page width in CSS pixels (also the screenshot width)."""
    viewport_height: int = 600
    """Page height in CSS pixels."""
    extra_args: list[str] = []
    """More Chromium command-line switches."""
    spare_contexts: int = 1
    """Fresh contexts (each with a blank page) kept ready, so an episode's reset need not wait
    for one; a context is used by one session only and closed with it."""

    def chromium_args(self) -> list[str]:
        args = [
            "--disable-gpu",
            "--disable-background-networking",  # no update checks, safe-browsing lists, ...
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-quic",
        ]
        if self.no_sandbox:
            args.insert(0, "--no-sandbox")
        return args + list(self.extra_args)


def _origin(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def request_allowed(url: str, origins: Iterable[str], file_root: str | Path | None = None) -> bool:
    """Whether a page of a session limited to ``origins`` (and ``file_root``) may load ``url``.

    ``data:``, ``blob:`` and ``about:`` URLs stay inside the page and are allowed; ``file://``
    only below ``file_root``; any other URL only when its scheme://host:port is one of
    ``origins``.
    """
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme in ("data", "blob", "about"):
        return True
    if scheme == "file":
        if file_root is None:
            return False
        path = Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path)).resolve()
        root = Path(file_root).resolve()
        return path == root or root in path.parents
    return _origin(url) in {_origin(o) for o in origins}


class BrowserPool:
    """One Chromium shared by many sessions; see the module docstring."""

    def __init__(self, config: BrowserConfig | None = None) -> None:
        self.config = config or BrowserConfig()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="turngym-browser", daemon=True)
        self._playwright: Any = None
        self._browser: Any = None
        self._closed = False
        self._lock = threading.Lock()
        self._spares: list[BrowserSession] = []
        self._refilling = 0
        self._thread.start()
        try:
            self.run(self._start(), timeout=self.config.launch_timeout_s)
        except BaseException:
            self._stop_loop()
            raise
        atexit.register(self.close)

    async def _start(self) -> None:
        try:
            from playwright.async_api import async_playwright
        except ImportError:
            raise BrowserUnavailableError("the GUI environments need Playwright: pip install 'turngym[gui]'") from None
        if not Path(self.config.executable_path).is_file():
            raise BrowserUnavailableError(
                f"no Chromium at {self.config.executable_path}; install it (Debian: apt-get install chromium)"
            )
        self._playwright = await async_playwright().start()
        try:
            self._browser = await self._playwright.chromium.launch(
                executable_path=self.config.executable_path,
                headless=self.config.headless,
                args=self.config.chromium_args(),
                timeout=self.config.launch_timeout_s * 1000,
            )
        except BaseException:
            await self._playwright.stop()
            raise

    # -- running coroutines on the browser thread ------------------------------------------
    def run(self, coro: Awaitable[T], timeout: float | None = None) -> T:
        """Run ``coro`` on the browser's event loop and wait at most ``timeout`` seconds."""
        if self._closed:
            if asyncio.iscoroutine(coro):
                coro.close()
            raise BrowserError("the browser pool is closed")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)  # type: ignore[arg-type]
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise BrowserError(f"browser operation ran past its {timeout:.1f}s deadline") from None

    @property
    def closed(self) -> bool:
        return self._closed

    # -- sessions ---------------------------------------------------------------------------
    def new_session(self, origins: Iterable[str] = (), file_root: str | Path | None = None) -> BrowserSession:
        """A fresh context and page limited to ``origins`` (and ``file://`` under ``file_root``)."""
        return self.run(self._checkout(list(origins), file_root), timeout=self.config.navigation_timeout_s + 10)

    async def _checkout(self, origins: list[str], file_root: str | Path | None) -> BrowserSession:
        if self._spares:
            session = self._spares.pop()
        else:
            session = BrowserSession(self)
            await session._open()
        session.origins, session.file_root = origins, file_root
        self._schedule_refill()
        return session

    def _schedule_refill(self) -> None:
        while len(self._spares) + self._refilling < self.config.spare_contexts:
            self._refilling += 1
            self._loop.create_task(self._refill())

    async def _refill(self) -> None:
        try:
            session = BrowserSession(self)
            await session._open()
            if self._closed:
                await session.context.close()
            else:
                self._spares.append(session)
        except Exception as err:  # the browser is going away; the next checkout opens its own
            log.debug("turngym: could not prepare a spare browser context: %s", err)
        finally:
            self._refilling -= 1

    # -- shutdown -----------------------------------------------------------------------------
    async def _shutdown(self) -> None:
        try:
            if self._browser is not None:
                await self._browser.close()
        finally:
            if self._playwright is not None:
                await self._playwright.stop()

    def close(self) -> None:
        """Close the browser and stop the driver (idempotent); no Chromium process is left."""
        with self._lock:
            if self._closed:
                return
            try:
                self.run(self._shutdown(), timeout=30)
            except Exception as err:  # shutting down: report, do not raise from atexit
                log.warning("turngym: closing the browser failed: %s", err)
            self._closed = True
            self._stop_loop()
        atexit.unregister(self.close)

    def _stop_loop(self) -> None:
        self._closed = True
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        if not self._loop.is_running():
            self._loop.close()

    def __enter__(self) -> BrowserPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class BrowserSession:
    """One episode's browser context and page, limited to its own origins."""

    def __init__(self, pool: BrowserPool, origins: list[str] | None = None, file_root: str | Path | None = None) -> None:
        self.pool = pool
        self.origins: list[str] = origins or []
        """Origins the page may load from (none until the session is checked out)."""
        self.file_root = file_root
        self.blocked: list[str] = []
        """URLs this session's page tried to load and was refused."""
        self.context: Any = None
        self.page: Any = None

    async def _open(self) -> None:
        cfg = self.pool.config
        self.context = await self.pool._browser.new_context(
            viewport={"width": cfg.viewport_width, "height": cfg.viewport_height},
            service_workers="block",  # a service worker's fetches would bypass context.route
            accept_downloads=False,
        )
        self.context.set_default_timeout(cfg.action_timeout_s * 1000)
        self.context.set_default_navigation_timeout(cfg.navigation_timeout_s * 1000)
        await self.context.route("**/*", self._route)
        await self.context.route_web_socket("**/*", self._route_websocket)
        self.page = await self.context.new_page()

    def allowed(self, url: str) -> bool:
        return request_allowed(url, self.origins, self.file_root)

    async def _route(self, route: Any) -> None:
        url = route.request.url
        if self.allowed(url):
            await route.continue_()
        else:
            self.blocked.append(url)
            await route.abort("blockedbyclient")

    async def _route_websocket(self, ws: Any) -> None:
        if self.allowed(ws.url.replace("ws", "http", 1)):
            ws.connect_to_server()
        else:
            self.blocked.append(ws.url)
            await ws.close()

    def run(self, fn: Callable[[Any], Awaitable[T]], timeout: float | None = None) -> T:
        """Run ``fn(page)`` on the browser thread; ``timeout`` defaults to a generous bound."""
        cfg = self.pool.config
        if timeout is None:
            timeout = cfg.navigation_timeout_s + 4 * cfg.action_timeout_s
        return self.pool.run(fn(self.page), timeout=timeout)

    def close(self) -> None:
        """Close this session's context (idempotent; a closed pool has closed it already)."""
        if self.context is None or self.pool.closed:
            self.context = None
            return
        context, self.context = self.context, None
        try:
            self.pool.run(context.close(), timeout=15)
        except Exception as err:
            log.warning("turngym: closing a browser context failed: %s", err)


_SHARED_KEY = ("browser",)  # one browser per process, whatever config asked first


def shared_pool(config: BrowserConfig | None = None) -> BrowserPool:
    """The process-wide pool (started on first use, in the :func:`turngym.sandboxes.shared_pool`
    registry; closed at exit, by :func:`close_shared_pool` or by ``close_shared_pools()``)."""
    return registry_shared_pool(_SHARED_KEY, lambda: BrowserPool(config))


def close_shared_pool() -> None:
    registry_close_shared_pool(_SHARED_KEY)
