"""The library pane: folders, a row per film (thumbnail, title, duration, index state and progress,
subtitle sources, whether it is prepared for fast answers), the indexing controls, and "Search the
dialogue and scenes" above the films: a line found in any film's subtitles (film · time · line), or a
scene that looks like the words, which opens that film there when picked. It only shows what it is
given (the window searches): the window reads the library on a worker thread
(:mod:`app.desktop.indexing`) and hands each snapshot in, and the size a film's prepared state would
take (:meth:`LibraryPane.set_estimate`), which the Prepare button and menu show before the click.
"""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QPoint, QSize, Qt, Signal, Slot
from PySide6.QtGui import QColor, QFont, QPixmap
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMenu,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.desktop.common import hbox, heading
from app.desktop.indexing import LibrarySnapshot
from app.film_words import (
    FORGET_PREPARED,
    NO_LINE,
    clock,
    index_state,
    prepare_action,
    prepared_label,
    search_label,
    subtitle_summary,
)
from indexer.library import Movie
from indexer.scenes_search import SceneMatch
from indexer.search import CueMatch

__all__ = ["FORGET_PREPARED", "FilmRow", "LibraryPane"]

THUMB = QSize(128, 72)
TONES = {"good": "#2a7a2a", "bad": "#a40000"}  # IndexState.tone -> the colour of a film's state line


class FilmRow(QWidget):
    """One film in the list."""

    def __init__(self, movie: Movie, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.movie = movie
        self.thumbnail = QLabel()
        self.thumbnail.setObjectName("thumbnail")
        self.thumbnail.setFixedSize(THUMB)
        self.thumbnail.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.thumbnail.setStyleSheet("background: #222; color: #999;")
        self.thumbnail.setText("🎬")
        self.thumbnail_file: str | None = None
        self.title = QLabel()
        font = QFont(self.title.font())
        font.setBold(True)
        self.title.setFont(font)
        self.details = QLabel()
        self.details.setObjectName("details")
        self.details.setWordWrap(True)
        self.state = QLabel()
        self.state.setObjectName("state")
        self.state.setWordWrap(True)
        self.prepared = QLabel()
        self.prepared.setObjectName("prepared")
        self.prepared.setStyleSheet("color: #1f5f99;")
        self.prepared.setToolTip("A prepared film was read once ahead: a fast-answers question about it takes "
                                 "seconds instead of minutes")
        self.progress = QProgressBar()
        self.progress.setObjectName("progress")
        self.progress.setMaximumHeight(10)
        self.progress.setTextVisible(False)
        text = QVBoxLayout()
        text.setSpacing(1)
        text.addWidget(self.title)
        text.addWidget(self.details)
        text.addWidget(self.state)
        text.addWidget(self.prepared)
        text.addWidget(self.progress)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.thumbnail)
        layout.addLayout(text, 1)
        self.update_movie(movie, False)

    def update_movie(self, movie: Movie, paused: bool) -> None:
        self.movie = movie
        self.title.setText(Path(movie.rel_path).name)
        self.title.setToolTip(movie.path)
        self.details.setText(f"{clock(movie.duration)} · {subtitle_summary(movie)}")
        state = index_state(movie, paused)
        self.state.setText(state.text)
        self.state.setStyleSheet(f"color: {TONES.get(state.tone, '#555555')};")
        self.prepared.setText(prepared_label(movie))
        self.prepared.setVisible(bool(movie.prepared_bytes or movie.prepare_wanted))
        done, total = state.done, state.total
        if total > 0:
            self.progress.setRange(0, total)
            self.progress.setValue(min(done, total))
            self.progress.show()
        else:
            self.progress.hide()

    def set_thumbnail(self, path: str) -> None:
        pixmap = QPixmap(path)
        if pixmap.isNull():
            return
        self.thumbnail_file = path
        self.thumbnail.setText("")
        self.thumbnail.setPixmap(pixmap.scaled(self.thumbnail.size(), Qt.AspectRatioMode.KeepAspectRatio,
                                               Qt.TransformationMode.SmoothTransformation))

    def has_thumbnail(self) -> bool:
        pixmap = self.thumbnail.pixmap()
        return pixmap is not None and not pixmap.isNull()


class LibraryPane(QWidget):
    """Folders and films; its buttons emit what the person asked for, the window does it."""

    movie_chosen = Signal(int)
    add_folder_clicked = Signal()
    remove_folder_clicked = Signal(int)  # library folder id
    reindex_clicked = Signal(int)  # movie id
    pause_clicked = Signal(bool)  # True: pause
    prepare_clicked = Signal(int, bool)  # movie id; True: prepare for fast answers, False: forget its state
    search_requested = Signal(str)  # the words to find in the library's subtitles
    result_chosen = Signal(int, float)  # a search result picked: movie id, the line's start (seconds)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.rows: dict[int, FilmRow] = {}
        self.items: dict[int, QListWidgetItem] = {}
        self.thumbnails: dict[int, str] = {}  # movie id -> cached picture, kept for rebuilt rows
        self.estimates: dict[int, int | None] = {}  # movie id -> bytes its prepared state would take
        self.durations: dict[int, float | None] = {}  # movie id -> seconds preparing it takes here (once measured)
        self.snapshot: LibrarySnapshot | None = None
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(heading("Library"))
        self._build_folders(layout)
        self._build_search(layout)
        self._build_films(layout)
        self._build_indexing(layout)
        self._refresh_buttons()

    def _build_folders(self, layout: QVBoxLayout) -> None:
        """The library folders, Add folder… and Remove folder."""
        self.folders = QListWidget()
        self.folders.setObjectName("folders")
        self.folders.setMaximumHeight(72)
        self.folders.setToolTip("Library folders: their films are indexed in the background")
        self.add_button = QPushButton("Add folder…")
        self.add_button.clicked.connect(self.add_folder_clicked)
        self.remove_button = QPushButton("Remove folder")
        self.remove_button.setToolTip("Forget the selected folder (its films leave the library; files are kept)")
        self.remove_button.clicked.connect(self._remove_clicked)
        layout.addWidget(self.folders)
        layout.addLayout(hbox(self.add_button, self.remove_button, None))

    def _build_search(self, layout: QVBoxLayout) -> None:
        """Search the dialogue (Enter searches), what it found, and its results (hidden while none)."""
        self.search = QLineEdit()
        self.search.setObjectName("searchDialogue")
        self.search.setPlaceholderText("Search the dialogue and scenes…")
        self.search.setToolTip("A line you remember, found in the subtitles of every film, or what you saw "
                               "(where the films have scene vectors); pick a result to watch it")
        self.search.setClearButtonEnabled(True)
        self.search.returnPressed.connect(lambda: self.search_requested.emit(self.search.text().strip()))
        self.search_note = QLabel()
        self.search_note.setObjectName("searchNote")
        self.search_note.setStyleSheet("color: #555555;")
        self.search_note.hide()
        self.results = QListWidget()
        self.results.setObjectName("searchResults")
        self.results.setMaximumHeight(140)
        self.results.setWordWrap(True)
        self.results.itemClicked.connect(self._result_picked)
        self.results.itemActivated.connect(self._result_picked)
        self.results.hide()
        layout.addWidget(self.search)
        layout.addWidget(self.search_note)
        layout.addWidget(self.results)

    def show_results(self, query: str, found: list[CueMatch | SceneMatch]) -> None:
        """The search's results, best first: "film · 0:00:40 · the line" or "[scene...]" (none: it says so)."""
        self.results.clear()
        for m in found:
            item = QListWidgetItem(search_label(m))
            item.setToolTip(m.rel_path)
            item.setData(Qt.ItemDataRole.UserRole, (m.movie_id, m.start))
            self.results.addItem(item)
        self.results.setVisible(bool(found))
        self.search_note.setText("" if found or not query else NO_LINE)
        self.search_note.setVisible(bool(query) and not found)

    @Slot(QListWidgetItem)
    def _result_picked(self, item: QListWidgetItem) -> None:
        movie_id, start = item.data(Qt.ItemDataRole.UserRole)
        self.result_chosen.emit(movie_id, start)

    def _build_films(self, layout: QVBoxLayout) -> None:
        """The list of films (a row each, a context menu), and what it says while empty."""
        self.films = QListWidget()
        self.films.setObjectName("films")
        self.films.setSpacing(2)
        self.films.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.films.setResizeMode(QListWidget.ResizeMode.Adjust)
        self.films.currentItemChanged.connect(self._film_changed)
        self.films.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.films.customContextMenuRequested.connect(self._show_film_menu)
        self.empty = QLabel("No films yet. Add a folder of films: they are indexed in the background, "
                            "and you can watch and ask about each one once it is ready.")
        self.empty.setWordWrap(True)
        self.empty.setStyleSheet("color: #555555;")
        layout.addWidget(self.films, 1)
        layout.addWidget(self.empty)

    def _build_indexing(self, layout: QVBoxLayout) -> None:
        """The indexer's status line, Pause / Re-index film, and Prepare for fast answers."""
        self.status = QLabel("Indexer idle")
        self.status.setObjectName("indexerStatus")
        self.status.setWordWrap(True)
        self.pause_button = QPushButton("Pause indexing")
        self.pause_button.setObjectName("pauseIndexing")
        self.pause_button.clicked.connect(self._pause_clicked)
        self.reindex_button = QPushButton("Re-index film")
        self.reindex_button.setToolTip("Index the selected film again")
        self.reindex_button.clicked.connect(self._reindex_clicked)
        self.prepare_button = QPushButton("Prepare for fast answers")
        self.prepare_button.setObjectName("prepareFilm")
        self.prepare_button.setToolTip("Read the selected film once ahead, so a fast-answers question about it takes "
                                       "seconds instead of minutes; it takes the disk space shown")
        self.prepare_button.clicked.connect(self._prepare_clicked)
        layout.addWidget(self.status)
        layout.addLayout(hbox(self.pause_button, self.reindex_button, None))
        layout.addLayout(hbox(self.prepare_button, None))

    # -- showing a snapshot ------------------------------------------------------------------------
    def show_snapshot(self, snap: LibrarySnapshot, indexer_note: str) -> None:
        self.snapshot = snap
        self._show_folders(snap.folders)
        wanted = [m.id for m in snap.movies]
        if [self.films.item(i).data(Qt.ItemDataRole.UserRole) for i in range(self.films.count())] != wanted:
            current = self.current_movie_id()
            self.films.blockSignals(True)
            self.films.clear()
            self.rows, self.items = {}, {}
            for movie in snap.movies:
                item = QListWidgetItem()
                item.setData(Qt.ItemDataRole.UserRole, movie.id)
                row = FilmRow(movie)
                self.films.addItem(item)
                self.films.setItemWidget(item, row)
                self.rows[movie.id], self.items[movie.id] = row, item
                if movie.id in self.thumbnails:
                    row.set_thumbnail(self.thumbnails[movie.id])
            self.films.blockSignals(False)
            if current is not None and current in self.rows:
                self.select_movie(current, notify=False)
            elif current is not None:
                self.films.setCurrentRow(-1)
                self.movie_chosen.emit(-1)
        for movie in snap.movies:
            row = self.rows[movie.id]
            row.update_movie(movie, snap.paused)
            if self.items[movie.id].sizeHint() != row.sizeHint():  # a progress bar came or went
                self.items[movie.id].setSizeHint(row.sizeHint())
        self.empty.setVisible(not snap.movies)
        self.status.setText(indexer_note)
        self.pause_button.setText("Resume indexing" if snap.paused else "Pause indexing")
        self._refresh_buttons()

    def _show_folders(self, folders: list[dict]) -> None:
        wanted = [(f["id"], f["path"]) for f in folders]
        have = [(self.folders.item(i).data(Qt.ItemDataRole.UserRole), self.folders.item(i).text())
                for i in range(self.folders.count())]
        if wanted == have:
            return
        current = self.folders.currentItem().data(Qt.ItemDataRole.UserRole) if self.folders.currentItem() else None
        self.folders.clear()
        for folder_id, path in wanted:
            item = QListWidgetItem(path)
            item.setData(Qt.ItemDataRole.UserRole, folder_id)
            if not Path(path).is_dir():
                item.setForeground(QColor("#a40000"))
                item.setToolTip("folder not found (unplugged drive?): its films are marked missing, nothing is lost")
            self.folders.addItem(item)
            if folder_id == current:
                self.folders.setCurrentItem(item)

    def set_estimate(self, movie_id: int, size: int | None, seconds: float | None = None) -> None:
        """The bytes the film's prepared state would take (None: unknown, no model chosen) and the
        seconds reading it ahead takes on this computer (None: the model not measured here yet)."""
        self.estimates[movie_id], self.durations[movie_id] = size, seconds
        self._refresh_buttons()

    def set_thumbnail(self, movie_id: int, path: str) -> None:
        self.thumbnails[movie_id] = path
        row = self.rows.get(movie_id)
        if row is not None:
            row.set_thumbnail(path)

    # -- selection ---------------------------------------------------------------------------------
    def current_movie_id(self) -> int | None:
        item = self.films.currentItem()
        return item.data(Qt.ItemDataRole.UserRole) if item is not None else None

    def select_movie(self, movie_id: int, notify: bool = True) -> bool:
        for i in range(self.films.count()):
            if self.films.item(i).data(Qt.ItemDataRole.UserRole) == movie_id:
                if not notify:
                    self.films.blockSignals(True)
                self.films.setCurrentRow(i)
                self.films.blockSignals(False)
                self._refresh_buttons()
                return True
        return False

    @Slot(QListWidgetItem, QListWidgetItem)
    def _film_changed(self, current: QListWidgetItem | None, previous: QListWidgetItem | None) -> None:
        self._refresh_buttons()
        if current is not None:
            self.movie_chosen.emit(current.data(Qt.ItemDataRole.UserRole))

    def row(self, movie_id: int) -> FilmRow | None:
        return self.rows.get(movie_id)

    def row_by_name(self, name: str) -> FilmRow | None:
        return next((r for r in self.rows.values() if Path(r.movie.rel_path).name == name), None)

    def _refresh_buttons(self) -> None:
        self.reindex_button.setEnabled(self.current_movie_id() is not None)
        self.remove_button.setEnabled(self.folders.count() > 0)
        movie = self._movie(self.current_movie_id())
        self.prepare_button.setEnabled(movie is not None)
        if movie is not None:
            cost = self.estimates.get(movie.id), self.durations.get(movie.id)
            self.prepare_button.setText(prepare_action(movie, *cost))

    def _movie(self, movie_id: int | None) -> Movie | None:
        row = self.rows.get(movie_id) if movie_id is not None else None
        return row.movie if row is not None else None

    def film_menu(self, movie_id: int) -> QMenu | None:
        """The film's context menu: prepare it for fast answers (its size shown) or forget its
        state, and re-index it."""
        movie = self._movie(movie_id)
        if movie is None:
            return None
        menu = QMenu(self)
        wanted = not (movie.prepared_bytes or movie.prepare_wanted)
        prepare = menu.addAction(prepare_action(movie, self.estimates.get(movie_id), self.durations.get(movie_id)))
        prepare.triggered.connect(lambda: self.prepare_clicked.emit(movie_id, wanted))
        menu.addAction("Re-index film").triggered.connect(lambda: self.reindex_clicked.emit(movie_id))
        return menu

    @Slot(QPoint)
    def _show_film_menu(self, pos: QPoint) -> None:
        item = self.films.itemAt(pos)
        if item is None:
            return
        self.films.setCurrentItem(item)
        menu = self.film_menu(item.data(Qt.ItemDataRole.UserRole))
        if menu is not None:
            menu.exec(self.films.viewport().mapToGlobal(pos))
            menu.deleteLater()

    def _prepare_clicked(self) -> None:
        movie = self._movie(self.current_movie_id())
        if movie is not None:
            self.prepare_clicked.emit(movie.id, not (movie.prepared_bytes or movie.prepare_wanted))

    def _remove_clicked(self) -> None:
        item = self.folders.currentItem() or (self.folders.item(0) if self.folders.count() == 1 else None)
        if item is not None:
            self.remove_folder_clicked.emit(item.data(Qt.ItemDataRole.UserRole))

    def _reindex_clicked(self) -> None:
        movie_id = self.current_movie_id()
        if movie_id is not None:
            self.reindex_clicked.emit(movie_id)

    def _pause_clicked(self) -> None:
        self.pause_clicked.emit(not (self.snapshot.paused if self.snapshot else False))
