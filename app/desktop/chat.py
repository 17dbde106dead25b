"""The chat beside the player: a film's conversations, streamed answers, progress, Stop, moments.

A question goes to :meth:`app.chat_service.ChatService.ask`, which returns at once; its stream of
events is read by a :class:`StreamReader` on a QThread of its own and forwarded to this pane with a
signal, so the window stays live while the film is read and the answer written. Every other call
on the service (listing, opening, renaming, deleting, exporting conversations) runs on the pane's
one service thread (:class:`~app.desktop.common.Tasks`), in order. Moments in an answer are buttons
that seek the player, with "Save clip…" in their context menu (:mod:`app.desktop.clips`); each
answer has a Copy button.

The service drops a stopped answer (the conversation is left as if the question had not been
asked), so a stopped or failed question goes back into the question box, and a question typed but
not sent is kept per conversation as a draft (saved with the settings when the window closes).

"Fast answers" (a checkbox above the transcript) starts a new conversation from the film's
prepared state (:mod:`indexer.prepare`): on by default for a prepared film, off otherwise, and
fixed once the conversation has begun (a kept conversation shows its own mode).

"Ask about a picture or clip…" turns the pane to a picture or a short video chosen on this computer:
its questions go to :meth:`~app.chat_service.ChatService.ask_about` (stateless: each is sent with the
earlier ones about the same file, and nothing is kept), stream into the transcript the same way, and
Stop cancels them; "Back to the film" (or opening another film) brings the film's conversation back.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Qt, QThread, Signal, Slot
from PySide6.QtGui import QAction, QGuiApplication
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QLineEdit,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from app.chat_service import AskStream, ChatEvent, ChatService, fast_by_default
from app.conversations import Conversation
from app.desktop.clips import ClipSaver
from app.desktop.common import FlowLayout, Tasks, describe_error, hbox, heading
from app.film_words import queue_position, reading_note, short_clock
from indexer.library import Movie, askable
from indexer.scan import VIDEO_EXTENSIONS, is_video

__all__ = ["ChatPane", "StreamReader", "TurnView"]

STOPPED_NOTE = "Stopped. This answer was not kept; your question is back in the box below."
PICTURES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")
ABOUT_FILTER = (f"Pictures and clips ({' '.join('*' + e for e in (*PICTURES, *sorted(VIDEO_EXTENSIONS)))});;"
                "All files (*)")
FAST_TOOLTIP = ("Fast answers start from the film read once ahead, so a question takes seconds instead of "
                "minutes. Untick for exact mode, which reads the whole film with your question.")


class StreamReader(QObject):
    """Reads one question's events on its own thread and forwards each with :attr:`event`."""

    event = Signal(object)

    def __init__(self, stream: AskStream) -> None:
        super().__init__()
        self.stream = stream

    @Slot()
    def run(self) -> None:
        try:
            for event in self.stream:
                self.event.emit(event)
        except BaseException as exc:  # noqa: BLE001 - the pane shows it like any error event
            self.event.emit(ChatEvent("error", text=describe_error(exc), kind="internal"))
        finally:
            self.thread().quit()


class TurnView(QFrame):
    """One question and its answer, the moments it rests on, and a Copy button."""

    seek = Signal(float)
    save_clip = Signal(float, float)  # a moment's start and end: its context menu's Save clip…

    def __init__(self, question: str, answer: str = "", moments: list[dict] | None = None,
                 parent: QWidget | None = None, about: str | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("turn")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        asker = f"You (about <i>{_escape(about)}</i>)" if about else "You"
        self.question = QLabel(f"<b>{asker}:</b> {_escape(question)}")
        self.question.setWordWrap(True)
        self.question.setTextFormat(Qt.TextFormat.RichText)
        self.answer = QLabel(answer)
        self.answer.setObjectName("answer")
        self.answer.setWordWrap(True)
        self.answer.setTextFormat(Qt.TextFormat.PlainText)
        self.answer.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.moments = QWidget()
        self.moments_row = FlowLayout(self.moments)
        self.moment_buttons: list[QPushButton] = []
        self.note = QLabel()
        self.note.setObjectName("note")
        self.note.setWordWrap(True)
        self.note.hide()
        self.copy_button = QPushButton("Copy")
        self.copy_button.setToolTip("Copy the answer")
        self.copy_button.clicked.connect(self.copy)
        footer = QHBoxLayout()
        footer.addWidget(self.note, 1)
        footer.addStretch(0)
        footer.addWidget(self.copy_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.question)
        layout.addWidget(self.answer)
        layout.addWidget(self.moments)
        layout.addLayout(footer)
        self.set_moments(moments or [])

    def append(self, text: str) -> None:
        self.answer.setText(self.answer.text() + text)

    def text(self) -> str:
        return self.answer.text()

    def set_moments(self, moments: list[dict]) -> None:
        self.moment_buttons = []
        while (item := self.moments_row.takeAt(0)) is not None:
            if item.widget() is not None:
                item.widget().deleteLater()
        if moments:
            self.moments_row.addWidget(QLabel("Moments:"))
        for m in moments:
            start, end = float(m["start"]), float(m["end"])
            button = QPushButton(f"{short_clock(start)}–{short_clock(end)}")
            button.setObjectName("moment")
            button.setToolTip("Show this moment in the player (right-click: save it as a clip)\n"
                              + "\n".join(m.get("why") or []))
            button.setCursor(Qt.CursorShape.PointingHandCursor)
            button.clicked.connect(lambda _=False, t=start: self.seek.emit(t))
            save = QAction("Save clip…", button)
            save.triggered.connect(lambda _=False, a=start, b=end: self.save_clip.emit(a, b))
            button.addAction(save)
            button.setContextMenuPolicy(Qt.ContextMenuPolicy.ActionsContextMenu)
            button.setProperty("start", start)
            self.moments_row.addWidget(button)
            self.moment_buttons.append(button)
        self.moments.setVisible(bool(moments))

    def set_note(self, text: str, kind: str = "info") -> None:
        colour = {"error": "#a40000", "info": "#555555"}.get(kind, "#555555")
        self.note.setStyleSheet(f"color: {colour};")
        self.note.setText(text)
        self.note.setVisible(bool(text))

    def copy(self) -> None:
        QGuiApplication.clipboard().setText(self.text())


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class ChatPane(QWidget):
    """Conversations about the open film and the question box (see the module docstring)."""

    seek_requested = Signal(float)
    error = Signal(str)
    info = Signal(str)
    busy_changed = Signal(bool)
    progress_shown = Signal(str)  # each line the progress label shows

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.service: ChatService | None = None
        self.tasks = Tasks(1, self)
        self.clips = ClipSaver(self)
        self.clips.saved.connect(self.info)
        self.movie: Movie | None = None
        self.conversation_id: int | None = None
        self.conversation_title = ""
        self.options: Callable[[], Any] = lambda: None  # SamplingOptions for the next question
        self.track: Callable[[], int | None] = lambda: None  # the subtitle track a new conversation takes
        self.drafts: dict[str, str] = {}
        self.model_problem: str | None = "no chat model chosen"
        self.turns: list[TurnView] = []
        self.live: TurnView | None = None
        self.stream: AskStream | None = None
        self.reader: StreamReader | None = None
        self.reader_thread: QThread | None = None
        self.asked_at = 0.0
        self._stop_asked = False
        self._pending_question = ""
        self._list_generation = 0
        self._fast_chosen = False  # the person ticked or unticked Fast answers for this new conversation
        self.about: Path | None = None  # the picture or clip the questions are about, instead of the film
        self.about_turns: list[tuple[str, str]] = []  # (question, answer) about it so far (not kept)
        self._live_about = False  # the question on its way is about the picture or clip

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(heading("Chat"))
        self._build_conversation_bar(layout)
        self._build_transcript(layout)
        self._build_question_box(layout)
        self._refresh_controls()

    def _build_conversation_bar(self, layout: QVBoxLayout) -> None:
        """The film's conversations, New / Rename / Delete / Export, Fast answers and the notice line."""
        self.conversations = QComboBox()
        self.conversations.setObjectName("conversations")
        self.conversations.setToolTip("This film's conversations, newest first")
        self.conversations.activated.connect(self._conversation_chosen)
        self.new_button = QPushButton("New")
        self.new_button.setToolTip("Start a new conversation about this film")
        self.new_button.clicked.connect(self.new_conversation)
        self.rename_button = QPushButton("Rename…")
        self.rename_button.clicked.connect(self.rename_conversation)
        self.delete_button = QPushButton("Delete")
        self.delete_button.clicked.connect(self.delete_conversation)
        self.export_button = QPushButton("Export…")
        self.export_button.setToolTip("Save the conversation as a Markdown file")
        self.export_button.clicked.connect(self.export_conversation)
        self.fast = QCheckBox("Fast answers")
        self.fast.setObjectName("fastAnswers")
        self.fast.setToolTip(FAST_TOOLTIP)
        self.fast.clicked.connect(self._fast_clicked)
        self.notice = QLabel()
        self.notice.setObjectName("chatNotice")
        self.notice.setWordWrap(True)
        self.notice.setStyleSheet("color: #555555;")
        layout.addWidget(self.conversations)
        layout.addLayout(hbox(self.new_button, self.rename_button, self.delete_button, self.export_button, None))
        layout.addLayout(hbox(self.fast, None))
        layout.addWidget(self.notice)

    def _build_transcript(self, layout: QVBoxLayout) -> None:
        """The questions and answers, scrolled to the newest, and the progress of the one on its way."""
        self.transcript = QWidget()
        self.transcript_layout = QVBoxLayout(self.transcript)
        self.transcript_layout.addStretch(1)
        self.scroll = QScrollArea()
        self.scroll.setWidgetResizable(True)
        self.scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.scroll.setWidget(self.transcript)
        self.scroll.verticalScrollBar().rangeChanged.connect(self._scroll_to_end)
        self.progress_label = QLabel()
        self.progress_label.setObjectName("progressLabel")
        self.progress_bar = QProgressBar()
        self.progress_bar.setTextVisible(False)
        self.progress_bar.setMaximumHeight(8)
        self.progress_label.hide()
        self.progress_bar.hide()
        layout.addWidget(self.scroll, 1)
        layout.addWidget(self.progress_label)
        layout.addWidget(self.progress_bar)

    def _build_question_box(self, layout: QVBoxLayout) -> None:
        """Ask about a picture or clip… (and the way back to the film), the question box, Ask and Stop."""
        self.about_button = QPushButton("Ask about a picture or clip…")
        self.about_button.setObjectName("askAbout")
        self.about_button.setToolTip("Ask about a picture or a short video on this computer instead of the film "
                                     "(the questions and answers are not kept)")
        self.about_button.clicked.connect(self.choose_about)
        self.about_label = QLabel()
        self.about_label.setObjectName("aboutFile")
        self.about_label.setWordWrap(True)
        self.about_label.hide()
        self.about_done = QPushButton("Back to the film")
        self.about_done.setObjectName("aboutDone")
        self.about_done.clicked.connect(self.leave_about)
        self.about_done.hide()
        layout.addLayout(hbox(self.about_button, (self.about_label, 1), self.about_done))
        self.question = QLineEdit()
        self.question.setObjectName("question")
        self.question.setPlaceholderText("Ask about this film…")
        self.question.returnPressed.connect(self.ask)
        self.ask_button = QPushButton("Ask")
        self.ask_button.setDefault(True)
        self.ask_button.clicked.connect(self.ask)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("Stop this answer")
        self.stop_button.clicked.connect(self.stop)
        self.stop_button.setEnabled(False)
        layout.addLayout(hbox((self.question, 1), self.ask_button, self.stop_button))

    # -- state -------------------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        """A question is on its way (queued, being read, being answered)."""
        return self.live is not None

    def set_service(self, service: ChatService | None, model_problem: str | None) -> None:
        """The service questions go to; ``model_problem`` says why none can be asked (or None)."""
        self.service, self.model_problem = service, model_problem
        if self.movie is not None:
            self.reload()
        self._refresh_controls()

    def set_movie(self, movie: Movie | None) -> None:
        """Show a film's conversations (the newest opens); a question on its way is stopped."""
        if movie is not None and self.movie is not None and movie.id == self.movie.id:
            self.update_movie(movie)
            return
        if self.busy:
            self.stop()
        if self.about is not None:
            self._drop_about()  # its questions were not kept; the film's draft was saved on the way in
        else:
            self._save_draft()
        self.movie = movie
        self._show_conversation(None, [])
        self.reload(open_newest=True)

    def update_movie(self, movie: Movie) -> None:
        """The film's row changed (indexing went on, it was prepared): only what may be asked changes."""
        if self.movie is not None and movie.id == self.movie.id:
            self.movie = movie
            self._follow_fast_default()
            self._refresh_controls()

    def _follow_fast_default(self) -> None:
        """A new conversation's checkbox follows the film (prepared or not) until the person clicks it."""
        if self.conversation_id is None and not self._fast_chosen and not self.busy:
            self.fast.setChecked(fast_by_default(self.movie))

    @Slot(bool)
    def _fast_clicked(self, checked: bool) -> None:
        self._fast_chosen = True

    def _draft_key(self) -> str | None:
        if self.about is not None:
            return None  # a question about a picture or clip is not a film's draft
        if self.conversation_id is not None:
            return str(self.conversation_id)
        return f"new-{self.movie.id}" if self.movie is not None else None

    def _save_draft(self) -> None:
        key = self._draft_key()
        if key is None:
            return
        text = self.question.text().strip()
        if text:
            self.drafts[key] = text
        else:
            self.drafts.pop(key, None)

    def _restore_draft(self) -> None:
        key = self._draft_key()
        self.question.setText(self.drafts.get(key, "") if key else "")

    def _refresh_controls(self) -> None:
        movie, busy, about = self.movie, self.busy, self.about is not None
        problem = None
        if about:
            if self.model_problem:
                problem = f"{self.model_problem[0].upper()}{self.model_problem[1:]}: open Settings to choose a model."
        elif movie is None:
            problem = "Choose a film in the library to chat about it."
        elif not (self.service.can_ask(movie) if self.service is not None else askable(movie)):
            problem = (f"{Path(movie.rel_path).name} is not indexed yet ({movie.state}); "
                       "you can ask about it once its dialogue or its pictures are read.")
        elif self.model_problem:
            problem = f"{self.model_problem[0].upper()}{self.model_problem[1:]}: open Settings to choose a model."
        self.notice.setText(problem or "")
        self.notice.setVisible(bool(problem))
        can_ask = problem is None and self.service is not None
        self.ask_button.setEnabled(can_ask and not busy)
        self.question.setEnabled(movie is not None or about)
        self.stop_button.setEnabled(busy)
        film = movie is not None and not busy and not about  # the film's conversation is shown
        has_conv = self.conversation_id is not None
        self.conversations.setEnabled(film)
        self.new_button.setEnabled(film)
        self.fast.setEnabled(film and self.conversation_id is None)
        for b in (self.rename_button, self.delete_button, self.export_button):
            b.setEnabled(film and has_conv)
        self.about_button.setEnabled(self.service is not None and not busy)
        self.about_done.setEnabled(not busy)

    # -- conversations -----------------------------------------------------------------------------
    def reload(self, open_newest: bool = False, select: int | None = None) -> None:
        """Read the film's conversations again (on the service thread) and list them."""
        if self.service is None or self.movie is None:
            self.conversations.clear()
            return
        service, movie_id = self.service, self.movie.id
        self._list_generation += 1
        generation = self._list_generation

        def listed(convs: list[Conversation]) -> None:
            if generation != self._list_generation or self.movie is None or self.movie.id != movie_id:
                return
            self._fill_list(convs, select if select is not None else self.conversation_id)
            if open_newest and convs and not self.busy:
                self.open_conversation(convs[0].id)

        self.tasks.run(lambda: service.conversations(movie_id), listed, self._failed)

    def _fill_list(self, convs: list[Conversation], current: int | None) -> None:
        self.conversations.clear()
        self.conversations.addItem("New conversation", None)
        for conv in convs:
            when = time.strftime("%d %b %H:%M", time.localtime(conv.updated_at))
            turns = len(conv.shown_turns)
            mode = " · fast answers" if conv.fast else ""
            self.conversations.addItem(f"{conv.title} · {when} · {turns} question{'s' if turns != 1 else ''}{mode}",
                                       conv.id)
        index = self.conversations.findData(current) if current is not None else 0
        self.conversations.setCurrentIndex(max(0, index))

    def conversation_ids(self) -> list[int]:
        return [self.conversations.itemData(i) for i in range(1, self.conversations.count())]

    @Slot(int)
    def _conversation_chosen(self, index: int) -> None:
        conv_id = self.conversations.itemData(index)
        if conv_id != self.conversation_id:
            if conv_id is None:
                self.new_conversation()
            else:
                self.open_conversation(conv_id)

    def open_conversation(self, conversation_id: int) -> None:
        """Show a kept conversation; the next question continues it."""
        if self.service is None or self.busy or self.about is not None:
            return
        self._save_draft()
        service = self.service
        self.tasks.run(lambda: service.conversation(conversation_id), self._opened, self._failed)

    def _opened(self, conv: Conversation) -> None:
        if self.movie is None or conv.movie_id != self.movie.id or self.busy or self.about is not None:
            return
        self._show_conversation(conv.id, [(t.question, t.answer, t.moments, t.stopped) for t in conv.shown_turns],
                                conv.title, conv.fast, conv.stride)
        index = self.conversations.findData(conv.id)
        if index >= 0:
            self.conversations.setCurrentIndex(index)

    def new_conversation(self) -> None:
        """An empty conversation; it is kept once its first question is asked."""
        if self.busy or self.about is not None:
            return
        self._save_draft()
        self._show_conversation(None, [])
        self.conversations.setCurrentIndex(0)

    def _show_conversation(self, conversation_id: int | None, turns: list[tuple], title: str = "",
                           fast: bool = False, stride: int | None = None) -> None:
        self.conversation_id, self.conversation_title = conversation_id, title
        self._fast_chosen = False
        self.fast.setChecked(fast if conversation_id is not None else fast_by_default(self.movie))
        self._clear_turns()
        for i, (question, answer, moments, stopped) in enumerate(turns):
            view = self._add_turn(question, answer, moments)
            note = reading_note(stride=stride) if i == 0 else ""  # the film was read (thinned) with the first
            if stopped:
                note = f"{note} (the answer was cut short)".strip()
            if note:
                view.set_note(note)
        self._restore_draft()
        self._refresh_controls()

    def _clear_turns(self) -> None:
        for view in self.turns:
            view.setParent(None)
            view.deleteLater()
        self.turns = []

    def _add_turn(self, question: str, answer: str = "", moments: list[dict] | None = None,
                  about: str | None = None) -> TurnView:
        view = TurnView(question, answer, moments, about=about)
        view.seek.connect(self.seek_requested)
        view.save_clip.connect(self.save_clip)
        self.transcript_layout.insertWidget(self.transcript_layout.count() - 1, view)
        self.turns.append(view)
        return view

    @Slot(float, float)
    def save_clip(self, start: float, end: float) -> None:
        """A moment of the open film as a clip (asks where; :class:`~app.desktop.clips.ClipSaver`)."""
        if self.movie is not None and self.service is not None:
            self.clips.ask_and_save(self, self.service.data.database, self.movie, start, end)

    @Slot(int, int)
    def _scroll_to_end(self, low: int, high: int) -> None:
        self.scroll.verticalScrollBar().setValue(high)

    def rename_conversation(self) -> None:
        if self.service is None or self.conversation_id is None:
            return
        title, ok = QInputDialog.getText(self, "Rename conversation", "Title:", QLineEdit.EchoMode.Normal,
                                         self.conversation_title)
        if not ok or not title.strip():
            return
        service, conv_id, title = self.service, self.conversation_id, title.strip()

        def renamed(_: Any) -> None:
            if conv_id == self.conversation_id:
                self.conversation_title = title
            self.reload(select=conv_id)

        self.tasks.run(lambda: service.rename(conv_id, title), renamed, self._failed)

    def delete_conversation(self) -> None:
        if self.service is None or self.conversation_id is None:
            return
        answer = QMessageBox.question(self, "Delete conversation",
                                      f"Delete the conversation “{self.conversation_title}”? This cannot be undone.")
        if answer != QMessageBox.StandardButton.Yes:
            return
        service, conv_id = self.service, self.conversation_id

        def deleted(_: Any) -> None:
            self.drafts.pop(str(conv_id), None)
            if conv_id == self.conversation_id:
                self._show_conversation(None, [])
            self.reload(select=None)

        self.tasks.run(lambda: service.delete(conv_id), deleted, self._failed)

    def export_conversation(self) -> None:
        if self.service is None or self.conversation_id is None:
            return
        default = str(Path.home() / f"{self.conversation_title or 'conversation'}.md")
        path, _ = QFileDialog.getSaveFileName(self, "Export conversation", default, "Markdown (*.md);;All files (*)")
        if not path:
            return
        service, conv_id = self.service, self.conversation_id

        def write() -> str:
            Path(path).write_text(service.export_markdown(conv_id), encoding="utf-8")
            return path

        self.tasks.run(write, lambda p: self.info.emit(f"conversation exported to {p}"), self._failed)

    def _failed(self, exc: BaseException) -> None:
        self.error.emit(describe_error(exc))

    # -- questions ---------------------------------------------------------------------------------
    def ask(self) -> None:
        """Send the question in the box (a new conversation is kept from its first question)."""
        question = self.question.text().strip()
        if not question or self.busy or not self.ask_button.isEnabled():
            return
        if self.about is not None:
            self._ask_about(question)
            return
        assert self.service is not None and self.movie is not None
        service, movie = self.service, self.movie
        key = self._draft_key()
        if key:
            self.drafts.pop(key, None)
        self.question.clear()
        self._stop_asked = False
        self._pending_question = question
        self.live = self._add_turn(question)
        self.asked_at = time.monotonic()
        self._show_progress("sending the question…", 0, 0)
        self._refresh_controls()
        self.busy_changed.emit(True)
        if self.conversation_id is not None:
            self._send(self.conversation_id, question)
            return
        track, fast = self.track(), self.fast.isChecked()
        self.tasks.run(lambda: service.new_conversation(movie.id, None, track, fast=fast),
                       lambda conv: self._send(conv.id, question, conv.title), self._send_failed)

    def _send(self, conversation_id: int, question: str, title: str | None = None) -> None:
        if self.live is None or self.service is None:
            return
        if title is not None:
            self.conversation_id, self.conversation_title = conversation_id, title
        self._follow(self.service.ask(conversation_id, question, self.options()))

    def _follow(self, stream: AskStream) -> None:
        """Read the question's events on a thread of their own; they arrive in :meth:`_on_event`."""
        self.stream = stream
        if self._stop_asked:
            stream.cancel()
        reader = StreamReader(stream)
        thread = QThread(self)
        thread.setObjectName("llamavid-answer")
        reader.moveToThread(thread)
        thread.started.connect(reader.run)
        reader.event.connect(self._on_event)
        thread.finished.connect(self._reader_finished)
        self.reader, self.reader_thread = reader, thread
        thread.start()

    def _send_failed(self, exc: BaseException) -> None:
        self._on_event(ChatEvent("error", text=describe_error(exc), kind="internal"))

    def stop(self) -> None:
        """Stop the question on its way (the service answers the next one as if it had not been asked)."""
        self._stop_asked = True
        if self.stream is not None:
            self.stream.cancel()
        self.stop_button.setEnabled(False)
        self.progress_label.setText("stopping…")

    @Slot(object)
    def _on_event(self, event: ChatEvent) -> None:
        live = self.live
        if live is None:
            return
        if event.type == "queued":
            self._show_progress(queue_position(event.position), 0, 0)
        elif event.type == "progress" and event.progress is not None:
            p = event.progress
            if not self._stop_asked:
                self._show_progress(p.describe(), p.done, p.total)
        elif event.type == "text":
            live.append(event.text)
        elif event.type == "moments":
            live.set_moments([m.to_dict() for m in event.moments])
        elif event.type == "done":
            notes = [*event.notes, *(["the answer was cut short"] if event.stopped else [])]
            if notes:
                live.set_note(reading_note(notes))
            if self._live_about:
                self.about_turns.append((self._pending_question, live.text()))
                self._end()
                return
            self._end()
            self.reload(select=self.conversation_id)
        elif event.type == "error":
            if event.kind == "cancelled":
                live.set_note(STOPPED_NOTE)
            else:
                live.set_note(f"No answer: {event.text}", "error")
                self.error.emit(event.text)
            if not self.question.text().strip():
                self.question.setText(self._pending_question)
            about = self._live_about
            self._end()
            if self.conversation_id is not None and not about:
                self.reload(select=self.conversation_id)

    def _show_progress(self, text: str, done: int, total: int) -> None:
        if text != self.progress_label.text():
            self.progress_shown.emit(text)
        self.progress_label.setText(text)
        self.progress_label.show()
        if total > 0:
            self.progress_bar.setRange(0, total)
            self.progress_bar.setValue(done)
        else:
            self.progress_bar.setRange(0, 0)  # busy indicator
        self.progress_bar.show()

    def _end(self) -> None:
        self.live, self.stream, self._live_about = None, None, False
        self.progress_label.hide()
        self.progress_bar.hide()
        self._refresh_controls()
        self.busy_changed.emit(False)

    @Slot()
    def _reader_finished(self) -> None:
        thread = self.sender()
        if isinstance(thread, QThread):
            if thread is self.reader_thread:
                self.reader, self.reader_thread = None, None
            thread.deleteLater()

    # -- a picture or a clip ------------------------------------------------------------------------
    def choose_about(self) -> None:
        """Pick a picture or a short clip: the next questions are about it (see :meth:`set_about`)."""
        if self.busy:
            return
        path, _ = QFileDialog.getOpenFileName(self, "A picture or a short clip to ask about", str(Path.home()),
                                              ABOUT_FILTER)
        if path:
            self.set_about(path)

    def set_about(self, path: str | Path) -> None:
        """Ask about this picture or clip instead of the film: the transcript shows the questions about
        it, each sent with the earlier ones (:meth:`ChatService.ask_about`; nothing is kept), until
        Back to the film (or another film) brings the film's conversation back."""
        if self.busy:
            return
        if self.about is None:
            self._save_draft()  # the film's question waits in its draft
            self.question.clear()
        self.about, self.about_turns = Path(path), []
        self._clear_turns()
        name = self.about.name
        self.about_label.setText(f"Asking about {name} (not kept)")
        self.about_label.setToolTip(str(self.about))
        self.about_label.show()
        self.about_done.show()
        self.question.setPlaceholderText(f"Ask about {name}…")
        self._refresh_controls()

    def leave_about(self) -> None:
        """Back to the film: its conversation and its draft come back."""
        if self.busy or self.about is None:
            return
        self._drop_about()
        if self.conversation_id is not None and self.service is not None:
            service, conv_id = self.service, self.conversation_id
            self.tasks.run(lambda: service.conversation(conv_id), self._opened, self._failed)
        else:
            self._show_conversation(None, [])

    def _drop_about(self) -> None:
        self.about, self.about_turns = None, []
        self._clear_turns()
        self.question.clear()
        self.question.setPlaceholderText("Ask about this film…")
        self.about_label.hide()
        self.about_done.hide()
        self._refresh_controls()

    def _ask_about(self, question: str) -> None:
        """Send a question about the picture or clip, with the earlier ones about it."""
        assert self.service is not None and self.about is not None
        about = self.about
        self.question.clear()
        self._stop_asked, self._pending_question, self._live_about = False, question, True
        self.live = self._add_turn(question, about=about.name)
        self.asked_at = time.monotonic()
        self._show_progress("sending the question…", 0, 0)
        self._refresh_controls()
        self.busy_changed.emit(True)
        media = {"video": str(about)} if is_video(about) else {"images": [str(about)]}
        try:
            stream = self.service.ask_about(question, history=list(self.about_turns), options=self.options(),
                                            **media)
        except Exception as exc:  # noqa: BLE001 - refused at once (a full queue...): said like any error
            self._send_failed(exc)
            return
        self._follow(stream)

    # -- closing -----------------------------------------------------------------------------------
    def stop_for_close(self) -> None:
        """First step of closing: stop a question on its way (its text becomes the draft) and a clip
        being cut (nothing of it is left)."""
        self.clips.cancel()
        if self.busy:
            question = self._pending_question
            self.stop()
            if not self.question.text().strip():
                self.question.setText(question)
        self._save_draft()

    def finish_close(self, timeout: float = 30.0) -> None:
        """Last step, once the service is closed (so every stream has ended): wait for the reader
        and the service thread."""
        thread = self.reader_thread
        if thread is not None and thread.isRunning() and not thread.wait(int(timeout * 1000)):
            _orphans.append(thread)  # never destroyed while it runs; it ends with its stream
            thread.setParent(None)
        self.clips.wait(timeout)
        self.tasks.close(int(timeout * 1000))


_orphans: list[QThread] = []
