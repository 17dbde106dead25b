from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A tiny random LLaMA-VID checkpoint in the released layout (bf16 shards, eva_vit_g.pth, vocab, tokenizer)."""
    from llamavid.model.tiny import write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "llama-vid-tiny-224-video")


@pytest.fixture(scope="session")
def tiny(tiny_checkpoint):
    from llamavid.runtime.api import LlamaVid

    return LlamaVid.load(tiny_checkpoint, device="cpu", dtype="fp32")
