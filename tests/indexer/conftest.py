"""Fixtures for the indexer tests: a data folder, a library folder, a tiny EVA, a tiny Whisper,
and helpers that run the CLI in this process or as a real subprocess."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import ctranslate2
import pytest

from tests.support.indexer_cli import TINY_WIDTH, Cli
from tests.support.tiny_whisper import build_tiny_whisper


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
    """Converted once and kept in the pytest cache (about 10 s to build). Built in a folder of its own and
    then renamed into place, so that two pytest-xdist workers building it at once do not mix their files."""
    cache = getattr(request.config, "cache", None)  # absent with -p no:cacheprovider
    folder = Path(cache.mkdir("llamavid-tiny-whisper-v2") if cache else tmp_path_factory.mktemp("whisper"))
    model = folder / "ct2"
    if not (model / "model.bin").is_file():
        built = build_tiny_whisper(Path(tempfile.mkdtemp(prefix="build-", dir=folder)))
        try:
            built.rename(model)
        except OSError:  # another worker's model is already there
            if not (model / "model.bin").is_file():
                raise
        shutil.rmtree(built.parent, ignore_errors=True)
    return model


@pytest.fixture
def data_dir(tmp_path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def movies(tmp_path) -> Path:
    folder = tmp_path / "movies"
    folder.mkdir()
    return folder


@pytest.fixture
def cli(data_dir, capsys) -> Cli:
    return Cli(data_dir, capsys)
