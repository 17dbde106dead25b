"""A server the tests talk to, started on 127.0.0.1 and ready: its model loaded (``/health`` 200), in this
process (:func:`serving`) or as a process of its own (:func:`serve_process`)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from app.server.app import Running, start
from app.server.settings import ServerSettings
from llamavid.system import stop_process_group
from tests.support.wait import wait_for

ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def serving(settings: ServerSettings) -> Iterator[Running]:
    """Start a server, wait until the model it loads in the background answers, stop it afterwards."""
    running = start(settings)
    try:
        with httpx.Client(base_url=running.url, timeout=60) as client:
            wait_for(lambda: client.get("/health").status_code == 200, timeout=300, interval=0.2)
        yield running
    finally:
        running.stop()


@dataclass
class ServerProcess:
    """``llamavid serve`` as a process of its own (its memory is read from ``/proc/<pid>/status``)."""

    proc: subprocess.Popen
    url: str
    port: int
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def memory(self) -> str:
        """Its memory in a line: VmRSS, RssAnon (its own), RssFile (files mapped), VmHWM (the peak of VmRSS)."""
        return ", ".join(f"{k} {self.status(k) // 2**20} MiB" for k in ("VmRSS", "RssAnon", "RssFile", "VmHWM"))

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def status(self, field: str) -> int:
        """A ``/proc/<pid>/status`` memory figure (VmRSS, VmHWM, RssAnon...) in bytes."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        raise AssertionError(f"{field} missing from /proc/{self.proc.pid}/status")

    def reset_peak(self) -> None:
        """Make VmHWM the current VmRSS (Linux's ``clear_refs`` 5), so the next peak is what follows."""
        Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")


@contextmanager
def serve_process(data: Path, log: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[ServerProcess]:
    """Start ``python -m cli --data-dir DATA serve --port 0 ARGS`` as a person would, wait until its
    model answers (``/health`` 200), and end it with SIGTERM (then SIGKILL) afterwards."""
    env = {**os.environ, "LLAMAVID_DATA_DIR": str(data), "PYTHONUNBUFFERED": "1", **(env or {})}
    with log.open("wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "cli", "--data-dir", str(data), "serve", "--port", "0", *args],
                                cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def banner() -> re.Match | None:
            if proc.poll() is not None:
                output = log.read_text(errors="replace")
                raise AssertionError(f"llamavid serve exited with {proc.returncode}:\n{output}")
            return re.search(r"running at (http://127\.0\.0\.1:(\d+)/)", log.read_text(errors="replace"))

        found = wait_for(banner, timeout=120, interval=0.1)
        running = ServerProcess(proc, found.group(1), int(found.group(2)), log)
        with httpx.Client(base_url=running.url, timeout=30) as http:
            wait_for(lambda: http.get("/health").status_code == 200, timeout=300, interval=0.2)
        yield running
    finally:
        stop_process_group(proc, timeout=60)



