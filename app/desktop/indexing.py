"""The library as the window drives it: what to show, what a button does, and the indexer process.

Indexing runs in a child process, ``python -m llamavid index run`` (the same runner as the command
line), so the window never loads the vision model and never waits on it. The window and the
child talk only through the library database: the window adds folders and queues films, pauses
and resumes the queue (``LibraryStore.pause_queue``; the runner stops after its current chunk and
exits), and reads progress back every half second; the child claims jobs, writes chunks and
progress. The child starts whenever films are queued and the queue runs, and exits when nothing
is left. Closing the window stops it with SIGTERM, which the runner treats like Ctrl-C: the film
being indexed goes back to the queue with every finished chunk kept, and the next start resumes
it. The child runs in its own session, so nothing it starts is left behind either.

The functions here take no Qt and run on worker threads (:class:`~app.desktop.common.Tasks`).
"""
from __future__ import annotations

import fcntl
import os
import signal
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from PySide6.QtCore import QObject, QProcess, QProcessEnvironment, Signal, Slot

from app.desktop.thumbnails import remove_thumbnails
from indexer import movies as movie_files
from indexer.library import Movie, list_movies
from indexer.scan import add_library, scan
from indexer.store import LibraryStore
from llamavid.errors import UserError
from llamavid.paths import DataDir

__all__ = ["IndexerProcess", "LibraryReader", "LibrarySnapshot", "add_folder", "indexer_lock_holder",
           "movie_status", "remove_folder", "reindex", "set_paused"]

STAGES = {"probe": "reading the file", "subtitles": "reading subtitles", "speech": "recognising speech",
          "features": "reading frames", "prepare": "preparing for fast answers"}
UNITS = {"features": "frames", "speech": "windows", "prepare": "tokens"}


@dataclass
class LibrarySnapshot:
    movies: list[Movie]
    folders: list[dict]
    paused: bool
    counts: dict[str, int] = field(default_factory=dict)
    lock_holder: int | None = None  # pid of the process indexing this data folder, if any

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
        return LibrarySnapshot(list_movies(store), store.libraries(), store.queue_paused(), store.queue_counts(),
                               indexer_lock_holder(self.data.root))

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None


def movie_status(movie: Movie, paused: bool) -> tuple[str, int, int]:
    """(what the film's row says, progress done, progress total; total 0: no bar)."""
    done, total = movie.progress[0], movie.progress[1] or 0
    state = movie.state
    if state == "done":
        text = "ready to chat" + (f" ({movie.warning})" if movie.warning else "")
        return text, 0, 0
    if state == "missing":
        return "file missing (it resumes if the file comes back)", 0, 0
    if state == "failed":
        return f"failed: {movie.error or 'unknown error'}", 0, 0
    if state == "cancelled":
        return "cancelled", 0, 0
    stage = STAGES.get(movie.stage or "", movie.stage or "")
    if state == "running":
        amount = f": {done:,} / {total:,} {UNITS.get(movie.stage or '', '')}".rstrip() if total else ""
        eta = f", about {_duration(movie.eta_seconds)} left" if movie.eta_seconds else ""
        return f"indexing, {stage}{amount}{eta}", done, total
    if state == "paused" or (state == "queued" and paused):
        return "paused" + (f" at {done:,} / {total:,}" if total else ""), done, total
    if state in ("queued", "new"):
        if movie.features_complete and movie.prepare_wanted and not movie.prepared_bytes:
            return "waiting to be prepared for fast answers", 0, 0
        return ("waiting to resume" if done else "waiting to be indexed"), done, total
    return state, done, total


def _duration(seconds: float) -> str:
    return f"{max(1, round(seconds))} s" if seconds < 90 else f"{round(seconds / 60)} min"


# -- what the buttons do (worker threads) ---------------------------------------------------------
def add_folder(data: DataDir, path: str) -> str:
    """Register a folder and scan it now: its films are queued. Returns what was found."""
    with LibraryStore.open(data.create().database) as store:
        library = add_library(store, path)
        report = scan(store, [library["id"]])
    films = len(report.added) + len(report.moved) + len(report.changed)
    text = f"added {library['path']}: {films} new film{'s' if films != 1 else ''}"
    if report.unchanged:
        text += f", {report.unchanged} already known"
    if report.errors:
        text += f"; {len(report.errors)} unreadable: {report.errors[0]}"
    return text


def remove_folder(data: DataDir, folder_id: int) -> str:
    """Forget a library folder: its films leave the library and their caches are deleted (the
    video files are never touched). Conversations about them are kept."""
    with LibraryStore.open(data.database) as store:
        row = next((r for r in store.libraries() if r["id"] == folder_id), None)
        if row is None:
            raise UserError("that folder is not in the library any more")
        ids = [m["id"] for m in store.library_movies(folder_id)]
        for movie_id in ids:
            movie_files.delete(store, movie_id)
            remove_thumbnails(data.root, movie_id)
        store.remove_library(folder_id)
    return f"removed {row['path']} from the library ({len(ids)} film{'s' if len(ids) != 1 else ''}; files kept)"


def reindex(data: DataDir, movie_id: int) -> str:
    """Index a film again: a failed, cancelled or paused one continues where it stopped; a finished
    one is read again from the start (features and subtitle files; recognised speech is kept)."""
    with LibraryStore.open(data.database) as store:
        row = store.db.execute("SELECT state FROM jobs WHERE movie_id = ?", [movie_id]).fetchone()
        name = Path(store.movie(movie_id)["path"]).name
        state = row[0] if row else None
        if state == "running":
            raise UserError(f"{name} is being indexed right now; pause indexing first to index it again")
        if state in ("failed", "cancelled", "paused"):
            store.control_jobs([movie_id], "retry")
            return f"{name}: queued again; it continues where it stopped"
        if state == "queued":
            return f"{name} is already waiting to be indexed"
        movie_files.clear_features(store, movie_id)
        store.reread_subtitles(movie_id, "re-index asked for in the app", redo_speech=False)
        remove_thumbnails(data.root, movie_id)
    return f"{name}: queued to be indexed again from the start"


def set_paused(data: DataDir, paused: bool) -> None:
    """Pause the whole queue (the film being indexed stops after its current chunk) or resume it."""
    with LibraryStore.open(data.create().database) as store:
        store.pause_queue(paused)
        if not paused:
            ids = store.paused_movie_ids()
            if ids:
                store.control_jobs(ids, "resume")


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
        return self.data.root / "logs" / "indexer.log"

    def running(self) -> bool:
        return self.proc is not None and self.proc.state() != QProcess.ProcessState.NotRunning

    def pid(self) -> int | None:
        return int(self.proc.processId()) if self.running() else None

    def command(self, device: str, idle: float) -> list[str]:
        return [sys.executable, "-m", "llamavid", "--data-dir", str(self.data.root), "index", "run", "--quiet",
                "--device", device or "auto", "--idle", f"{max(0.0, idle):g}"]

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
