"""A server the tests talk to, started on 127.0.0.1 and ready: its model loaded (``/health`` 200)."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from app.server.app import Running, start
from app.server.settings import ServerSettings
from tests.support.wait import wait_for


@contextmanager
def serving(settings: ServerSettings) -> Iterator[Running]:
    """Start a server, wait until the model it loads in the background answers, stop it afterwards."""
    running = start(settings)
    try:
        with httpx.Client(base_url=running.url, timeout=60) as client:
            wait_for(lambda: client.get("/health").status_code == 200, timeout=300, interval=0.2)
        yield running
    finally:
        running.stop()
