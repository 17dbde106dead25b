"""Fixtures of the evaluation tests: a tiny checkpoint in the released layout, the model loaded from
it, and a fake judge (a real HTTP server on 127.0.0.1 answering in OpenAI's chat-completions JSON)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # eval_fixtures.py, eval_judge_server.py

from eval_judge_server import FakeJudge  # noqa: E402


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    from llamavid.model.tiny import write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "llama-vid-tiny-224-video")


@pytest.fixture(scope="session")
def tiny(tiny_checkpoint, tmp_path_factory):
    from llamavid.runtime.load import load_model

    return load_model(tiny_checkpoint, tmp_path_factory.mktemp("tiny-data"), device="cpu", dtype="fp32")


@pytest.fixture
def judge_server():
    server = FakeJudge()
    server.start()
    yield server
    server.stop()
