"""The chat service every front end shares (the desktop app, the web UI, the OpenAI-compatible API).

It owns the resident model (loaded once through :func:`llamavid.runtime.load.load_model`), the
movie library (read through :mod:`indexer.library`) and the kept conversations
(:mod:`app.conversations`). A question is a request in a first-come queue served by one worker
thread, since one model answers one question at a time; :meth:`ChatService.ask` returns at once an
:class:`AskStream` that yields :class:`ChatEvent` objects as they happen (its place in the queue,
progress of the Q-Former pass and the prefill, the answer's text piece by piece, the moments it
rests on, then ``done``) and can be cancelled from any thread. Every failure arrives as an
``error`` event; the worker carries on with the next request.

One conversation is live at a time (a film's KV cache is large, and a llama.cpp context serves one
sequence). Its state is saved (``<data>/states/``, see :mod:`llamavid.runtime.state`) when another
conversation takes its place, when the service closes, and after a turn that read a long prompt;
asking in it again reads that state back instead of reading the film again. A state that does not
match (another model, a re-indexed film) or is damaged is dropped and the conversation rebuilt from
its kept turns, with progress, so it continues exactly where it stopped.

A "fast answers" conversation (``new_conversation(..., fast=True)``) begins from the film's
prepared state (:mod:`indexer.prepare`): the film was read once with a neutral first question,
and the user's question is the next turn. Without a prepared state the first question prepares
the film (and keeps the state for the next conversation). :meth:`ChatService.prepare_estimate`
says what a prepared film will take on disk before it is made, and
:meth:`ChatService.set_prepared` asks the indexer to prepare a film with this service's model
(or forgets its state).
"""
from __future__ import annotations

import locale
import logging
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.conversations import Conversation, ConversationStore, StoredTurn
from app.moments import CueHit, Moment, rank_moments
from indexer import library
from indexer.prepare import (
    film_chat,
    film_identity,
    forget_prepared,
    loaded_kv_bytes,
    make_prepared,
    mark_for_preparing,
    model_kv_shape,
    open_prepared,
    prepared_key,
)
from indexer.prepared_size import LlmShape, estimate_prepared_bytes, film_tokens
from indexer.store import LibraryStore
from llamavid.errors import BadMedia, Cancelled, CheckpointError, ContextOverflow, NotEnoughMemory, UserError
from llamavid.paths import DataDir
from llamavid.runtime.api import LlamaVid
from llamavid.runtime.chat import Chat, Turn
from llamavid.runtime.control import Control, Progress
from llamavid.runtime.generate import SamplingOptions
from llamavid.runtime.inputs import Visual
from llamavid.runtime.load import load_model
from llamavid.runtime.prepared import PREPARED_ANSWER, PREPARED_QUESTION, neutral_answer_ids
from llamavid.runtime.state import StateError, StateMismatch, load_chat, save_chat, state_key
from llamavid.storage import human_size

log = logging.getLogger(__name__)

#: ``error`` events name the kind of failure, so an HTTP layer can map it to a status code.
ERROR_KINDS = {ContextOverflow: "context_overflow", NotEnoughMemory: "not_enough_memory", BadMedia: "bad_media",
               CheckpointError: "model", library.FeaturesNotReady: "not_ready", KeyError: "not_found",
               Cancelled: "cancelled", UserError: "user_error"}


@dataclass(frozen=True)
class ChatEvent:
    """One thing that happened to a question: ``type`` is queued, progress, text, moments, done or error."""

    type: str
    text: str = ""  # text: the new piece of the answer; error: the message
    progress: Progress | None = None
    moments: tuple[Moment, ...] = ()
    position: int = 0  # queued: requests ahead of this one
    kind: str = ""  # error: see ERROR_KINDS; "internal" for a bug
    turn_id: int | None = None  # done: the kept turn (None when the turn was not kept)
    stopped: bool = False  # done: the answer was cut short by the caller

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type}
        if self.type in ("text", "error"):
            out["text"] = self.text
        if self.progress is not None:
            p = self.progress
            out.update(phase=p.phase, done=p.done, total=p.total, unit=p.unit, eta_seconds=p.eta_seconds,
                       message=p.describe())
        if self.type == "moments":
            out["moments"] = [m.to_dict() for m in self.moments]
        if self.type == "queued":
            out["position"] = self.position
        if self.type == "error":
            out["kind"] = self.kind
        if self.type == "done":
            out.update(turn_id=self.turn_id, stopped=self.stopped)
        return out


class AskStream:
    """The events of one question, in order; iterate it, or cancel it from any thread."""

    def __init__(self, conversation_id: int, question: str, options: SamplingOptions | None,
                 time_budget: float | None, rates: Any):
        self.conversation_id, self.question = conversation_id, question
        self.options, self.time_budget = options, time_budget
        self.events: queue.Queue[ChatEvent] = queue.Queue()
        self.control = Control(on_progress=lambda p: self.put(ChatEvent("progress", progress=p)), rates=rates)
        self.finished = threading.Event()

    def put(self, event: ChatEvent) -> None:
        self.events.put(event)
        if event.type in ("done", "error"):
            self.finished.set()

    def cancel(self) -> None:
        """Stop this question wherever it is (waiting, reading the film, answering); the
        conversation is left as if it had not been asked, and an ``error`` event of kind
        ``cancelled`` ends the stream."""
        self.control.cancel()

    def __iter__(self) -> Iterator[ChatEvent]:
        while True:
            event = self.events.get()
            yield event
            if event.type in ("done", "error"):
                return

    def text(self) -> str:
        """Wait for the end and return the whole answer (raises the error of an ``error`` event)."""
        pieces = []
        for event in self:
            if event.type == "text":
                pieces.append(event.text)
            elif event.type == "error":
                raise (Cancelled(event.text) if event.kind == "cancelled" else UserError(event.text))
        return "".join(pieces)


@dataclass
class _Live:
    conversation_id: int
    chat: Chat
    key: dict
    movie: library.Movie | None = None
    track_id: int | None = None  # the subtitle track in the film's prompt
    saved_length: int = 0  # tokens in the cache when its state was last written


SAVE_AFTER_TOKENS = 2048  # a turn that adds this many tokens (a film's first) is saved at once

class ChatService:
    """Movies, conversations and questions for the front ends (see the module docstring)."""

    def __init__(self, data_dir: str | Path, model: str | None = None, language: str | None = None,
                 lv: LlamaVid | None = None, **load_options: Any):
        self.data = DataDir(Path(data_dir)).create()
        self.model_name, self.load_options = model, load_options
        self.language = language or _user_language()
        self.store = ConversationStore(self.data.root / "conversations.db")
        self._lv = lv
        self._kv_shape: tuple[LlmShape, float] | None = None  # the unloaded model's, for size estimates
        self._db = library.open_library(self.data.root)  # WAL: reads while the indexer writes
        self._live: _Live | None = None
        self._requests: queue.Queue[AskStream | threading.Event | None] = queue.Queue()
        self._waiting = 0
        self._open_streams: list[AskStream] = []
        self._lock = threading.Lock()
        self._worker = threading.Thread(target=self._serve, name="llamavid-chat", daemon=True)
        self._worker.start()

    # -- the library and the kept conversations ---------------------------------------------------
    def movies(self) -> list[library.Movie]:
        return library.list_movies(self._library())

    def movie(self, ref: str | int) -> library.Movie:
        db = self._library()
        return library.get_movie(db, ref) if isinstance(ref, int) else library.find_movie(db, ref)

    def _library(self):
        return self._db

    def new_conversation(self, movie: str | int | None = None, title: str | None = None,
                         track_id: int | None = None, fast: bool = False) -> Conversation:
        """A conversation about a film of the library (by id or path), or without one; ``fast``
        begins from the film's prepared state (see the module docstring)."""
        found = self.movie(movie) if movie is not None else None
        if found is not None and track_id is not None:
            library.choose_track(found, track_id=track_id)  # a track the film does not have: KeyError now
        return self.store.create(self.model_name or "", found.id if found else None, found.path if found else None,
                                 title, track_id, self.language, fast=fast and found is not None)

    def seed(self, conversation_id: int, history: list[tuple[str, str]]) -> None:
        """Give a new conversation earlier turns (question, answer) as if they had been asked here:
        a client that keeps its own history (an OpenAI-style message list) continues from them. The
        answers are kept as the tokens the model would end with; the film is read with the first
        (in a fast conversation, with the hidden neutral turn put before them)."""
        conv = self.store.get(conversation_id)
        if conv.turns:
            raise ValueError(f"conversation {conversation_id} already has turns")
        lv = self.model()
        tokenizer = lv.tokenizer
        if conv.fast and history:
            self.store.add_turn(conversation_id, PREPARED_QUESTION, PREPARED_ANSWER, neutral_answer_ids(lv), False, [],
                                hidden=True)
        for question, answer in history:
            ids = tokenizer.encode(answer, add_special_tokens=False) + [tokenizer.eos_token_id]
            self.store.add_turn(conversation_id, question, answer, ids, False, [])

    # -- prepared films ("fast answers") -----------------------------------------------------------
    def prepare_estimate(self, movie: library.Movie) -> int | None:
        """Bytes the film's prepared state will take with this service's model, to show before a
        person asks for it; None without a usable model (none chosen, or not installed)."""
        kv = self._kv_shape_of_model()
        if kv is None:
            return None
        frames, text_tokens = film_tokens(self._library(), movie, self.language)
        return estimate_prepared_bytes(kv[0], frames, text_tokens, kv[1])

    def _kv_shape_of_model(self) -> tuple[LlmShape | Any, float] | None:
        """The LLM's shape and bytes per cached value: the loaded model's, else read from its folder
        with the load options (the model is not loaded for this)."""
        lv = self._lv
        if lv is not None:
            return lv.config, loaded_kv_bytes(lv)
        if self._kv_shape is None and self.model_name:
            try:
                self._kv_shape = model_kv_shape(self.model_name, self.data.root, self.load_options)
            except (UserError, ValueError, OSError) as exc:
                log.info("no size estimate for prepared films with %s: %s", self.model_name, exc)
        return self._kv_shape

    def set_prepared(self, movie_id: int, wanted: bool) -> str:
        """Ask the indexer to prepare a film for fast answers with this service's model (and its
        language, which picks the subtitles), or stop preparing it and delete its prepared state.
        Returns what was done, in words for a person."""
        movie = self.movie(movie_id)
        name = Path(movie.rel_path).name
        with LibraryStore.open(self.data.database) as store:
            if not wanted:
                forget_prepared(store, [movie.id])
                return f"{name} is no longer prepared: new fast conversations prepare it again"
            if not self.model_name:
                raise UserError("preparing a film needs a chat model: choose one first")
            mark_for_preparing(store, [movie.id], self.model_name, self.language, self.load_options)
        size = self.prepare_estimate(movie)
        about = f" (about {human_size(size)} on disk)" if size else ""
        return f"{name} will be prepared for fast answers{about} by the indexer"

    def suspend(self) -> None:
        """Save the live conversation's state and let its cache go (another user of the model, such as
        a stateless request on the same llama.cpp context, may take it); the conversation reads its
        state back on its next question. Runs on the worker, after the questions already queued."""
        done = threading.Event()
        self._requests.put(done)
        done.wait()

    def conversations(self, movie_id: int | None = None) -> list[Conversation]:
        return self.store.recent(movie_id)

    def conversation(self, conversation_id: int) -> Conversation:
        return self.store.get(conversation_id)

    def rename(self, conversation_id: int, title: str) -> None:
        self.store.rename(conversation_id, title)

    def delete(self, conversation_id: int) -> None:
        with self._lock:
            if self._live and self._live.conversation_id == conversation_id:
                self._live = None
        self.store.delete(conversation_id)
        self._state_path(conversation_id).unlink(missing_ok=True)

    def _state_path(self, conversation_id: int) -> Path:
        return self.data.root / "states" / f"conversation-{conversation_id}.state"

    def export_markdown(self, conversation_id: int) -> str:
        return self.store.markdown(conversation_id)

    # -- questions ------------------------------------------------------------------------------
    def ask(self, conversation_id: int, question: str, options: SamplingOptions | None = None,
            time_budget: float | None = None) -> AskStream:
        """Queue a question; the returned stream starts with its place in the queue."""
        stream = AskStream(conversation_id, question, options, time_budget, self._rates())
        with self._lock:
            self._open_streams = [s for s in self._open_streams if not s.finished.is_set()] + [stream]
            stream.put(ChatEvent("queued", position=self._waiting))
            self._waiting += 1
            self._requests.put(stream)
        return stream

    def model(self) -> LlamaVid:
        """The resident model, loaded on first use."""
        if self._lv is None:
            if not self.model_name:
                raise UserError("no model chosen: pick an installed one (`llamavid models list`)")
            self._lv = load_model(self.model_name, self.data.root, load_vision=False, **self.load_options)
        return self._lv

    def _rates(self):
        return self._lv.rates if self._lv is not None else None

    def close(self) -> None:
        """Cancel the questions waiting or being answered, save the live conversation's state, stop
        the worker (a cancelled question leaves its conversation as it was, see :meth:`AskStream.cancel`)."""
        with self._lock:
            for stream in self._open_streams:
                stream.cancel()
        self._requests.put(None)
        self._worker.join(timeout=600)
        if self._live is not None:
            self._save(self._live)
        self.store.close()

    def _serve(self) -> None:
        while (stream := self._requests.get()) is not None:
            if isinstance(stream, threading.Event):  # suspend()
                if self._live is not None:
                    self._save(self._live)
                    self._live = None
                stream.set()
                continue
            with self._lock:
                self._waiting -= 1
            try:
                self._answer(stream)
            except BaseException as exc:  # noqa: BLE001 - every failure becomes an event
                kind = next((k for t, k in ERROR_KINDS.items() if isinstance(exc, t)), "internal")
                if kind == "internal":
                    log.exception("question %r failed", stream.question)
                message = str(exc).strip("'\"") or exc.__class__.__name__
                stream.put(ChatEvent("error", text=message, kind=kind))

    def _answer(self, stream: AskStream) -> None:
        stream.control.check()  # cancelled while waiting
        lv = self.model()
        stream.control.rates = lv.rates
        live = self._live_chat(stream)
        chat = live.chat
        pieces = chat.ask(stream.question, stream.options, control=stream.control, time_budget=stream.time_budget)
        for piece in pieces:
            stream.put(ChatEvent("text", text=piece))
        turn = chat.turns[-1]
        try:
            moments = self._moments(live, turn)
        except Exception:  # noqa: BLE001 - moments are a bonus: the answer is kept without them
            log.exception("moments of %r failed", turn.question)
            moments = []
        try:
            turn_id = self.store.add_turn(stream.conversation_id, turn.question, turn.answer, turn.answer_ids,
                                          turn.stopped, [m.to_dict() for m in moments], chat.stride)
        except BaseException:
            self._live = None  # the chat holds a turn the store does not: rebuild from the store next time
            raise
        if chat.state.length - live.saved_length >= SAVE_AFTER_TOKENS:
            self._save(live)
        if live.movie is not None:
            stream.put(ChatEvent("moments", moments=tuple(moments)))
        stream.put(ChatEvent("done", turn_id=turn_id, stopped=turn.stopped))

    def _live_chat(self, stream: AskStream) -> _Live:
        """The conversation's chat: the live one, its saved state, or rebuilt from its kept turns."""
        if self._live and self._live.conversation_id == stream.conversation_id:
            return self._live
        if self._live is not None:  # the other conversation's state goes to disk, its cache is freed
            self._save(self._live)
            self._live = None
        conv = self.store.get(stream.conversation_id)
        live = self._open(conv)
        if not self._load(live, conv):
            if conv.fast and not conv.turns:
                self._start_fast(live, conv, stream.control)
            else:
                live.chat.restore([_turn(t) for t in conv.turns], stream.control)
        self._live = live
        return live

    def _open(self, conv: Conversation) -> _Live:
        lv = self.model()
        if conv.movie_id is None:
            chat = Chat(lv, Visual("none"))
            return _Live(conv.id, chat, state_key(chat, film=None))
        movie = library.get_movie(self._library(), conv.movie_id)
        chat, track_id = film_chat(lv, LibraryStore(self._library()), movie, conv.language, conv.track_id, conv.stride)
        return _Live(conv.id, chat, state_key(chat, film=film_identity(movie), track=track_id), movie, track_id)

    def _load(self, live: _Live, conv: Conversation) -> bool:
        """Read the conversation's saved state if it matches it exactly (key and kept turns)."""
        path = self._state_path(conv.id)
        if not path.is_file():
            return False
        try:
            load_chat(live.chat, path, live.key)
            if [t.answer_ids for t in live.chat.turns] != [t.answer_ids for t in conv.turns]:
                raise StateMismatch(f"{path}: holds other turns than the conversation kept")
        except StateError as exc:
            log.info("rebuilding conversation %s: %s", conv.id, exc)
            path.unlink(missing_ok=True)
            live.chat = self._open(conv).chat
            return False
        live.saved_length = live.chat.state.length
        return True

    def _start_fast(self, live: _Live, conv: Conversation, control: Control) -> None:
        """A fast conversation's hidden first turn: the film's prepared state, or prepared now."""
        store, movie, chat = LibraryStore(self._library()), live.movie, live.chat
        key = prepared_key(chat, movie, live.track_id)
        if not open_prepared(chat, store, self.data, movie, key):
            make_prepared(chat, store, self.data, movie, key, control)
        neutral = chat.turns[0]
        self.store.add_turn(conv.id, neutral.question, neutral.answer, neutral.answer_ids, False, [],
                            chat.stride, hidden=True)

    def _save(self, live: _Live) -> None:
        if not live.chat.turns:
            return
        try:
            save_chat(live.chat, self._state_path(live.conversation_id), live.key)
            live.saved_length = live.chat.state.length
        except OSError as exc:  # a full disk must not lose the answer; the state is rebuilt next time
            log.warning("could not save the state of conversation %s: %s", live.conversation_id, exc)

    def _moments(self, live: _Live, turn: Turn) -> list[Moment]:
        if live.movie is None:
            return []
        chat, found = live.chat, {}
        for text in (turn.question, turn.answer):  # FTS5 finds the candidates; rank_moments scores them
            for hit in library.matching_cues(self._library(), live.movie, text, live.track_id):
                found[(hit.start_time, hit.text)] = CueHit(hit.start_time, hit.end_time, hit.text)
        relevance = chat.relevance.tolist() if chat.relevance is not None else None
        return rank_moments(chat.visual.frame_times, relevance, list(found.values()), turn.question, turn.answer,
                            live.movie.duration)


def fast_by_default(movie: library.Movie | None) -> bool:
    """Whether a new conversation about the film starts in fast-answers mode unless the person
    says otherwise: yes for a prepared film (answers in seconds), no otherwise (a fast
    conversation about an unprepared film first reads the whole film, like exact mode)."""
    return bool(movie is not None and movie.prepared_bytes)


def _turn(stored: StoredTurn) -> Turn:
    return Turn(stored.question, stored.answer, len(stored.answer_ids), stored.stopped, list(stored.answer_ids))


def _user_language() -> str | None:
    """The two-letter language of the user's locale ("en" for en_US.UTF-8), for the subtitle track."""
    name = locale.getlocale()[0] or ""
    return name[:2].lower() if len(name) >= 2 and name[:2].isalpha() else None
