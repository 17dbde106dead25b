"""A model download as a child process of the window (:mod:`app.model_pull`), with progress and cancel.

The model manager downloads resumably; run in a child process it can be stopped at any moment
without a trace beyond its ``.part`` files, from which the next download resumes, and the window
never waits on the network. The window owns one :class:`ModelDownload`, so a download goes on
while the settings dialog is closed, and stops (keeping what arrived) when the window closes.
:class:`ModelConvert` runs a model's llama.cpp conversion (:mod:`app.model_convert`) the same way.
"""
from __future__ import annotations

import json
import os
import signal
import sys
from collections import deque

from PySide6.QtCore import QObject, QProcess, QProcessEnvironment, Signal, Slot

from llamavid.paths import DataDir
from llamavid.storage import human_size

__all__ = ["ModelConvert", "ModelDownload"]


class ModelDownload(QObject):
    """``python -m app.model_pull`` for one catalogue model at a time."""

    progress = Signal(int, int, str)  # bytes here, bytes wanted, what is being fetched
    finished = Signal(str, str, str)  # model name, outcome (done, cancelled, error), message
    MODULE = "app.model_pull"  # the child: python -m MODULE --data-dir DIR NAME, JSON lines out
    NOUN, DONE = "download", "downloaded"  # its words: "download of NAME stopped", "NAME is downloaded"

    def __init__(self, data: DataDir, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.data = data
        self.proc: QProcess | None = None
        self.name = ""
        self.done_bytes, self.total_bytes, self.label = 0, 0, ""
        self.last: dict = {}
        self.errors: deque[str] = deque(maxlen=20)
        self._buffer = b""

    def running(self) -> bool:
        return self.proc is not None and self.proc.state() != QProcess.ProcessState.NotRunning

    def pid(self) -> int | None:
        return int(self.proc.processId()) if self.running() else None

    def start(self, name: str) -> bool:
        if self.running():
            return False
        self.data.create()
        self.name, self.done_bytes, self.total_bytes, self.label, self.last = name, 0, 0, "asking the hub…", {}
        self.errors, self._buffer = deque(maxlen=20), b""
        proc = QProcess(self)
        proc.setProgram(sys.executable)
        proc.setArguments(["-m", self.MODULE, "--data-dir", str(self.data.root), name])
        env = QProcessEnvironment.systemEnvironment()
        env.insert("PYTHONUNBUFFERED", "1")
        proc.setProcessEnvironment(env)
        proc.setUnixProcessParameters(QProcess.UnixProcessFlag.CreateNewSession)
        proc.readyReadStandardOutput.connect(self._read)
        proc.readyReadStandardError.connect(self._read_errors)
        proc.finished.connect(self._finished)
        self.proc = proc
        proc.start()
        self.progress.emit(0, 0, self.label)
        return True

    @Slot()
    def _read(self) -> None:
        if self.proc is None:
            return
        self._buffer += bytes(self.proc.readAllStandardOutput().data())
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            self._event(event)

    def _event(self, event: dict) -> None:
        kind = event.get("event")
        if kind in ("plan", "progress"):
            self.done_bytes, self.total_bytes = int(event.get("done", 0)), int(event.get("total", 0))
            if kind == "plan":
                self.label = self.plan_label(event)
        elif kind == "file":
            self.label = f"file {event.get('index')} of {event.get('count')}: {event.get('label')}"
        else:
            self.last = event
            return
        self.progress.emit(self.done_bytes, self.total_bytes, self.label)

    def plan_label(self, event: dict) -> str:
        """What the plan event says, until the first file starts."""
        return f"{event.get('files', 0)} file(s) to fetch"

    @Slot()
    def _read_errors(self) -> None:
        if self.proc is not None:
            text = bytes(self.proc.readAllStandardError().data()).decode("utf-8", "replace")
            self.errors.extend(line for line in text.splitlines() if line.strip())

    @Slot(int, QProcess.ExitStatus)
    def _finished(self, code: int, status: QProcess.ExitStatus) -> None:
        self._read()
        self._read_errors()
        last = self.last
        if last.get("event") == "done":
            outcome, message = "done", f"{self.name} is {self.DONE} ({last.get('folder')})"
        elif last.get("event") == "cancelled" or code == 130:
            kept = int(last.get("kept", 0))
            outcome = "cancelled"
            message = (f"{self.NOUN} of {self.name} stopped; {human_size(kept)} kept, and the next {self.NOUN} "
                       f"resumes from there")
        elif last.get("event") == "error":
            outcome, message = "error", str(last.get("message"))
        else:
            outcome = "error"
            message = f"the {self.NOUN} stopped unexpectedly (exit status {code}): " + (
                self.errors[-1] if self.errors else "no message")
        self.finished.emit(self.name, outcome, message)

    def cancel(self) -> None:
        """Stop the download; the partial files stay for the next one."""
        if self.running():
            self.proc.terminate()

    def stop(self, timeout: float = 20.0) -> None:
        """Cancel and wait (closing the window): SIGTERM, then SIGKILL after ``timeout`` seconds."""
        proc = self.proc
        if proc is None or proc.state() == QProcess.ProcessState.NotRunning:
            return
        pid = int(proc.processId())
        proc.terminate()
        if not proc.waitForFinished(int(timeout * 1000)):
            proc.kill()
            proc.waitForFinished(5000)
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


class ModelConvert(ModelDownload):
    """``python -m app.model_convert``: a downloaded model's llama.cpp conversion, with the same
    progress, cancel (the complete files stay, the next conversion goes on from them) and words."""

    MODULE = "app.model_convert"
    NOUN, DONE = "conversion", "converted for llama.cpp"

    def plan_label(self, event: dict) -> str:
        return (f"about {human_size(int(event.get('needed', 0)))} to write "
                f"({human_size(int(event.get('free', 0)))} free)")
