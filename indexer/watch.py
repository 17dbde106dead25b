"""Follow the library folders: rescan on file-system events (watchfiles) and periodically.

Change events do not arrive for every setup (network shares, some container mounts), so a full
rescan also runs every ``rescan_seconds``; since unchanged files are only stat'ed, that is cheap.
Files modified in the last ``settle_seconds`` are left for a later scan: a film still being copied
would otherwise be fingerprinted and indexed half-written.
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import watchfiles

from indexer.scan import VIDEO_EXTENSIONS, scan
from indexer.store import LibraryStore
from indexer.subtitle_sources import IMAGE_EXTENSIONS, TEXT_EXTENSIONS

log = logging.getLogger(__name__)
WATCHED_EXTENSIONS = VIDEO_EXTENSIONS | set(TEXT_EXTENSIONS) | set(IMAGE_EXTENSIONS)


class Watcher:
    """A background thread that keeps the queue filled; the runner calls ``wait`` when it is empty."""

    def __init__(self, data, rescan_seconds: float = 1800.0, settle_seconds: float = 10.0,
                 poll_seconds: float = 5.0):
        self.data = data
        self.rescan_seconds = rescan_seconds
        self.settle_seconds = settle_seconds
        self.poll_seconds = poll_seconds
        self.stopped = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="llamavid-watch", daemon=True)
        self.scans = 0

    def start(self) -> None:
        self._rescan()
        self._thread.start()

    def stop(self) -> None:
        self.stopped.set()
        self._wake.set()
        self._thread.join(timeout=10)

    def wait(self) -> None:
        """Block until a scan may have queued something (or a poll interval passes)."""
        self._wake.wait(self.poll_seconds)
        self._wake.clear()

    def _libraries(self) -> list[str]:
        with LibraryStore.open(self.data.database) as store:
            return store.library_paths()

    def _rescan(self) -> None:
        with LibraryStore.open(self.data.database) as store:
            report = scan(store, settle_seconds=self.settle_seconds)
        self.scans += 1
        self._last_full = time.monotonic()
        self._retry_at = time.monotonic() + self.settle_seconds if report.busy else None
        if report.added or report.changed or report.moved or report.missing or report.returned:
            log.info("scan: %s", report.summary())
        self._wake.set()

    def _loop(self) -> None:
        while not self.stopped.is_set():
            paths = [p for p in self._libraries() if Path(p).is_dir()]
            if not paths:
                self.stopped.wait(self.poll_seconds)
                self._maybe_rescan()
                continue
            for changes in watchfiles.watch(*paths, stop_event=self.stopped, yield_on_timeout=True,
                                            rust_timeout=int(self.poll_seconds * 1000), raise_interrupt=False):
                if any(Path(p).suffix.lower() in WATCHED_EXTENSIONS for _, p in changes):
                    self._rescan()
                else:
                    self._maybe_rescan()
                if [p for p in self._libraries() if Path(p).is_dir()] != paths:
                    break  # a folder was added or removed: watch the new set

    def _maybe_rescan(self) -> None:
        now = time.monotonic()
        if now - self._last_full >= self.rescan_seconds or (self._retry_at and now >= self._retry_at):
            self._rescan()
