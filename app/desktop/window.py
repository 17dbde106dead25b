"""The main window: the library, the player and the chat, side by side.

What runs where:

* The GUI thread only lays out what arrives. The library is read every half second on a worker
  thread (:class:`~app.desktop.indexing.LibraryReader`); adding or removing a folder, re-indexing
  a film, pausing, thumbnails and subtitle cues are worker-thread tasks (:class:`Tasks`).
* Indexing is a child process (:class:`~app.desktop.indexing.IndexerProcess`), started whenever
  films wait and the queue runs; folders are also followed for new and changed files
  (:class:`indexer.watch.Watcher`, a light thread: scans, no model).
* A model download is a child process too (:class:`~app.desktop.download.ModelDownload`), and so is
  a model's llama.cpp conversion (:class:`~app.desktop.download.ModelConvert`).
* Questions go to the :class:`~app.chat_service.ChatService`, whose own thread answers them; the
  chat pane reads each answer's events on a QThread and gets them through a signal.

Closing the window stops the question on its way (its text is kept as a draft), stops the download
(its partial files stay for the next one), the conversion (its complete files stay) and the indexer
(the film it was reading goes back to the queue with every finished chunk), closes the chat service,
waits for every thread, and saves the drafts and the open film in the settings: nothing is lost and
no process is left.
"""
from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from PySide6.QtCore import Qt, QTimer, QUrl, Slot
from PySide6.QtGui import QDesktopServices, QIcon
from PySide6.QtWidgets import (
    QApplication,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QMessageBox,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from app import status as st
from app.chat_service import ChatService
from app.desktop.chat import ChatPane
from app.desktop.common import MessageBar, Tasks, describe_error, hbox, heading
from app.desktop.download import ModelConvert, ModelDownload
from app.desktop.indexing import (
    IndexerProcess,
    LibraryReader,
    LibrarySnapshot,
    add_folder,
    open_film,
    reindex,
    remove_folder,
    set_paused,
)
from app.desktop.library import LibraryPane
from app.desktop.player import PlayerPane
from app.desktop.setup import SetupDialog
from app.desktop.thumbnails import make_thumbnail, remove_thumbnails
from app.film_words import index_state, model_label
from app.settings import Settings, load_settings, save_settings
from assets import asset_path
from indexer.library import Movie, choose_track, frame_times, subtitles
from indexer.scenes_search import search_library
from indexer.store import LibraryStore
from indexer.watch import Watcher
from llamavid.errors import UserError
from llamavid.hub.installed import resolve_model
from llamavid.paths import DataDir
from llamavid.runtime.generate import SamplingOptions

log = logging.getLogger(__name__)

__all__ = ["MainWindow", "run_desktop"]

POLL_MS = 500
SEARCH_LIMIT = 50  # the lines a dialogue search lists at most
ServiceFactory = Callable[[Settings], ChatService]


def _icon() -> QIcon:
    """The window icon; a broken install only loses the icon, not the window."""
    try:
        return QIcon(str(asset_path("icons", "llamavid.svg")))
    except FileNotFoundError:
        return QIcon()


class MainWindow(QMainWindow):
    """Library | player | chat (see the module docstring)."""

    def __init__(self, data_dir: Path | str, service_factory: ServiceFactory | None = None,
                 first_run_dialog: bool = True, watch_folders: bool = True) -> None:
        super().__init__()
        self.data = DataDir(Path(data_dir)).create()
        self.service_factory = service_factory
        self.setWindowTitle(f"{st.TITLE} - movie assistant")
        self.setWindowIcon(_icon())
        self.resize(1360, 820)
        self._closed = False
        self.settings_problem: str | None = None
        try:
            self.settings = load_settings(self.data)
        except UserError as exc:  # shown, and the file is left alone until the dialog saves
            self.settings, self.settings_problem = Settings(), str(exc)

        self.tasks = Tasks(2, self)  # library actions, thumbnails, subtitles
        self.poll_tasks = Tasks(1, self)  # the library read
        self.reader = LibraryReader(self.data)
        self.indexer = IndexerProcess(self.data, self)
        self.download = ModelDownload(self.data, self)
        self.convert = ModelConvert(self.data, self)  # a model's llama.cpp conversion, offered by the settings
        self.snapshot: LibrarySnapshot | None = None
        self.movie: Movie | None = None
        self.service: ChatService | None = None
        self._closing_services: list[threading.Thread] = []
        self._thumbs: dict[int, tuple[bool, int]] = {}  # movie id -> (complete, frames) last asked for
        self._restored = False
        self.setup_dialog: SetupDialog | None = None
        self.watcher: Watcher | None = None

        central = QWidget()
        layout = QVBoxLayout(central)
        layout.addLayout(self._build_top_bar())
        self.message = MessageBar()
        layout.addWidget(self.message)
        layout.addWidget(self._build_panes(), 1)
        self.setCentralWidget(central)
        self.statusBar().showMessage(f"Data folder: {self.data.root}")
        self._connect()
        self._start(watch_folders, first_run_dialog)

    def _start(self, watch_folders: bool, first_run_dialog: bool) -> None:
        """The chat service, the library's poll, the folder watcher and, on a first run, the settings."""
        self._set_service()
        if self.settings_problem:
            self.show_error(self.settings_problem)
        self.timer = QTimer(self)
        self.timer.setInterval(POLL_MS)
        self.timer.timeout.connect(self.poll)
        self.timer.start()
        self.poll()
        if watch_folders:
            self.tasks.run(self._start_watcher, None, lambda exc: log.warning("not following folders: %s", exc))
        if first_run_dialog and self.settings.model is None and not self.settings_problem:
            QTimer.singleShot(0, self.open_settings)

    def _build_top_bar(self) -> QHBoxLayout:
        """The title, the chat model in use, Open data folder and Settings…."""
        self.model_label = QLabel()
        self.model_label.setObjectName("modelLabel")
        self.settings_button = QPushButton("Settings…")
        self.settings_button.setObjectName("settings")
        self.settings_button.clicked.connect(self.open_settings)
        folder_button = QPushButton("Open data folder")
        folder_button.clicked.connect(self.open_data_folder)
        self.model_picker = QComboBox()
        self.model_picker.setObjectName("modelPicker")
        self.model_picker.setToolTip("The model a new conversation asks (LLaMA-VID or Qwen3-VL); a kept "
                                     "conversation goes on with the model it began with")
        self.model_picker.activated.connect(self._pick_model)
        top = hbox(heading(st.TITLE, scale=1.5))
        top.addSpacing(16)
        top.addWidget(self.model_picker)
        top.addWidget(self.model_label, 1)
        top.addWidget(folder_button)
        top.addWidget(self.settings_button)
        return top

    def _build_panes(self) -> QSplitter:
        """Library | player | chat, side by side."""
        self.library = LibraryPane()
        self.player = PlayerPane()
        self.chat = ChatPane()
        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(self.library)
        splitter.addWidget(self.player)
        splitter.addWidget(self.chat)
        splitter.setSizes([330, 560, 470])
        splitter.setChildrenCollapsible(False)
        return splitter

    def _connect(self) -> None:
        """What each pane asks for, and what the indexer and the download say, to the window."""
        self.library.movie_chosen.connect(self.open_movie)
        self.library.add_folder_clicked.connect(self.choose_folder)
        self.library.remove_folder_clicked.connect(self.confirm_remove_folder)
        self.library.reindex_clicked.connect(self.reindex_movie)
        self.library.pause_clicked.connect(self.pause_indexing)
        self.library.prepare_clicked.connect(self.prepare_movie)
        self.library.search_requested.connect(self.search_dialogue)
        self.library.result_chosen.connect(self.open_at)
        self.player.track_changed.connect(self._track_changed)
        self.player.media_error.connect(self.show_error)
        self.chat.seek_requested.connect(self.player.seek)
        self.chat.error.connect(self.show_error)
        self.chat.info.connect(self.show_info)
        self.chat.options = self._sampling
        self.chat.track = lambda: self.player.track_id() if self.player.movie is not None else None
        self.chat.drafts = dict(self.settings.drafts)
        self.indexer.failed.connect(lambda text: self.show_error(f"Indexing stopped: {text}"))
        self.indexer.changed.connect(self.poll)
        self.download.finished.connect(self._download_finished)
        self.convert.finished.connect(self._download_finished)

    # -- messages ----------------------------------------------------------------------------------
    @Slot(str)
    def show_error(self, text: str) -> None:
        self.message.show_message(text[0].upper() + text[1:] if text else text, "error")

    @Slot(str)
    def show_info(self, text: str) -> None:
        self.message.show_message(text[0].upper() + text[1:] if text else text, "info")

    def _failed(self, exc: BaseException) -> None:
        self.show_error(describe_error(exc))

    # -- the chat model ----------------------------------------------------------------------------
    def _set_service(self) -> None:
        old, s = self.service, self.settings
        if self.service_factory is not None:
            self.service = self.service_factory(s)
        else:
            self.service = ChatService(self.data.root, model=s.model, language=s.language, load=s.load_options())
        if old is not None:  # it finishes its question (if any) and saves its state off the GUI thread
            thread = threading.Thread(target=old.close, name="llamavid-close-service", daemon=True)
            thread.start()
            self._closing_services.append(thread)
        problem = None if s.model else "no chat model chosen"
        self.chat.set_service(self.service, problem)
        self.library.estimates.clear()  # sizes depend on the model
        if self.movie is not None:
            self._estimate(self.movie)
        self._show_model()
        if s.model:
            data, name = self.data, s.model
            self.tasks.run(lambda: resolve_model(name, data.root), None,
                           lambda exc: self.show_error(f"{describe_error(exc)} (open Settings to choose another)"))

    def _show_model(self) -> None:
        """The model label and the picker's list of installed chat models, the chosen one selected."""
        s = self.settings
        bits = "" if s.bits is None else f", {s.bits} bit"
        self.model_label.setText(f"Model: {s.model} ({s.device}{bits}, {s.backend})" if s.model else
                                 "No chat model chosen yet: open Settings")
        names = [m.name for m in self.service.models()] if self.service is not None else []
        if s.model and s.model not in names:
            names.insert(0, s.model)  # a folder given by path, or a model removed since
        self.model_picker.blockSignals(True)
        self.model_picker.clear()
        for name in names:
            self.model_picker.addItem(model_label(name, self.service.family(name) if self.service else ""), name)
        self.model_picker.setCurrentIndex(max(0, self.model_picker.findData(s.model)))
        self.model_picker.setVisible(bool(names))
        self.model_picker.blockSignals(False)

    @Slot(int)
    def _pick_model(self, index: int) -> None:
        """Another model for the next new conversations, kept as the chat model in the settings; it
        loads in the background, after the questions already waiting."""
        name = self.model_picker.itemData(index)
        if not name or name == self.settings.model or self.service is None:
            return
        try:
            self.service.select_model(name)
            self.settings = replace(self.settings, model=name)
            save_settings(self.data, self.settings)
        except (KeyError, OSError, UserError) as exc:
            self.show_error(describe_error(exc))
        self.library.estimates.clear()  # sizes depend on the model
        if self.movie is not None:
            self._estimate(self.movie)
        self._show_model()
        if not self.chat.busy:  # which films it can ask about follows the model
            self.chat.set_service(self.service, None)
        self.show_info(f"new conversations ask {name}")

    def _sampling(self) -> SamplingOptions | None:
        chosen = self.settings.sampling_options()
        return SamplingOptions(**chosen) if chosen else None

    def open_settings(self) -> None:
        """The settings dialog (non-modal: the library keeps updating behind it)."""
        if self.setup_dialog is not None and self.setup_dialog.isVisible():
            self.setup_dialog.raise_()
            return
        if self.setup_dialog is not None:
            self.setup_dialog.deleteLater()
        self.setup_dialog = SetupDialog(self.data, self.settings, self.download, self, convert=self.convert)
        self.setup_dialog.saved.connect(self.apply_settings)
        self.setup_dialog.show()

    @Slot(object)
    def apply_settings(self, settings: Settings) -> None:
        changed = (settings.model, settings.load_options(), settings.language) != (
            self.settings.model, self.settings.load_options(), self.settings.language)
        self.settings = replace(settings, drafts=self.settings.drafts, last_movie=self.settings.last_movie)
        self.settings_problem = None
        self.indexer.unblock()
        if changed:
            self._set_service()
        self.show_info(f"settings saved: {settings.model} on {settings.device}")

    @Slot(str, str, str)
    def _download_finished(self, name: str, outcome: str, message: str) -> None:
        if outcome == "error":
            self.show_error(message)
        elif self.setup_dialog is None or not self.setup_dialog.isVisible():
            self.show_info(message)

    def open_data_folder(self) -> None:
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.data.root)))

    # -- the library -------------------------------------------------------------------------------
    @Slot()
    def poll(self) -> None:
        if self._closed or self.poll_tasks.pending:
            return
        self.poll_tasks.run(self.reader.snapshot, self._show_snapshot, self._poll_failed)

    def _poll_failed(self, exc: BaseException) -> None:
        self.statusBar().showMessage(f"Cannot read the library: {describe_error(exc)}")

    def _show_snapshot(self, snap: LibrarySnapshot) -> None:
        if self._closed:
            return
        self.snapshot = snap
        self._maybe_start_indexer(snap)
        self.library.show_snapshot(snap, self._indexer_note(snap))
        for movie in snap.movies:
            self._maybe_thumbnail(movie)
        if self.movie is not None:
            fresh = snap.movie(self.movie.id)
            if fresh is None:
                self.movie = None
                self.player.unload("The film left the library")
                self.chat.set_movie(None)
            else:
                before = self.movie
                self.movie = fresh
                self.chat.update_movie(fresh)
                if fresh.subtitle_tracks != before.subtitle_tracks:  # indexing read (more) subtitles
                    chosen = self.player.track_id()
                    if chosen is None and self._default_track(before) is None:
                        chosen = self._default_track(fresh)
                    self.player.set_tracks(fresh, chosen)
                    self._load_subtitles(fresh, self.player.track_id())
        if not self._restored:
            self._restored = True
            last = self.settings.last_movie
            if last is not None and snap.movie(last) is not None:
                self.library.select_movie(last)

    def _indexer_state(self, snap: LibrarySnapshot) -> str:
        running = [m for m in snap.movies if m.state == "running"]
        waiting = snap.waiting
        if self.indexer.running() and running:
            text = index_state(running[0], snap.paused).text
            rest = waiting - 1
            return f"Indexing {Path(running[0].rel_path).name}: {text.removeprefix('indexing, ')}" + (
                f" ({rest} more waiting)" if rest > 0 else "")
        if snap.paused:
            return f"Indexing paused ({waiting} film{'s' if waiting != 1 else ''} waiting)" if waiting else \
                "Indexing paused"
        if snap.lock_holder is not None and not self.indexer.running():
            return f"Another process (pid {snap.lock_holder}) is indexing this library"
        if self.indexer.blocked and waiting:
            return f"Indexing stopped: {self.indexer.blocked}"
        if self.indexer.running():
            return "Indexing: starting…" if waiting else "Indexing: finishing…"
        if waiting:
            return f"{waiting} film{'s' if waiting != 1 else ''} waiting to be indexed"
        return "All films indexed" if snap.movies else "No films in the library yet"

    def _indexer_note(self, snap: LibrarySnapshot) -> str:
        """What the indexer does, then the films still to index in order and how long they take."""
        note = self._indexer_state(snap)
        if snap.estimate is not None and snap.estimate.films:
            note += "\n" + snap.estimate.describe()
        return note

    def _maybe_start_indexer(self, snap: LibrarySnapshot) -> None:
        if not snap.paused and snap.waiting and self.indexer.may_start() and snap.lock_holder is None \
                and not self._closed:
            self.indexer.start(self.settings.device, self.settings.index_idle)

    def _maybe_thumbnail(self, movie: Movie) -> None:
        if movie.frames <= 0:
            return
        want = (movie.features_complete, movie.frames if not movie.features_complete else 0)
        have = self._thumbs.get(movie.id)
        if have is not None and (have[0] or not movie.features_complete):
            return  # one picture while indexing, one more once complete
        self._thumbs[movie.id] = want
        data, movie_id, path = self.data, movie.id, movie.path

        def work() -> str | None:
            with LibraryStore.open(data.database) as store:
                times = store.frame_times(movie_id)
            out = make_thumbnail(data.root, movie_id, path, times)
            with LibraryStore.open(data.database) as store:
                if store.movie_view(movie_id) is None:  # removed meanwhile: its folder was forgotten
                    remove_thumbnails(data.root, movie_id)
                    return None
            return str(out) if out else None

        def failed(exc: BaseException) -> None:
            log.warning("no thumbnail for %s: %s", path, describe_error(exc))

        self.tasks.run(work, lambda p: self.library.set_thumbnail(movie_id, p) if p else None, failed)

    def _start_watcher(self) -> None:
        watcher = Watcher(self.data)
        watcher.start()
        if self._closed:
            watcher.stop()
        else:
            self.watcher = watcher

    def choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "A folder of films")
        if folder:
            self.add_folder(folder)

    def add_folder(self, folder: str) -> None:
        """Add a library folder; its films are scanned (worker thread) and queued for indexing."""
        self.indexer.unblock()
        self.show_info(f"adding {folder}…")
        self.tasks.run(lambda: add_folder(self.data, folder), self._library_changed, self._failed)

    def confirm_remove_folder(self, folder_id: int) -> None:
        path = next((f["path"] for f in (self.snapshot.folders if self.snapshot else []) if f["id"] == folder_id), "")
        answer = QMessageBox.question(self, "Remove folder",
                                      f"Remove {path} from the library? Its films' indexes are deleted (the video "
                                      f"files are not touched); conversations are kept.")
        if answer == QMessageBox.StandardButton.Yes:
            self.remove_folder(folder_id)

    def remove_folder(self, folder_id: int) -> None:
        self.tasks.run(lambda: remove_folder(self.data, folder_id), self._library_changed, self._failed)

    def reindex_movie(self, movie_id: int) -> None:
        self.indexer.unblock()
        self._thumbs.pop(movie_id, None)
        self.tasks.run(lambda: reindex(self.data, movie_id), self._library_changed, self._failed)

    def pause_indexing(self, paused: bool) -> None:
        """Pause (the indexer stops after its current chunk and exits) or resume the queue."""
        if not paused:
            self.indexer.unblock()
        self.tasks.run(lambda: set_paused(self.data, paused),
                       lambda _: self._library_changed("indexing paused" if paused else "indexing resumed"),
                       self._failed)

    def prepare_movie(self, movie_id: int, wanted: bool) -> None:
        """Prepare a film for fast answers with the chat model this window holds, in the chat
        service's queue (no second copy of the model: the indexer leaves it to the holder), or
        forget the film's prepared state."""
        service = self.service
        if service is None or not self.settings.model:
            self.show_error("Preparing a film needs a chat model: open Settings to choose one")
            return
        self.indexer.unblock()
        self.tasks.run(lambda: service.set_prepared(movie_id, wanted), self._library_changed, self._failed)

    def _estimate(self, movie: Movie) -> None:
        """The size the film's prepared state would take, for the Prepare button (worker thread)."""
        service, movie_id = self.service, movie.id
        if service is None:
            return

        def failed(exc: BaseException) -> None:
            log.info("no prepared-size estimate for %s: %s", movie.rel_path, describe_error(exc))

        self.tasks.run(lambda: (service.prepare_estimate(movie), service.prepare_seconds(movie)),
                       lambda cost: self.library.set_estimate(movie_id, *cost), failed)

    def _library_changed(self, text: str) -> None:
        self.show_info(text)
        self.poll()

    # -- a film ------------------------------------------------------------------------------------
    def _default_track(self, movie: Movie) -> int | None:
        track = choose_track(movie, self.service.language if self.service else self.settings.language)
        return track["id"] if track else None

    @Slot(int)
    def open_movie(self, movie_id: int) -> None:
        movie = self.snapshot.movie(movie_id) if self.snapshot and movie_id >= 0 else None
        if movie is None:
            return
        self.movie = movie
        self.settings.last_movie = movie.id
        track = self._default_track(movie)
        self.player.load(movie, track)
        self._load_subtitles(movie, track)
        self.chat.set_movie(movie)
        if movie.id not in self.library.estimates:
            self._estimate(movie)
        if not movie.features_complete:  # a film a person opens is indexed next
            data = self.data
            self.tasks.run(lambda: open_film(data, movie.id), lambda _moved: self.poll(), self._failed)

    @Slot(str)
    def search_dialogue(self, query: str) -> None:
        """Find ``query`` in the library's subtitles and scenes (a worker thread); the library pane lists them."""
        if not query:
            self.library.show_results("", [])
            return
        data = self.data

        def work():
            with LibraryStore.open(data.database) as store:
                return search_library(store, query, "all", limit=SEARCH_LIMIT, data_root=data.root)

        self.tasks.run(work, lambda found: self.library.show_results(query, found), self._failed)

    @Slot(int, float)
    def open_at(self, movie_id: int, seconds: float) -> None:
        """A search result: its film opened (chosen in the library) and the player at the line or scene."""
        if self.movie is None or self.movie.id != movie_id:
            if not self.library.select_movie(movie_id):
                self.show_error("That film is no longer in the library.")
                return
        self.player.seek(seconds)

    def _load_subtitles(self, movie: Movie, track_id: int | None) -> None:
        data = self.data

        def work():
            if track_id is None:
                return []
            with LibraryStore.open(data.database) as store:
                return subtitles(store, movie, track_id=track_id)

        def loaded(cues) -> None:
            if self.player.movie is not None and self.player.movie.id == movie.id \
                    and self.player.track_id() == track_id:
                self.player.set_cues(cues)

        self.tasks.run(work, loaded, self._failed)

    @Slot(object)
    def _track_changed(self, track_id: int | None) -> None:
        if self.player.movie is not None:
            self._load_subtitles(self.player.movie, track_id)

    def frame_times(self, movie: Movie) -> list[float]:
        """The film's stored frame times (for tests and tools; reads the database here)."""
        with LibraryStore.open(self.data.database) as store:
            return frame_times(store, movie).tolist()

    # -- closing -----------------------------------------------------------------------------------
    def closeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        if not self._closed:
            self.shutdown()
        super().closeEvent(event)

    def shutdown(self) -> None:
        """Stop everything this window started, keeping all work (see the module docstring)."""
        self._closed = True
        self.timer.stop()
        self.chat.stop_for_close()
        if self.setup_dialog is not None:
            self.setup_dialog.close()
        if self.indexer.proc is not None and self.indexer.running():
            self.indexer.proc.terminate()  # both children stop at once; then wait for each
        self.download.cancel()
        self.convert.cancel()
        self.download.stop()
        self.convert.stop()
        self.indexer.stop()
        if self.watcher is not None:
            self.watcher.stop()
        if self.service is not None:
            self.service.close()
        for thread in self._closing_services:
            thread.join(timeout=600)
        self.chat.finish_close()
        self.poll_tasks.close()
        self.tasks.close()
        self.reader.close()
        self.player.stop()
        self._save_session()

    def _save_session(self) -> None:
        """Drafts and the open film, written into the settings file as it is now (another program
        may have changed other keys); a damaged file is left alone."""
        if self.settings_problem:
            return
        try:
            current = load_settings(self.data)
            save_settings(self.data, replace(current, drafts=dict(self.chat.drafts),
                                             last_movie=self.movie.id if self.movie else current.last_movie))
        except (UserError, OSError) as exc:
            log.warning("the window's state was not saved: %s", exc)


def _quit_on_signals(app: QApplication, window: MainWindow) -> QTimer:
    """Ctrl-C and SIGTERM close the window like its close button (children stopped, work kept).
    Python runs signal handlers between bytecodes only, so a timer gives it a chance."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: window.close())
    timer = QTimer()
    timer.start(300)
    timer.timeout.connect(lambda: None)
    return timer


def run_desktop(data_dir: Path) -> int:
    """Show the window and run Qt's event loop until it is closed; returns Qt's exit code."""
    app = QApplication.instance() or QApplication([st.TITLE])
    app.setApplicationName(st.TITLE)
    window = MainWindow(data_dir)
    window.show()
    keep = _quit_on_signals(app, window)
    code = int(app.exec())
    del keep
    return code
