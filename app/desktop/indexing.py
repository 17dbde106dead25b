"""The library as the window drives it: what to show, what a button does, and the indexer process.

Indexing runs in a child process, ``python -m cli index run`` (the same runner as the command
line), so the window never loads the vision model and never waits on it. The window and the
child talk only through the library database: the window adds folders and queues films, pauses
and resumes the queue (``LibraryStore.pause_queue``; the runner stops after its current chunk and
exits), and reads progress back every half second; the child claims jobs, writes chunks and
progress. The child starts whenever films are queued and the queue runs, and exits when nothing
is left. Closing the window stops it with SIGTERM, which the runner treats like Ctrl-C: the film
being indexed goes back to the queue with every finished chunk kept, and the next start resumes
it. The child runs in its own session, so nothing it starts is left behind either.

What the buttons do, the child's command line and its log file are :mod:`indexer.controls`, the same
as ``llamavid index`` and the web UI's; the functions here add the thumbnails, take no Qt and run on
worker threads (:class:`~app.desktop.common.Tasks`).
"""
from __future__ import annotations

import fcntl
import os
import signal
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from PySide6.QtCore import QObject, QProcess, QProcessEnvironment, Signal, Slot

from app.desktop.thumbnails import remove_thumbnails
from indexer import controls
from indexer.estimate import LibraryEstimate, library_estimate
from indexer.library import Movie, list_movies
from indexer.store import LibraryStore
from llamavid.paths import DataDir

__all__ = ["IndexerProcess", "LibraryReader", "LibrarySnapshot", "add_folder", "indexer_lock_holder", "open_film",
           "remove_folder", "reindex", "set_paused"]


@dataclass
class LibrarySnapshot:
    movies: list[Movie]
    folders: list[dict]
    paused: bool
    counts: dict[str, int] = field(default_factory=dict)
    lock_holder: int | None = None  # pid of the process indexing this data folder, if any
    estimate: LibraryEstimate | None = None  # the films still to index, in order, and how long they take

    @property
    def waiting(self) -> int:
        """Films the indexer still has to work: queued, or left running by a process that died (a
        film whose file is missing waits for it to come back, not for the indexer)."""
        return sum(m.state in ("queued", "running") for m in self.movies)

    def movie(self, movie_id: int) -> Movie | None:
        return next((m for m in self.movies if m.id == movie_id), None)


def indexer_lock_holder(root: Path) -> int | None:
    """The pid holding ``<data>/indexer.lock`` (an indexer at work), else None; takes nothing."""
    path = Path(root) / "indexer.lock"
    if not path.exists():
        return None
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            text = handle.read().strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None


class LibraryReader:
    """One connection to the library for the window's poll; use it from one thread at a time."""

    def __init__(self, data: DataDir):
        self.data = data
        self.store: LibraryStore | None = None

    def snapshot(self) -> LibrarySnapshot:
        if self.store is None:
            self.data.create()
            self.store = LibraryStore.open(self.data.database)
        store = self.store
        movies = list_movies(store)
        return LibrarySnapshot(movies, store.libraries(), store.queue_paused(), store.queue_counts(),
                               indexer_lock_holder(self.data.root), library_estimate(store, movies))

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None


# -- what the buttons do (worker threads): the library controls of every front end, plus thumbnails --
def open_film(data: DataDir, movie_id: int) -> bool:
    """The film opened in the window goes first in the indexing queue if it still waits there."""
    with controls.open_store(data) as store:
        return controls.open_film(store, movie_id)


def add_folder(data: DataDir, path: str) -> str:
    """Register a folder and scan it now: its films are queued. Returns what was found."""
    with controls.open_store(data) as store:
        return controls.add_folders(store, [path]).message()


def remove_folder(data: DataDir, folder_id: int) -> str:
    """Forget a library folder: its films leave the library and their caches and thumbnails are
    deleted (the video files are never touched). Conversations about them are kept."""
    with controls.open_store(data) as store:
        removed = controls.remove_folder(store, folder_id)
    for movie_id in removed.movie_ids:
        remove_thumbnails(data.root, movie_id)
    return removed.message()


def reindex(data: DataDir, movie_id: int) -> str:
    """Index a film again (:func:`indexer.controls.reindex`); one read from the start loses its thumbnail."""
    with controls.open_store(data) as store:
        done = controls.reindex(store, movie_id, "re-index asked for in the app")
    if done.how == "restarted":
        remove_thumbnails(data.root, movie_id)
    return done.message()


def set_paused(data: DataDir, paused: bool) -> None:
    """Pause the whole queue (the film being indexed stops after its current chunk) or resume it,
    paused films included."""
    with controls.open_store(data) as store:
        controls.control(store, "pause" if paused else "resume")


# -- the child process ------------------------------------------------------------------------------
class IndexerProcess(QObject):
    """``llamavid index run`` as a child process of the window (see the module docstring)."""

    changed = Signal()  # started or finished
    failed = Signal(str)  # why it stopped, for a person

    STOP_SECONDS = 60.0  # how long a stop waits for the current chunk before killing
    RESTART_SECONDS = 5.0  # a run that ended by itself is not restarted sooner (no respawn loop)

    def __init__(self, data: DataDir, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.data = data
        self.proc: QProcess | None = None
        self.tail: deque[str] = deque(maxlen=40)
        self.blocked: str | None = None  # why it is not restarted by itself (cleared by a user action)
        self.stopping = False
        self.started_at = 0.0
        self.ended_at = 0.0  # when the last run ended by itself (a restart waits RESTART_SECONDS)

    @property
    def log_path(self) -> Path:
        return controls.indexer_log(self.data)

    def running(self) -> bool:
        return self.proc is not None and self.proc.state() != QProcess.ProcessState.NotRunning

    def pid(self) -> int | None:
        return int(self.proc.processId()) if self.running() else None

    def command(self, device: str, idle: float) -> list[str]:
        return controls.indexer_command(self.data, device=device, idle=idle)

    def may_start(self) -> bool:
        """Not running, not blocked by a failure, and the last run did not end a moment ago."""
        return (not self.running() and not self.stopping and not self.blocked
                and time.monotonic() - self.ended_at >= self.RESTART_SECONDS)

    def unblock(self) -> None:
        """A person asked for indexing (resume, add, re-index, new settings): start at once."""
        self.blocked, self.ended_at = None, 0.0

    def start(self, device: str = "auto", idle: float = 0.0) -> bool:
        if self.running() or self.stopping:
            return False
        self.data.create()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        proc = QProcess(self)
        argv = self.command(device, idle)
        proc.setProgram(argv[0])
        proc.setArguments(argv[1:])
        proc.setWorkingDirectory(str(self.data.root))
        env = QProcessEnvironment.systemEnvironment()
        env.insert("PYTHONUNBUFFERED", "1")
        proc.setProcessEnvironment(env)
        proc.setProcessChannelMode(QProcess.ProcessChannelMode.MergedChannels)
        # its own session: a stop reaches whatever it starts (decoder processes), and a Ctrl-C in
        # the terminal that started the app reaches the app, which stops it cleanly
        proc.setUnixProcessParameters(QProcess.UnixProcessFlag.CreateNewSession)
        proc.readyReadStandardOutput.connect(self._read)
        proc.finished.connect(self._finished)
        proc.errorOccurred.connect(self._error)
        self.proc, self.tail = proc, deque(maxlen=40)
        self.started_at = time.monotonic()
        self._log(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(argv)}\n")
        proc.start()
        self.changed.emit()
        return True

    def _log(self, text: str) -> None:
        try:
            with open(self.log_path, "a", encoding="utf-8") as fh:
                fh.write(text)
        except OSError:
            pass

    @Slot()
    def _read(self) -> None:
        if self.proc is None:
            return
        text = bytes(self.proc.readAllStandardOutput().data()).decode("utf-8", "replace")
        self._log(text)
        self.tail.extend(line for line in text.splitlines() if line.strip())

    @Slot(QProcess.ProcessError)
    def _error(self, error: QProcess.ProcessError) -> None:
        if error == QProcess.ProcessError.FailedToStart:
            self.blocked = f"the indexer could not start ({self.proc.errorString() if self.proc else error})"
            self.failed.emit(self.blocked)

    @Slot(int, QProcess.ExitStatus)
    def _finished(self, code: int, status: QProcess.ExitStatus) -> None:
        self._read()
        stopped_by_us = self.stopping
        self.ended_at = time.monotonic()
        self._log(f"--- exit status {code}\n")
        if not stopped_by_us and (code != 0 or status != QProcess.ExitStatus.NormalExit):
            message = next((line.split("error: ", 1)[1] for line in reversed(self.tail)
                            if line.startswith("llamavid: error: ")), None)
            if message and "another indexer" in message:
                self.blocked = None  # someone else works the queue; the window only watches
            else:
                self.blocked = message or (f"the indexer stopped unexpectedly (exit status {code}); "
                                           f"its output is in {self.log_path}")
                self.failed.emit(self.blocked)
        self.changed.emit()

    def stop(self, timeout: float | None = None) -> None:
        """Stop the child and wait for it: SIGTERM (its job goes back to the queue with every
        finished chunk kept), SIGKILL if it does not end in time, then whatever is left in its
        session. Blocks for at most ``timeout`` seconds plus a moment."""
        proc = self.proc
        if proc is None or proc.state() == QProcess.ProcessState.NotRunning:
            return
        self.stopping = True
        pid = int(proc.processId())
        try:
            proc.terminate()
            if not proc.waitForFinished(int((self.STOP_SECONDS if timeout is None else timeout) * 1000)):
                proc.kill()
                proc.waitForFinished(5000)
        finally:
            _kill_session(pid)
            self.stopping = False


def _kill_session(pid: int) -> None:
    """SIGKILL what is left of the child's session (its process group has the child's pid)."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
