from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny(tiny_checkpoint: Path):
    """The session's tiny checkpoint (tests/support/fixtures.py) loaded on the CPU in float32."""
    from llamavid.runtime.api import LlamaVid

    return LlamaVid.load(tiny_checkpoint, device="cpu", dtype="fp32")
