"""What a person can ask of the library, one home for every front end: add or remove a folder,
index a film again, pause and resume the queue, cancel and retry; and how the indexer is started.

``llamavid index`` (add, pause, resume, cancel, retry, rm), the web UI's Library tab
(``app.server.indexing.Indexer``) and the desktop window (``app.desktop.indexing``) all call these
functions, so a folder is added, a queue resumed and a film re-indexed the same way everywhere.
Each action takes an open :class:`~indexer.store.LibraryStore` (``open_store(data)`` opens one),
changes the database only, and returns what it did; the words for a person are the result's
``message()``. No Qt and no web framework here: the desktop runs these on worker threads.

The indexer itself is always ``llamavid index run`` in a child process (:func:`indexer_command`),
which writes to one log file per data folder (:func:`indexer_log`): the server and the desktop
window start the same child, and the two talk to it only through the database.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from indexer import movies as movie_files
from indexer.scan import ScanReport, add_library, scan
from indexer.store import LibraryStore
from llamavid.errors import UserError
from llamavid.paths import DataDir

__all__ = ["ACTIONS", "FoldersAdded", "FolderRemoved", "Reindexed", "add_folders", "control", "find_folder",
           "has_work", "indexer_command", "indexer_log", "open_store", "remove_folder", "reindex"]

#: What ``control`` does to films (``llamavid index pause|resume|cancel|retry``).
ACTIONS = ("pause", "resume", "cancel", "retry", "first", "last")


def _films(n: int) -> str:
    return f"{n} film" if n == 1 else f"{n} films"


def open_store(data: DataDir) -> LibraryStore:
    """The data folder's library (created if need be); use it in a ``with`` block."""
    return LibraryStore.open(data.create().database)


# -- the indexer child --------------------------------------------------------------------------------
def indexer_command(data: DataDir, *, device: str = "auto", idle: float = 0.0, quiet: bool = True,
                    python: str | None = None, priority: str | None = None) -> list[str]:
    """The command line of the indexer child: ``llamavid index run`` on this data folder, on
    ``device``, resting ``idle`` seconds between chunks, without progress bars when ``quiet`` (its
    output goes to :func:`indexer_log`, not a terminal). The child runs at low priority and waits
    while a question is answered (:mod:`indexer.sharing`) unless ``priority`` is ``"normal"``
    (None: ``index_priority`` in the data folder's settings.json, else low)."""
    argv = [python or sys.executable, "-m", "cli", "--data-dir", str(data.root), "index", "run"]
    if quiet:
        argv.append("--quiet")
    if priority is not None:
        argv += ["--priority", priority]
    return [*argv, "--device", device or "auto", "--idle", f"{max(0.0, idle):g}"]


def indexer_log(data: DataDir) -> Path:
    """Where an indexer child's output goes (appended; every front end writes the same file)."""
    return data.logs / "indexer.log"


def has_work(store: LibraryStore) -> bool:
    """Films wait for the indexer: queued, or left running by a process that died."""
    counts = store.queue_counts()
    return counts.get("queued", 0) + counts.get("running", 0) > 0


# -- folders ------------------------------------------------------------------------------------------
@dataclass
class FoldersAdded:
    """Folders registered (each a ``libraries`` row) and, unless asked not to, what their scan found."""

    folders: list[dict]
    report: ScanReport | None

    @property
    def new_films(self) -> int:
        r = self.report
        return len(r.added) + len(r.moved) + len(r.changed) if r is not None else 0

    def message(self) -> str:
        """"added /films: 2 new films, 1 already known; 1 unreadable: ..."."""
        text = f"added {', '.join(f['path'] for f in self.folders)}"
        r = self.report
        if r is None:
            return text + " (not scanned yet)"
        text += f": {self.new_films} new film{'s' if self.new_films != 1 else ''}"
        if r.unchanged:
            text += f", {r.unchanged} already known"
        if r.errors:
            text += f"; {len(r.errors)} unreadable: {r.errors[0]}"
        return text


def add_folders(store: LibraryStore, paths: Iterable[str | os.PathLike[str]], *, scan_now: bool = True
                ) -> FoldersAdded:
    """Register folders of films (UserError for a file, a missing or an overlapping folder) and scan
    them now, which queues their films for the indexer."""
    folders = [add_library(store, Path(p).expanduser()) for p in paths]
    report = scan(store, [f["id"] for f in folders]) if scan_now else None
    return FoldersAdded(folders, report)


def find_folder(store: LibraryStore, path: str | os.PathLike[str]) -> int | None:
    """The id of the library folder ``path`` names (as given or with links resolved), else None."""
    given = Path(path).expanduser()
    return store.find_library([str(given.absolute()), os.path.realpath(given)])


@dataclass
class FolderRemoved:
    path: str
    movie_ids: list[int] = field(default_factory=list)

    def message(self) -> str:
        return f"removed {self.path} from the library ({_films(len(self.movie_ids))}; files kept)"


def remove_folder(store: LibraryStore, folder_id: int) -> FolderRemoved:
    """Forget a library folder: its films leave the library and their feature caches are deleted
    (the video files are never touched; conversations about them are kept)."""
    row = next((r for r in store.libraries() if r["id"] == folder_id), None)
    if row is None:
        raise UserError("that folder is not in the library any more")
    ids = [m["id"] for m in store.library_movies(folder_id)]
    for movie_id in ids:
        movie_files.delete(store, movie_id)
    store.remove_library(folder_id)
    return FolderRemoved(row["path"], ids)


# -- films --------------------------------------------------------------------------------------------
@dataclass
class Reindexed:
    name: str
    how: str  # "continues" (failed, cancelled or paused), "waiting" (already queued), "restarted"

    def message(self) -> str:
        return {"continues": f"{self.name}: queued again; it continues where it stopped",
                "waiting": f"{self.name} is already waiting to be indexed",
                "restarted": f"{self.name}: queued to be indexed again from the start"}[self.how]


def reindex(store: LibraryStore, movie_id: int, reason: str = "re-index asked for") -> Reindexed:
    """Index a film again: a failed, cancelled or paused one continues where it stopped; a finished
    one is read again from the start (features and subtitle files; recognised speech is kept).
    UserError while the indexer is reading it."""
    try:
        name = Path(store.movie(movie_id)["path"]).name
    except KeyError:
        raise UserError("that film is not in the library any more") from None
    row = store.db.execute("SELECT state FROM jobs WHERE movie_id = ?", [movie_id]).fetchone()
    state = row[0] if row else None
    if state == "running":
        raise UserError(f"{name} is being indexed right now; pause indexing first to index it again")
    if state in ("failed", "cancelled", "paused"):
        store.control_jobs([movie_id], "retry")
        return Reindexed(name, "continues")
    if state == "queued":
        return Reindexed(name, "waiting")
    movie_files.clear_features(store, movie_id)
    store.reread_subtitles(movie_id, reason, redo_speech=False)
    return Reindexed(name, "restarted")


def control(store: LibraryStore, action: str, movie_ids: list[int] | None = None) -> dict[str, int]:
    """Pause, resume, cancel, retry films, or move them first or last in the queue; returns how many
    had each outcome ("queued": 2...).

    Without films (``None``), the whole queue: ``pause`` pauses it (the film being indexed stops
    after its current chunk), ``resume`` runs it again and puts every paused film back in it,
    ``retry`` queues the failed films and those whose speech recognition failed; ``cancel`` needs
    films."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}; one of {', '.join(ACTIONS)}")
    if action in ("first", "last"):
        if not movie_ids:
            raise UserError(f"`llamavid index {action}` needs the films to move (ids or paths)")
        return _reorder(store, action, movie_ids)
    if movie_ids is None:
        if action == "pause":
            store.pause_queue(True)
            return {}
        if action == "resume":
            store.pause_queue(False)
            movie_ids = store.paused_movie_ids()
        elif action == "retry":
            movie_ids = store.failed_movie_ids()
        else:
            raise UserError(f"`llamavid index {action}` needs the films to {action} (ids or paths)")
    return store.control_jobs(movie_ids, action) if movie_ids else {}


def _reorder(store: LibraryStore, action: str, movie_ids: list[int]) -> dict[str, int]:
    """``first``: the films go to the front in the order given (the first named is indexed first; the
    film being indexed yields at its next chunk); ``last``: to the back."""
    counts: dict[str, int] = {}
    ordered = reversed(movie_ids) if action == "first" else movie_ids
    for movie_id in ordered:
        moved = store.bring_forward(movie_id) if action == "first" else store.send_back(movie_id)
        outcome = f"moved {action}" if moved else ("already " + action if _queued(store, movie_id) else "not queued")
        counts[outcome] = counts.get(outcome, 0) + 1
    return counts


def _queued(store: LibraryStore, movie_id: int) -> bool:
    return movie_id in store.queue_order()


def open_film(store: LibraryStore, movie_id: int) -> bool:
    """A person opened a film or asked about it, in any front end: if it still waits to be indexed,
    it goes first (the film being indexed yields to it at its next chunk). True when it moved."""
    return store.bring_forward(movie_id)
