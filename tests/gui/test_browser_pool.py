"""The pooled Chromium: origin limits, deadlines, fresh contexts, clean shutdown."""

from __future__ import annotations

import http.server
import threading

import pytest

from turngym.sandboxes.browser import BrowserConfig, BrowserError, BrowserPool, request_allowed


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("http://127.0.0.1:8000/shop", True),
        ("http://127.0.0.1:8000/", True),
        ("HTTP://127.0.0.1:8000/x?y=1", True),
        ("http://127.0.0.1:8001/shop", False),  # another port is another origin
        ("https://127.0.0.1:8000/", False),  # another scheme too
        ("http://example.com/", False),
        ("http://127.0.0.1:8000.evil.com/", False),
        ("data:text/html,hi", True),
        ("about:blank", True),
        ("file:///tmp/task/index.html", True),
        ("file:///tmp/task/../secret", False),
        ("file:///etc/passwd", False),
        ("file:///tmp/taskother/x.html", False),
    ],
)
def test_request_allowed_only_for_the_tasks_origin_and_folder(url, allowed):
    assert request_allowed(url, ["http://127.0.0.1:8000"], file_root="/tmp/task") is allowed


def test_file_urls_are_refused_without_a_task_folder():
    assert not request_allowed("file:///tmp/task/index.html", ["http://127.0.0.1:8000"])


class _Site:
    """A loopback HTTP server that counts the requests it gets."""

    def __init__(self, html: str = "<p>hi</p>") -> None:
        self.hits: list[str] = []
        site = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                site.hits.append(self.path)
                body = html.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.origin = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_requests_to_another_host_are_blocked(pool):
    other = _Site()
    task = _Site(
        f"<img src='{other.origin}/pixel.png'><script src='{other.origin}/x.js'></script>"
        f"<a id='out' href='{other.origin}/page'>leave</a>"
    )
    session = pool.new_session([task.origin])
    try:
        async def visit(page):
            await page.goto(task.origin + "/")
            await page.click("#out")
            await page.wait_for_load_state()
            return page.url

        url = session.run(visit)
        assert not url.startswith(other.origin)
        with pytest.raises(Exception, match="ERR_BLOCKED_BY_CLIENT"):
            session.run(lambda page: page.goto(other.origin + "/direct"))
        with pytest.raises(Exception, match="ERR_BLOCKED_BY_CLIENT"):
            session.run(lambda page: page.goto("file:///etc/passwd"))
    finally:
        session.close()
        task.close()
        other.close()
    assert other.hits == []  # the other server never saw a request
    assert task.hits == ["/"]
    blocked = " ".join(session.blocked)
    for path in ("/pixel.png", "/x.js", "/page", "/direct"):
        assert other.origin + path in blocked
    assert "file:///etc/passwd" in blocked


def test_every_episode_gets_a_fresh_context(pool):
    site = _Site()
    first = pool.new_session([site.origin])
    second = None
    try:
        async def remember(page):
            await page.goto(site.origin + "/")
            await page.evaluate("localStorage.setItem('k', 'v'); document.cookie = 'c=1'")
            return await page.evaluate("[localStorage.getItem('k'), document.cookie]")

        assert first.run(remember) == ["v", "c=1"]
        second = pool.new_session([site.origin])

        async def recall(page):
            await page.goto(site.origin + "/")
            return await page.evaluate("[localStorage.getItem('k'), document.cookie]")

        assert second.run(recall) == [None, ""]
        assert second.context is not first.context
    finally:
        first.close()
        if second is not None:
            second.close()
        site.close()


def test_actions_and_calls_have_deadlines(pool):
    session = pool.new_session([])
    try:
        with pytest.raises(BrowserError, match="deadline"):
            session.run(lambda page: page.evaluate("new Promise(() => {})"), timeout=1.0)
        # Playwright's own action timeout (3 s in the session fixture) ends a wait for a missing element
        with pytest.raises(Exception, match="Timeout 3000ms"):
            session.run(lambda page: page.click("#nothing-here"))
    finally:
        session.close()


def test_closing_a_pool_leaves_no_chromium_process(chromium_tracker):
    before = chromium_tracker.descendants()  # the session's shared pool is idle meanwhile
    pool = BrowserPool(BrowserConfig(spare_contexts=2))
    try:
        session = pool.new_session([])
        assert session.run(lambda page: page.evaluate("1 + 1")) == 2
        started = chromium_tracker.descendants() - before
        assert started, "the pool should have started Chromium processes"
    finally:
        pool.close()
    chromium_tracker.seen |= started
    assert chromium_tracker.wait_gone(started) == set()
    with pytest.raises(BrowserError, match="closed"):
        pool.new_session([])
    pool.close()  # idempotent


def test_chromium_flags_disable_background_networking():
    args = BrowserConfig(no_sandbox=False).chromium_args()
    assert "--disable-background-networking" in args and "--disable-quic" in args
    assert "--no-sandbox" not in args
    assert BrowserConfig(no_sandbox=True).chromium_args()[0] == "--no-sandbox"
