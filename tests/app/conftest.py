"""Fixtures for the app shell tests: a headless chromium driven by Playwright, and a
helper that waits for a local web server.

Missing system programs (Debian's chromium, Xvfb; ./run.sh test installs both): a developer's
run skips the tests that need them, with the reason (pytest's -ra lists it); in CI (the CI
environment variable is set, .ci/run sets CI=true) those tests fail instead, so no tier
disappears silently."""

from __future__ import annotations

import os
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

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


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def missing_system_program(what: str) -> NoReturn:
    """Skip the test (a developer's machine) or fail it (CI) because ``what`` is not installed."""
    message = f"{what} is absent: install it (./run.sh test does it)"
    if _in_ci():
        pytest.fail(f"{message}; CI=true, so this is a failure, not a skip", pytrace=False)
    pytest.skip(message)


@pytest.fixture(autouse=True)
def _xvfb_present(request: pytest.FixtureRequest) -> None:
    """Runs before the ``xvfb_display`` fixture of test_desktop.py, which only skips when Xvfb is missing."""
    if "xvfb_display" in request.fixturenames and not shutil.which("Xvfb"):
        missing_system_program("Xvfb (Debian package xvfb)")


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
        missing_system_program(f"{CHROMIUM} (Debian package chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def client(server):
    """The real ``openai`` client on the module's ``server`` fixture (a running server on 127.0.0.1)."""
    import openai

    return openai.OpenAI(base_url=server.url + "v1", api_key="unused", max_retries=0, timeout=600)


@pytest.fixture(scope="module")
def http(server):
    """An ``httpx`` client on the module's ``server`` fixture, for raw requests."""
    import httpx

    with httpx.Client(base_url=server.url, timeout=600) as c:
        yield c
