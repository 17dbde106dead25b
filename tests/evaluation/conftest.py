"""Fixtures of the evaluation tests: the session's tiny checkpoint (tests/support/fixtures.py) loaded as
``llamavid eval`` loads a model, and a fake judge (a real HTTP server on 127.0.0.1 answering in OpenAI's
chat-completions JSON)."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.fake_judge import FakeJudge


@pytest.fixture(scope="session")
def tiny(tiny_checkpoint: Path, tmp_path_factory):
    from llamavid.runtime.load import load_model

    return load_model(tiny_checkpoint, tmp_path_factory.mktemp("tiny-data"), device="cpu", dtype="fp32")


@pytest.fixture
def judge_server():
    server = FakeJudge()
    server.start()
    yield server
    server.stop()
