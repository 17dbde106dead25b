"""Fixtures for the app shell tests: a headless chromium driven by Playwright, and a
helper that waits for a local web server."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking flags chromium keeps trying to reach Google's hosts.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _wait_http(url: str, timeout: float = 120.0, is_alive: Callable[[], bool] = lambda: True) -> int:
    """Poll ``url`` until it answers; returns the HTTP status. Fails early if ``is_alive`` turns False."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if not is_alive():
            pytest.fail(f"the server process exited before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except OSError as exc:
            last = exc
            time.sleep(0.5)
    pytest.fail(f"{url} did not answer within {timeout:.0f} s: {last}")


@pytest.fixture(scope="session")
def wait_http() -> Callable[..., int]:
    """``wait_http(url, timeout=120, is_alive=...)``: poll until the URL answers; returns the status."""
    return _wait_http


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Debian's chromium, headless, through Playwright (Playwright never downloads a browser here)."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent: install Debian's chromium (./run.sh test does it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()
