"""The web UI's llama.cpp conversion: a downloaded model's q4_K_M copy, made in a child process.

Where the served model runs on llama.cpp (no GPU holds it in fp16) and its conversion is not made,
the page offers it with its disk space (:func:`app.model_convert.conversion_offer`, the desktop
app's words). The work is ``python -m app.model_convert`` (the desktop app's child): minutes of
reading and writing GB, never in the server, whose event loop and chat stay as they are. Its JSON
lines are read on a thread into :class:`ConversionState`, which the page polls; Cancel sends
SIGTERM (the complete files stay, the next conversion goes on from them). When it is done, the
chat service loads the model from it.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from dataclasses import dataclass, replace

from llamavid.paths import DataDir
from llamavid.storage import human_size
from llamavid.system import stop_process_group

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConversionState:
    """What the page shows of the conversion: under way or how it ended, and its bytes."""

    name: str | None = None
    running: bool = False
    done: int = 0  # bytes written
    total: int = 0  # bytes at the end (an estimate until done)
    label: str = ""  # the file under way
    outcome: str | None = None  # done, cancelled or error, once it ended
    message: str = ""  # how it ended, in words


class Conversion:
    """One conversion child at a time for one data folder (see the module docstring)."""

    MODULE = "app.model_convert"  # python -m MODULE --data-dir DIR NAME

    def __init__(self, data: DataDir) -> None:
        self.data = data
        self._proc: subprocess.Popen[str] | None = None
        self._state = ConversionState()
        self._lock = threading.Lock()
        self._errors: list[str] = []

    def state(self) -> ConversionState:
        with self._lock:
            return self._state

    def running(self) -> bool:
        return self.state().running

    def start(self, name: str) -> bool:
        """Convert installed model ``name``; False when a conversion already runs."""
        with self._lock:
            if self._state.running:
                return False
            self._state, self._errors = ConversionState(name, running=True, label="starting"), []
            command = [sys.executable, "-m", self.MODULE, "--data-dir", str(self.data.root), name]
            self._proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          stdin=subprocess.DEVNULL, text=True, start_new_session=True,
                                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
            proc = self._proc
        threading.Thread(target=self._read, args=(proc,), name="llamavid-convert", daemon=True).start()
        threading.Thread(target=self._read_errors, args=(proc,), name="llamavid-convert-err", daemon=True).start()
        log.info("conversion of %s started (pid %s)", name, proc.pid)
        return True

    def _read(self, proc: subprocess.Popen[str]) -> None:
        last: dict = {}
        for line in proc.stdout or ():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") in ("plan", "progress", "file"):
                self._update(event)
            else:
                last = event
        code = proc.wait()
        with self._lock:
            self._state = replace(self._state, running=False, **self._ending(last, code))

    def _read_errors(self, proc: subprocess.Popen[str]) -> None:
        for line in proc.stderr or ():
            if line.strip():
                self._errors = [*self._errors[-19:], line.rstrip()]

    def _update(self, event: dict) -> None:
        with self._lock:
            state = self._state
            if event["event"] == "file":
                state = replace(state, label=f"file {event.get('index')} of {event.get('count')}: {event.get('label')}")
            else:
                state = replace(state, done=int(event.get("done", 0)), total=int(event.get("total", 0)))
            self._state = state

    def _ending(self, last: dict, code: int) -> dict:
        """The outcome and its words, from the child's last event and exit status."""
        name = self._state.name
        if last.get("event") == "done":
            return {"outcome": "done", "message": f"the conversion is done: {name} runs on llama.cpp from "
                                                  f"{last.get('folder')}",
                    "done": self._state.total}
        if last.get("event") == "cancelled" or code == 130:
            return {"outcome": "cancelled", "message": f"conversion of {name} stopped; "
                    f"{human_size(int(last.get('kept', 0)))} kept, and the next conversion goes on from there"}
        if last.get("event") == "error":
            return {"outcome": "error", "message": str(last.get("message"))}
        why = self._errors[-1] if self._errors else "no message"
        return {"outcome": "error", "message": f"the conversion stopped unexpectedly (exit status {code}): {why}"}

    def cancel(self) -> None:
        """Stop the conversion; its complete files stay for the next one."""
        with self._lock:
            proc = self._proc if self._state.running else None
        if proc is not None and proc.poll() is None:
            proc.terminate()

    def stop(self, timeout: float = 20.0) -> None:
        """Cancel and wait (the server shuts down): SIGTERM, then SIGKILL to its session."""
        if self._proc is not None:
            stop_process_group(self._proc, timeout)
