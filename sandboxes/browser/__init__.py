"""turngym.sandboxes.browser — a pooled headless Chromium (Playwright) with per-episode contexts."""

from turngym.sandboxes.browser.pool import (
    BrowserConfig,
    BrowserError,
    BrowserPool,
    BrowserSession,
    BrowserUnavailableError,
    close_shared_pool,
    request_allowed,
    shared_pool,
)

__all__ = [
    "BrowserConfig",
    "BrowserError",
    "BrowserPool",
    "BrowserSession",
    "BrowserUnavailableError",
    "close_shared_pool",
    "request_allowed",
    "shared_pool",
]
