"""A process's memory and disk writes as Linux counts them, sampled while it runs.

``VmHWM`` (the kernel's peak resident set) counts file pages too: a memory-mapped GGUF or feature
file sits there although the kernel can drop it at any time. The figure that must fit beside other
programs is the anonymous memory (``RssAnon``: heap, KV cache, tensors), which the kernel does not
keep a peak of, so :class:`Sampler` polls ``/proc/<pid>/status`` from a thread and keeps the
highest values. Disk writes come from ``/proc/<pid>/io`` (``write_bytes``: what the process sent to
the storage, page-cache writes and written memory maps included). No torch here.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

FIELDS = ("VmRSS", "RssAnon", "RssFile", "VmHWM", "VmSwap")


def status(pid: int | str = "self") -> dict[str, int]:
    """The :data:`FIELDS` of ``/proc/<pid>/status`` in bytes (empty once the process is gone)."""
    out: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in FIELDS:
            out[key] = int(value.split()[0]) * 1024
    return out


def written_bytes(pid: int | str = "self") -> int | None:
    """``write_bytes`` of ``/proc/<pid>/io`` (None where the kernel does not count it)."""
    try:
        for line in Path(f"/proc/{pid}/io").read_text().splitlines():
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak() -> None:
    """Start the kernel's ``VmHWM`` of this process again from its current resident set."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


class Sampler:
    """Peaks of ``RssAnon`` and ``VmRSS`` of a process, polled every ``interval`` seconds."""

    def __init__(self, pid: int | str = "self", interval: float = 0.1):
        self.pid, self.interval = pid, interval
        self.peak_anon = self.peak_rss = self.last_hwm = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def sample(self) -> None:
        now = status(self.pid)
        if now:
            self.peak_anon = max(self.peak_anon, now.get("RssAnon", 0))
            self.peak_rss = max(self.peak_rss, now.get("VmRSS", 0))
            self.last_hwm = max(self.last_hwm, now.get("VmHWM", 0))

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            time.sleep(self.interval)

    def restart_peaks(self) -> None:
        """Begin a new phase: the peaks start again from now (and so does this process's VmHWM)."""
        if self.pid == "self":
            reset_peak()
        self.peak_anon = self.peak_rss = self.last_hwm = 0
        self.sample()

    def stop(self) -> dict[str, int]:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.sample()
        return self.peaks()

    def peaks(self) -> dict[str, int]:
        return {"peak_anon_bytes": self.peak_anon, "peak_rss_bytes": max(self.peak_rss, self.last_hwm)}
