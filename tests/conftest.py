"""Fixtures shared by the whole suite. Kept small and generic; put topic-specific
fixtures in a conftest.py inside the topic's folder (tests/app/, tests/llamavid/...).
Files that several topics need and that cost time to make (the tiny checkpoint...) are session
fixtures in tests/support/fixtures.py, a plugin registered here; other shared test code lives in
tests/support/ too (``from tests.support.media import make_video``).

Test tiers are pytest markers (declared in pyproject.toml, --strict-markers):

* ``slow``: takes more than a few seconds (training runs, torchrun jobs, servers, chromium);
  runs everywhere, CI included; deselect locally with ``-m "not slow"``.
* ``gpu``: needs a CUDA GPU. Skipped, with the reason, where ``torch.cuda.is_available()`` is
  false (CI has no GPU); every run ends with one line counting them, e.g.
  ``gpu tier: 3 tests skipped (no CUDA GPU ...)``.
"""

from __future__ import annotations

import functools
import os
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# Set before anything creates a QApplication or imports a hub client: GUI tests run
# without a screen, and no test may reach the network.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
# `llamavid index run` lowers its own priority (nice 19) unless told otherwise: the suite runs it
# in-process, and pytest itself must not end up reniced (tests that check the priority unset it).
os.environ["LLAMAVID_INDEX_PRIORITY"] = "normal"

pytest_plugins = ["tests.support.fixtures"]  # tiny_checkpoint and the other session fixtures


# ---------------------------------------------------------------- the gpu tier
# Counts for the summary line; reset at the start of each session.
_gpu_tier = {"collected": 0, "skipped": 0, "ran": 0, "deselected": 0}
_gpu_nodeids: set[str] = set()


@functools.cache
def _cuda_device() -> tuple[str | None, str]:
    """(name of CUDA device 0 or None, why not). Imports torch: called only when a gpu test is collected."""
    try:
        import torch
    except ImportError as exc:
        return None, f"torch is not importable: {exc}"
    if not torch.cuda.is_available():
        return None, "no CUDA GPU: torch.cuda.is_available() is False"
    return torch.cuda.get_device_name(0), ""


def pytest_sessionstart(session: pytest.Session) -> None:
    _gpu_tier.update(collected=0, skipped=0, ran=0, deselected=0)
    _gpu_nodeids.clear()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without a CUDA GPU, every test marked gpu is skipped, with the reason."""
    gpu_items = [item for item in items if item.get_closest_marker("gpu") is not None]
    if gpu_items and (why_not := _cuda_device()[1]):
        for item in gpu_items:
            item.add_marker(pytest.mark.skip(reason=f"gpu tier: {why_not}"))


def pytest_deselected(items: list[pytest.Item]) -> None:
    _gpu_tier["deselected"] += sum(item.get_closest_marker("gpu") is not None for item in items)


@pytest.hookimpl(trylast=True)  # after -m/-k deselection: count only the gpu tests that will run
def pytest_collection_finish(session: pytest.Session) -> None:
    _gpu_nodeids.update(item.nodeid for item in session.items if item.get_closest_marker("gpu") is not None)
    _gpu_tier["collected"] = len(_gpu_nodeids)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.nodeid in _gpu_nodeids:
        if report.when == "setup" and report.skipped:
            _gpu_tier["skipped"] += 1
        elif report.when == "call":
            _gpu_tier["ran"] += 1


# Under pytest-xdist (-n) the workers collect and run the tests, and the controller, which collects
# nothing, prints the summary: each worker hands its counts over when it finishes.
def pytest_sessionfinish(session: pytest.Session) -> None:
    workeroutput = getattr(session.config, "workeroutput", None)  # set on an xdist worker only
    if workeroutput is not None:
        workeroutput["gpu_tier"] = dict(_gpu_tier)


@pytest.hookimpl(optionalhook=True)  # pytest-xdist's hook, on the controller, as each worker finishes
def pytest_testnodedown(node: Any, error: Any) -> None:
    counts = getattr(node, "workeroutput", {}).get("gpu_tier")
    if counts:  # every worker collects (and deselects) the whole suite, and runs its own share of it
        for key in ("collected", "deselected"):
            _gpu_tier[key] = max(_gpu_tier[key], counts[key])
        for key in ("skipped", "ran"):
            _gpu_tier[key] += counts[key]


@pytest.hookimpl(wrapper=True, tryfirst=True)  # outermost: the line comes after pytest's short test summary
def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> Iterator[None]:
    """One line in every run, CI's included, saying how many gpu tests were skipped and why."""
    yield
    n = _gpu_tier["skipped"]
    if _gpu_tier["collected"] == 0:
        line = f"gpu tier: {n} tests skipped (no collected test is marked gpu)"
    elif device := _cuda_device()[0]:
        line = f"gpu tier: {n} tests skipped; {_gpu_tier['ran']} ran on the CUDA GPU ({device})"
    else:
        line = f"gpu tier: {n} tests skipped ({_cuda_device()[1]})"
    if _gpu_tier["deselected"]:
        line += f"; {_gpu_tier['deselected']} more deselected (-m/-k)"
    terminalreporter.write_line(line, bold=True)


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
        # a LLaMA-VID config names its vision side (mm_*): without it the folder is a base LLM, not a chat model
        (folder / "config.json").write_text('{"model_type": "llamavid", "mm_vision_tower": "eva_vit_g.pth"}',
                                            encoding="utf-8")
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
