"""The library tab's controls: add a folder, index, pause and resume.

Indexing runs as ``llamavid index run`` in a child process, never in the server: the indexer
loads its own EVA (about 2 GB in fp32) and keeps the CPU or GPU busy for hours, and the server's
model, queue and event loop stay as they are. The child and the server share only the library
database (SQLite in WAL mode: the server reads while the child writes); pausing is the
database's queue flag, which ``llamavid index pause`` sets too. The actions, the child's command
line and its log file are the ones every front end uses (:mod:`indexer.controls`).
"""
from __future__ import annotations

import logging
import subprocess
import threading
from pathlib import Path

from indexer import controls
from indexer.estimate import LibraryEstimate, library_estimate
from indexer.library import list_movies
from indexer.scan import ScanReport
from indexer.store import LibraryStore
from llamavid.errors import UserError
from llamavid.paths import DataDir
from llamavid.system import stop_process_group

log = logging.getLogger(__name__)


#: Why the web UI may not add a folder (``ServerSettings.allow_add_folders`` is off).
ADD_FOLDERS_OFF = ("this server does not add library folders from the web page (it has a key or listens beyond "
                   "this computer); add the folder on the computer itself (`llamavid index add FOLDER` or the "
                   "desktop app), or restart the server with --allow-add-folders")


class Indexer:
    """One ``llamavid index run`` child at a time, for one data folder. ``may_add_folders``: whether
    :meth:`add_folder` may register folders (the server's ``allow_add_folders``; off, a client can
    only index, pause and resume the folders this computer's user added)."""

    def __init__(self, data: DataDir, may_add_folders: bool = False):
        self.data = data
        self.may_add_folders = may_add_folders
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    @property
    def log_path(self) -> Path:
        return controls.indexer_log(self.data)

    def running(self) -> bool:
        with self._lock:
            return self._proc is not None and self._proc.poll() is None

    def start(self) -> bool:
        """Start the child if there is work and none runs; True when one runs afterwards."""
        with self._lock:
            if self._proc is not None and self._proc.poll() is None:
                return True
            with self._store() as store:
                if store.queue_paused() or not controls.has_work(store):
                    return False
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with self.log_path.open("ab") as out:
                self._proc = subprocess.Popen(controls.indexer_command(self.data), stdout=out,
                                              stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                              start_new_session=True)
            log.info("indexer started (pid %s), log in %s", self._proc.pid, self.log_path)
            return True

    def add_folder(self, folder: str) -> ScanReport:
        """Register a folder, scan it and start indexing what it holds (UserError for a bad folder, or
        when this server may not add folders)."""
        if not self.may_add_folders:
            raise UserError(ADD_FOLDERS_OFF)
        with self._store() as store:
            report = controls.add_folders(store, [folder]).report
        self.start()
        return report

    def pause(self) -> None:
        """The queue stops after the chunk under way (the child then exits)."""
        with self._store() as store:
            controls.control(store, "pause")

    def resume(self) -> None:
        """The queue runs again, paused films included, and the child starts."""
        with self._store() as store:
            controls.control(store, "resume")
        self.start()

    def paused(self) -> bool:
        with self._store() as store:
            return store.queue_paused()

    def counts(self) -> dict[str, int]:
        with self._store() as store:
            return store.queue_counts()

    def estimate(self) -> LibraryEstimate:
        """The films still to index, in order, with how long they take here (:mod:`indexer.estimate`)."""
        with self._store() as store:
            return library_estimate(store, list_movies(store))

    def open_film(self, movie_id: int) -> bool:
        """A person picked the film: if it waits to be indexed it goes first (a running indexer yields
        to it at its next chunk)."""
        with self._store() as store:
            return controls.open_film(store, movie_id)

    def stop(self, timeout: float = 30.0) -> None:
        """End the child as Ctrl+C would (it finishes its chunk; the film resumes next time)."""
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is not None:
            stop_process_group(proc, timeout)

    def _store(self) -> LibraryStore:
        return controls.open_store(self.data)
