"""Waiting for a condition in tests that watch another thread or process (the indexer's)."""
from __future__ import annotations

import time

import pytest


def wait_for(predicate, timeout: float = 60.0, interval: float = 0.05):
    """Poll until ``predicate()`` is truthy; returns its value or fails the test."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"condition not met within {timeout} s")
