"""Fixtures shared by the whole suite. Kept small and generic; put topic-specific
fixtures in a conftest.py inside the topic's folder (tests/app/, tests/llamavid/...)."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

# Set before anything creates a QApplication or imports a hub client: GUI tests run
# without a screen, and no test may reach the network.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"


@pytest.fixture(scope="session")
def _session_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("default-data")


@pytest.fixture(autouse=True)
def _no_real_data_dir(_session_data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point $LLAMAVID_DATA_DIR at a temporary folder for every test, so no test reads or
    writes the user's real data folder by accident (tests may override or delete it)."""
    monkeypatch.setenv("LLAMAVID_DATA_DIR", str(_session_data_dir))


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An existing, empty data folder, also set as $LLAMAVID_DATA_DIR."""
    path = tmp_path / "data"
    path.mkdir()
    monkeypatch.setenv("LLAMAVID_DATA_DIR", str(path))
    return path


@pytest.fixture
def make_model() -> Callable[..., Path]:
    """Factory for a fake installed model: ``make_model(data_dir, name, size=1000)`` writes
    ``<data_dir>/models/<name>/config.json`` plus a weights file; returns the folder."""

    def make(data_dir: Path, name: str = "llama-vid-test", size: int = 1000) -> Path:
        folder = Path(data_dir) / "models" / name
        folder.mkdir(parents=True)
        (folder / "config.json").write_text('{"model_type": "llamavid"}', encoding="utf-8")
        (folder / "model.safetensors").write_bytes(b"\0" * size)
        return folder

    return make


@pytest.fixture(scope="session")
def llamavid_cmd() -> list[str]:
    """The installed ``llamavid`` console script of this venv, as an argv prefix."""
    exe = Path(sys.executable).parent / ("llamavid.exe" if os.name == "nt" else "llamavid")
    if not exe.exists():
        pytest.fail(f"{exe} is missing: install the project first (./run.sh install, or pip install -e .)")
    return [str(exe)]


@pytest.fixture
def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
