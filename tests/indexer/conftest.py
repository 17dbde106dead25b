"""Fixtures for the indexer tests: a data folder, a library folder, a tiny EVA, a tiny Whisper,
and helpers that run the CLI in this process or as a real subprocess."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # media.py, tiny_whisper.py

REPO = Path(__file__).resolve().parents[2]
TINY_WIDTH = 176  # tiny EVA: 2 heads of 88, features (T, 257, 176)


@pytest.fixture(scope="session")
def tiny_eva(tmp_path_factory) -> Path:
    from llamavid.vision import write_tiny_eva

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


class Cli:
    """``python -m indexer`` against one data folder, in-process (fast) or as a subprocess."""

    def __init__(self, data_dir: Path, capsys):
        self.data_dir = data_dir
        self.capsys = capsys

    def __call__(self, *args: str) -> tuple[int, str, str]:
        from indexer.__main__ import main

        self.capsys.readouterr()
        code = main(["--data-dir", str(self.data_dir), *map(str, args)])
        out = self.capsys.readouterr()
        return code, out.out, out.err

    def status(self) -> dict[str, dict]:
        code, out, err = self("status", "--json")
        assert code == 0, err
        return {row["path"]: row for row in map(json.loads, out.splitlines())}

    def spawn(self, *args: str, **popen) -> subprocess.Popen:
        env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
        return subprocess.Popen([sys.executable, "-m", "indexer", "--data-dir", str(self.data_dir), *map(str, args)],
                                cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)

    def db(self):
        from indexer.db import connect

        return connect(self.data_dir / "library.db")


@pytest.fixture
def cli(data_dir, capsys) -> Cli:
    return Cli(data_dir, capsys)
