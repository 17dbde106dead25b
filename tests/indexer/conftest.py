"""Fixtures for the indexer tests: a data folder, a library folder, a tiny EVA, a tiny Whisper,
and helpers that run the CLI in this process or as a real subprocess."""
from __future__ import annotations

import sys
from pathlib import Path

import ctranslate2
import pytest

sys.path.insert(0, str(Path(__file__).parent))  # media.py, tiny_whisper.py

from indexer_cli_helper import REPO, TINY_WIDTH  # noqa: E402,F401


@pytest.fixture(autouse=True)
def _repeatable_speech_sampling() -> None:
    """Whisper falls back to sampling at higher temperatures when a greedy transcript fails its
    checks, as the tiny random model's often do; CTranslate2 seeds that sampling at random, which
    made a transcript now and then come out empty. A fixed seed makes every run the same."""
    ctranslate2.set_random_seed(0)


@pytest.fixture(scope="session")
def tiny_eva(tmp_path_factory) -> Path:
    from llamavid.model.eva import write_tiny_eva

    return write_tiny_eva(tmp_path_factory.mktemp("eva") / "eva_vit_g.pth", width=TINY_WIDTH, depth=1)


@pytest.fixture(scope="session")
def tiny_whisper(request, tmp_path_factory) -> Path:
    """Converted once and kept in the pytest cache (about 10 s to build)."""
    from tiny_whisper import build_tiny_whisper

    cache = getattr(request.config, "cache", None)  # absent with -p no:cacheprovider
    folder = Path(cache.mkdir("llamavid-tiny-whisper-v1") if cache else tmp_path_factory.mktemp("whisper"))
    model = folder / "ct2"
    if not (model / "model.bin").is_file():
        build_tiny_whisper(folder)
    return model


@pytest.fixture
def data_dir(tmp_path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def movies(tmp_path) -> Path:
    folder = tmp_path / "movies"
    folder.mkdir()
    return folder


from indexer_cli_helper import Cli  # noqa: E402


@pytest.fixture
def cli(data_dir, capsys) -> Cli:
    return Cli(data_dir, capsys)
