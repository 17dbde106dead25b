"""Save clip: a moment of the open film as a short video and its subtitle lines, from the chat.

A moment's button has a context menu (right-click) with "Save clip…": a file dialog asks where,
then :func:`app.clips.export_moment` cuts the clip on a thread of its own (a film is read from the
moment's keyframe on, and encoding a few seconds may take a few seconds of CPU), while a progress
dialog shows how far it is and its Cancel stops the cut: nothing is left behind, since the clip is
written beside its name and renamed over it only when complete.
"""
from __future__ import annotations

import threading
from pathlib import Path

from PySide6.QtCore import QObject, QStandardPaths, Qt, QThread, Signal, Slot
from PySide6.QtWidgets import QFileDialog, QMessageBox, QProgressDialog, QWidget

from app.clips import MomentClip, clip_name, export_moment
from app.desktop.common import describe_error
from indexer.library import Movie
from indexer.store import LibraryStore
from llamavid.errors import Cancelled

__all__ = ["ClipSaver", "ClipWorker"]

CLIP_FILTER = "Videos (*.mp4 *.mkv *.mov *.m4v);;All files (*)"


class ClipWorker(QObject):
    """Cuts one clip (on the thread it is moved to): :attr:`progress` in percent, then exactly one of
    :attr:`done` (the :class:`~app.clips.MomentClip`), :attr:`cancelled` or :attr:`failed` (the
    message), then :attr:`finished`."""

    progress = Signal(int)
    done = Signal(object)
    cancelled = Signal()
    failed = Signal(str)
    finished = Signal()

    def __init__(self, database: Path, movie: Movie, start: float, end: float, dst: Path) -> None:
        super().__init__()
        self.database, self.movie, self.start, self.end, self.dst = database, movie, start, end, dst
        self._stop = threading.Event()

    def cancel(self) -> None:
        """Stop the cut at its next packet (any thread)."""
        self._stop.set()

    @Slot()
    def run(self) -> None:
        try:
            with LibraryStore.open(self.database) as store:
                made = export_moment(store, self.movie, self.start, self.end, self.dst,
                                     progress=lambda share: self.progress.emit(int(share * 100)),
                                     stop=self._stop.is_set)
            self.done.emit(made)
        except Cancelled:
            self.cancelled.emit()
        except BaseException as exc:  # noqa: BLE001 - shown to the person like any error
            self.failed.emit(describe_error(exc))
        finally:
            self.finished.emit()


class ClipSaver(QObject):
    """The Save clip action of a window: one clip at a time (see the module docstring).
    :attr:`saved` tells the window what was written (a line for its status bar), :attr:`ended`
    that the cut is over, whatever its end."""

    saved = Signal(str)
    ended = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.folder = Path(QStandardPaths.writableLocation(QStandardPaths.StandardLocation.MoviesLocation)
                           or Path.home())
        self.worker: ClipWorker | None = None
        self.thread_: QThread | None = None
        self.dialog: QProgressDialog | None = None
        self.result: MomentClip | None = None
        self.error: str | None = None

    @property
    def busy(self) -> bool:
        return self.thread_ is not None

    def ask_and_save(self, parent: QWidget, database: Path, movie: Movie, start: float, end: float) -> bool:
        """Ask for a file name, then :meth:`save`; False when the person chose none or a clip is still cut."""
        if self.busy:
            QMessageBox.information(parent, "Save clip", "A clip is being saved; wait for it, or cancel it.")
            return False
        suggested = str(self.folder / clip_name(movie, start))
        path, _ = QFileDialog.getSaveFileName(parent, "Save clip", suggested, CLIP_FILTER)
        if not path:
            return False
        dst = Path(path)
        if dst.suffix.lower() not in (".mp4", ".mkv", ".mov", ".m4v"):
            dst = dst.with_name(dst.name + ".mp4")
        self.folder = dst.parent
        self.save(parent, database, movie, start, end, dst)
        return True

    def save(self, parent: QWidget | None, database: Path, movie: Movie, start: float, end: float,
             dst: Path) -> None:
        """Cut the clip on a thread of its own, with a progress dialog whose Cancel stops it."""
        self.result, self.error = None, None
        self.dialog = QProgressDialog(f"Saving {dst.name}…", "Cancel", 0, 100, parent)
        self.dialog.setWindowTitle("Save clip")
        self.dialog.setWindowModality(Qt.WindowModality.WindowModal)
        self.dialog.setAutoClose(False)
        self.dialog.setAutoReset(False)
        self.dialog.setMinimumDuration(300)
        self.worker = ClipWorker(database, movie, start, end, dst)
        self.thread_ = QThread(self)
        self.worker.moveToThread(self.thread_)
        self.thread_.started.connect(self.worker.run)
        self.worker.progress.connect(self.dialog.setValue)
        self.worker.done.connect(self._done)
        self.worker.failed.connect(self._failed)
        self.worker.finished.connect(self.thread_.quit)
        self.thread_.finished.connect(self._cleanup)
        self.dialog.canceled.connect(self.cancel)
        self.thread_.start()

    def cancel(self) -> None:
        if self.worker is not None:
            self.worker.cancel()

    def wait(self, timeout: float = 30.0) -> None:
        """Wait for a cut under way to end (a window closing cancels it first)."""
        if self.thread_ is not None:
            self.thread_.wait(int(timeout * 1000))

    @Slot(object)
    def _done(self, made: MomentClip) -> None:
        self.result = made
        lines = f" and {made.lines} subtitle lines ({made.subtitles.name})" if made.subtitles else ""
        self.saved.emit(f"Saved the clip {made.clip.path.name}{lines} in {made.clip.path.parent}")

    @Slot(str)
    def _failed(self, message: str) -> None:
        self.error = message
        QMessageBox.warning(self.dialog.parentWidget() if self.dialog else None, "Save clip",
                            f"The clip was not saved: {message}")

    @Slot()
    def _cleanup(self) -> None:
        if self.dialog is not None:
            self.dialog.close()
            self.dialog.deleteLater()
        if self.worker is not None:
            self.worker.deleteLater()
        if self.thread_ is not None:
            self.thread_.deleteLater()
        self.dialog, self.worker, self.thread_ = None, None, None
        self.ended.emit()
