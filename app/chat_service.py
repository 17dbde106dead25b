"""The chat engine every front end shares (the desktop app, the web UI, the OpenAI-compatible API, the CLI).

It owns the resident model (loaded once through :func:`llamavid.runtime.load.load_model`), the
movie library (read through :mod:`indexer.library`) and the kept conversations
(:mod:`app.conversations`). Every question, from whichever front end, is an
:class:`~app.questions.AskStream` in one queue served by one worker thread, since one
model answers one question at a time. The ask methods return at once; the stream yields
:class:`~app.questions.ChatEvent` objects as they happen and can be cancelled from any thread.
Every failure arrives as an ``error`` event whose kind the error itself names
(:func:`llamavid.errors.error_kind`); the worker carries on with the next question.

Three kinds of question share the queue:

* :meth:`ChatService.ask`: the next question of a kept conversation (a film, or text);
* :meth:`ChatService.ask_film`: a question about a film with the earlier turns of a message list
  (an OpenAI-style client that keeps its own history): the kept conversation holding exactly those
  turns continues, else a new one is made from them (on the worker: it needs the tokenizer);
* :meth:`ChatService.ask_about`: a stateless question about pictures, a short clip or text with
  earlier turns. The model is loaded without EVA (films come with cached features); the first such
  question attaches it.

One conversation is live at a time (a film's KV cache is large, and a llama.cpp context serves one
sequence). Its state is saved (``<data>/states/``, see :mod:`llamavid.runtime.state`) when another
conversation or a stateless question takes its place, when the service closes, and after a turn
that read a long prompt; asking in it again reads that state back instead of reading the film
again. A state that does not match (another model, a re-indexed film) or is damaged is dropped and
the conversation rebuilt from its kept turns, with progress, so it continues exactly where it stopped.
A right state that does not fit the memory free now is kept, and the question refused with
:class:`~llamavid.errors.MemoryInUse` saying what to free. A conversation runs in the context and
reads its film with the stride it was made with; a new one takes its film's plan for the model,
kept in the library (:func:`indexer.prepare.film_plan`), as the indexer does.

A "fast answers" conversation (``new_conversation(..., fast=True)``) begins from the film's
prepared state (:mod:`indexer.prepare`): the film was read once with a neutral first question,
and the user's question is the next turn. Without a prepared state the first question prepares
the film (and keeps the state for the next conversation). :meth:`ChatService.prepare_estimate`
says what a prepared film will take on disk before it is made, and
:meth:`ChatService.set_prepared` prepares a film with this service's model, in its own queue
(:meth:`ChatService.prepare_film`, with progress, stoppable), or forgets its state. Reading a film
ahead takes minutes to an hour on a CPU, so a question asked meanwhile goes before the preparations
still waiting (never before one already running). While the
service holds a model it says so (:func:`indexer.sharing.holding`), and the background indexer
leaves preparing films with that model to it: no second copy is loaded.

The model answering can change between questions (:meth:`ChatService.select_model`, or a
question's ``model``): questions already waiting keep the model they were asked of.
"""
from __future__ import annotations

import gc
import hashlib
import itertools
import locale
import logging
import os
import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlite_utils

from app.conversations import Conversation, ConversationStore, short_title
from app.film_words import queue_position
from app.live_chat import LiveChats
from app.questions import AskStream, ChatEvent
from app.qwen_live import QwenChats, film_askable, media_turn
from indexer import library
from indexer.db import ThreadConnections
from indexer.prepare import (
    engine_id,
    film_chat,
    forget_prepared,
    is_current,
    loaded_kv_bytes,
    make_prepared,
    mark_for_preparing,
    model_kv_shape,
    prepared_key,
)
from indexer.prepared_size import LlmShape, estimate_prepared_bytes, film_tokens, hour_bytes
from indexer.sharing import answering, holding
from indexer.store import LibraryStore
from llamavid.errors import UserError
from llamavid.hub.catalog import can_chat
from llamavid.hub.installed import InstalledEntry, list_models
from llamavid.hub.installed import resolve_model as resolve_folder
from llamavid.paths import DataDir
from llamavid.runtime.api import LlamaVid
from llamavid.runtime.chat import Chat
from llamavid.runtime.family import QWEN_VL, QwenVL, family_of
from llamavid.runtime.generate import SamplingOptions
from llamavid.runtime.inputs import Visual
from llamavid.runtime.llamacpp import LlamaCppBackend
from llamavid.runtime.load import LoadOptions, load_model
from llamavid.runtime.prepared import PREPARED_ANSWER, PREPARED_QUESTION, neutral_answer_ids
from llamavid.runtime.qwen_chat import QwenChat
from llamavid.storage import human_size

__all__ = ["AskStream", "ChatEvent", "ChatService", "NoModel", "QueueFull", "chat_models", "fast_by_default",
           "no_model_hint"]

log = logging.getLogger(__name__)


QUESTION_RANK, PREPARE_RANK, STOP_RANK = 0, 1, 2


def _rank(stream: AskStream) -> int:
    """Where a piece of work goes in the queue: a film read ahead after every question."""
    return PREPARE_RANK if isinstance(stream.job, _Prepare) else QUESTION_RANK


class QueueFull(UserError):
    """More questions wait than the service allows (``max_waiting``): try again later."""

    kind = "queue_full"


class NoModel(UserError):
    """No chat model is installed or chosen; the message says how to get one."""

    kind = "no_model"


# -- what the worker does for a question ---------------------------------------------------------
@dataclass(frozen=True)
class _InConversation:
    """The next question of a kept conversation."""

    conversation_id: int


@dataclass(frozen=True)
class _AboutFilm:
    """A film question with the earlier turns of a message list (see :meth:`ChatService.ask_film`)."""

    movie_id: int
    track_id: int | None
    history: tuple[tuple[str, str], ...]
    fast: bool


@dataclass(frozen=True)
class _AboutMedia:
    """A stateless question: pictures (paths or RGB arrays) or a clip (a file), or neither."""

    images: tuple[Any, ...] = ()
    video: Path | None = None
    history: tuple[tuple[str, str], ...] = ()
    delete_video: bool = False  # the file is the request's own copy: deleted once its frames are read

    def finish(self) -> None:
        if self.delete_video and self.video is not None:
            self.video.unlink(missing_ok=True)


@dataclass(frozen=True)
class _Prepare:
    """Read a film ahead for fast answers with the model this service holds (see :meth:`ChatService.prepare_film`)."""

    movie_id: int


@dataclass(frozen=True)
class _Load:
    """Load the model before the first question (a server's start, a new model picked)."""


@dataclass
class Stats:
    answered: int = 0
    cancelled: int = 0
    failed: int = 0


class ChatService:
    """Movies, conversations and questions for every front end (see the module docstring)."""

    def __init__(self, data_dir: str | Path, model: str | None = None, language: str | None = None,
                 lv: LlamaVid | None = None, load: LoadOptions | None = None, max_waiting: int = 32,
                 max_video_frames: int = 180):
        """``model``: what ``--model`` or the settings name (an installed name or a folder); None
        until one is chosen. ``lv``: a model already loaded (tests, benchmarks). ``max_waiting``
        questions may wait; more are refused with :class:`QueueFull`. A clip is sampled at 1 fps,
        at most ``max_video_frames`` frames kept."""
        self.data = DataDir(Path(data_dir)).create()
        self.load_options = load or LoadOptions()
        self.language = language or _user_language()
        self.max_waiting, self.max_video_frames = max_waiting, max_video_frames
        self.store = ConversationStore(self.data.root / "conversations.db")
        self.stats = Stats()
        self.load_error: str | None = None
        self._model, self._wanted = model, None  # the model loaded (or to load) and the one asked for next
        self._full_names = {_shown_name(model): model} if model else {}  # a --model folder, by its name
        self._lv = lv
        self._kv_shape: tuple[LlmShape, float] | None = None  # the unloaded model's, for size estimates
        self._models_cache: tuple[float, list[InstalledEntry]] | None = None
        # WAL: reads while the indexer writes; a connection per thread (the worker, each front end's)
        self._library = ThreadConnections(self.data.database)
        self._chats = LiveChats(self.data, self.store, self._library, self.model)
        self._qwen = QwenChats(self.data, self.store, self._library, self.model, self._chats)  # the second family
        self._detach_gone()
        # (rank, arrival, stream): questions (rank 0) before preparations (1), each kind first come first
        # served; the worker's stop (2) after both
        self._queue: queue.PriorityQueue[tuple[int, int, AskStream | None]] = queue.PriorityQueue()
        self._arrivals = itertools.count()
        self._waiting: list[AskStream] = []
        self._preparing: dict[int, AskStream] = {}  # films read ahead in this queue (prepare_film)
        self._held: tuple[str, Any] | None = None  # the model this process says it holds, and its marker
        self._current: AskStream | None = None
        self._lock = threading.Lock()
        self._worker = threading.Thread(target=self._serve, name="llamavid-chat", daemon=True)
        self._worker.start()

    # -- models ---------------------------------------------------------------------------------------
    @property
    def model_name(self) -> str | None:
        """The model the next question is answered by, as ``--model`` named it (the last one chosen:
        by :meth:`select_model` or a question's ``model``; the one loaded may still be another while
        a switch waits its turn)."""
        return self._wanted or self._model

    @property
    def shown_model(self) -> str | None:
        """:attr:`model_name` as a person and an API client see it (a folder by its name)."""
        return _shown_name(self.model_name)

    @property
    def _db(self) -> sqlite_utils.Database:
        """The library database, through the calling thread's own connection."""
        return self._library.get()

    @property
    def model_loaded(self) -> bool:
        return self._lv is not None and self._wanted is None

    def models(self) -> list[InstalledEntry]:
        """Installed models a chat can use, by name (a directory listing: cheap, cached while the
        models folder is unchanged)."""
        try:
            stamp = os.stat(self.data.models).st_mtime
        except OSError:
            stamp = 0.0
        cached = self._models_cache
        if cached is None or cached[0] != stamp:
            self._models_cache = cached = (stamp, chat_models(self.data))
        return cached[1]

    def resolve_model(self, requested: str | None) -> str:
        """The model a question's ``model`` field means, as shown: empty or the current name (or its
        folder) means the current one; another installed chat model switches to it (between
        questions, in queue order); anything else is a KeyError naming the installed ones."""
        current = self.shown_model
        if requested and requested != current and any(m.name == requested for m in self.models()):
            return requested
        if current is None:
            raise NoModel("no chat model is installed: " + no_model_hint(self.data))
        if not requested or requested in (current, self.model_name):
            return current
        names = ", ".join(m.name for m in self.models()) or "none"
        raise KeyError(f"model {requested!r} is not installed here; installed chat models: {names}")

    def can_ask(self, movie: library.Movie, model: str | None = None) -> bool:
        """Whether ``model`` (default: the one answering next) can be asked about ``movie`` now: the
        one rule every front end follows. LLaMA-VID needs the film's dialogue or pictures read
        (:func:`indexer.library.askable`); a Qwen3-VL decodes the frames it needs itself, so a probed
        film is enough."""
        return film_askable(movie) if self.family(model) == QWEN_VL else library.askable(movie)

    def family(self, name: str | None = None) -> str:
        """The model family (``llama-vid`` or ``qwen-vl``) of ``name`` (default: the model answering next),
        read from its folder without loading it; ``llama-vid`` where it cannot be told."""
        name = name or self.model_name
        if self._lv is not None and name == self._model:
            return QWEN_VL if isinstance(self._lv, QwenVL) else "llama-vid"
        try:
            return family_of(resolve_folder(self._full_names.get(name, name), self.data.root)) if name else "llama-vid"
        except (UserError, OSError):
            return "llama-vid"

    def _model_of(self, conversation_id: int, asked: str | None) -> str | None:
        """The model a kept conversation's next question goes to: the one it began with, when installed."""
        try:
            kept = _shown_name(self.store.get(conversation_id).model)
        except KeyError:
            return asked
        if kept and (kept == self.shown_model or any(m.name == kept for m in self.models())):
            return kept
        return asked

    def select_model(self, name: str) -> None:
        """Answer the next questions with another installed model; it loads in the background, after
        the questions already waiting (which keep the model they were asked of)."""
        if name == self.shown_model:
            return
        if not any(m.name == name for m in self.models()):
            raise KeyError(f"model {name!r} is not installed here")
        with self._lock:
            self._wanted = self._full_names.get(name, name)
        self.warm_up()

    def warm_up(self) -> None:
        """Load the model on the worker now, so the first question does not wait for it."""
        if self.model_name is not None:
            self._queue.put((QUESTION_RANK, next(self._arrivals), AskStream("", _Load(), model=self.model_name)))

    def model(self) -> LlamaVid:
        """The resident model, loaded on first use (call it from the worker, or before asking)."""
        if self._lv is None:
            if not self._model:
                raise NoModel("no model chosen: pick an installed one (`llamavid models list`)")
            try:
                self._lv = load_model(self._model, self.data.root,
                                      options=self.load_options.replace(load_vision=False))
            except UserError as exc:
                self.load_error = str(exc)
                raise
            self.load_error = None
            self._lv.rates.read(self._rates_file(self._lv))
        self._hold()
        return self._lv

    def _hold(self) -> None:
        """Say that this process holds its model (:func:`indexer.sharing.holding`): the indexer then
        leaves preparing films with it to this service's queue instead of loading a second copy."""
        if self._held is not None and self._held[0] == self._model:
            return
        self._let_go()
        if self._model:
            marker = holding(self.data.root, self._model)
            marker.__enter__()
            self._held = (self._model, marker)

    def _let_go(self) -> None:
        if self._held is not None:
            self._held[1].__exit__(None, None, None)
            self._held = None

    def status(self) -> dict[str, Any]:
        """What a health check shows: the model, whether it is loaded, the queue and the counts."""
        with self._lock:
            waiting, busy = len(self._waiting), self._current is not None
        return {"model": self.shown_model, "model_loaded": self.model_loaded, "load_error": self.load_error,
                "busy": busy, "waiting": waiting, "answered": self.stats.answered,
                "cancelled": self.stats.cancelled, "failed": self.stats.failed}

    def _switch_to(self, name: str | None) -> None:
        """Make ``name`` the resident model (on the worker, between questions)."""
        if name is None or name == self._model:
            return
        self._chats.release()
        self._qwen.release()
        self._let_go()
        self._lv, self._kv_shape, self._model, self.load_error = None, None, name, None
        gc.collect()  # the old weights go before the new ones load
        with self._lock:
            if self._wanted == name:
                self._wanted = None

    # -- the library and the kept conversations ---------------------------------------------------
    def movies(self) -> list[library.Movie]:
        return library.list_movies(self._db)

    def movie(self, ref: str | int) -> library.Movie:
        return library.get_movie(self._db, ref) if isinstance(ref, int) else library.find_movie(self._db, ref)

    def new_conversation(self, movie: str | int | None = None, title: str | None = None,
                         track_id: int | None = None, fast: bool = False) -> Conversation:
        """A conversation about a film of the library (by id or path), or without one; ``fast``
        begins from the film's prepared state (see the module docstring)."""
        found = self.movie(movie) if movie is not None else None
        if found is not None and track_id is not None:
            library.choose_track(found, track_id=track_id)  # a track the film does not have: KeyError now
        return self.store.create(self.model_name or "", found.id if found else None, found.path if found else None,
                                 title, track_id, self.language,
                                 fast=fast and found is not None and found.features_complete
                                 and self.family() != QWEN_VL)

    def conversations(self, movie_id: int | None = None) -> list[Conversation]:
        self._detach_gone()
        return self.store.recent(movie_id)

    def _detach_gone(self) -> None:
        """Detach the conversations whose film has left the library (removed by the indexer, the
        app or ``llamavid index rm``, in any process): they are kept, and never attach to another
        film (a removed film's id is never reused)."""
        gone = self.store.movie_ids() - LibraryStore(self._db).movie_ids()
        if gone:
            log.info("films %s left the library: %d conversations detached", sorted(gone),
                     self.store.detach_movies(gone))

    def conversation(self, conversation_id: int) -> Conversation:
        return self.store.get(conversation_id)

    def rename(self, conversation_id: int, title: str) -> None:
        self.store.rename(conversation_id, title)

    def delete(self, conversation_id: int) -> None:
        with self._lock:
            self._chats.forget(conversation_id)
            self._qwen.forget(conversation_id)
        self.store.delete(conversation_id)

    def export_markdown(self, conversation_id: int) -> str:
        return self.store.markdown(conversation_id)

    # -- prepared films ("fast answers") -----------------------------------------------------------
    def prepare_estimate(self, movie: library.Movie) -> int | None:
        """Bytes the film's prepared state will take with this service's model, to show before a
        person asks for it; None without a usable model (none chosen, or not installed)."""
        kv = self._kv_shape_of_model()
        if kv is None:
            return None
        frames, text_tokens = film_tokens(self._db, movie, self.language)
        return estimate_prepared_bytes(kv[0], frames, text_tokens, kv[1])

    def prepare_seconds(self, movie: library.Movie) -> float | None:
        """Seconds reading the film ahead will take on this machine (the Q-Former over its frames,
        the LLM over its prompt, at the rates this model was measured at here); None before the
        model has been measured, or when it is not loaded."""
        lv = self._lv if self._wanted is None else None
        if lv is None or isinstance(lv, QwenVL):
            return None
        frames, text_tokens = film_tokens(self._db, movie, self.language)
        visual, prefill = lv.rates.seconds("visual", frames), lv.rates.seconds("prefill", 2 * frames + text_tokens)
        return None if visual is None or prefill is None else visual + prefill

    def prepared_per_hour(self) -> int | None:
        """Bytes a prepared hour of film takes with this service's model and KV cache type (None
        without a usable model): the Library's figure per hour, from the rule each film's uses."""
        kv = self._kv_shape_of_model()
        return hour_bytes(kv[0], kv[1]) if kv is not None else None

    def _kv_shape_of_model(self) -> tuple[LlmShape | Any, float] | None:
        """The LLM's shape and bytes per cached value: the loaded model's, else read from its folder
        with the load options (the model is not loaded for this)."""
        lv = self._lv if self._wanted is None else None
        if isinstance(lv, QwenVL) or self.family() == QWEN_VL:
            return None  # no prepared films for the second family
        if lv is not None:
            return lv.config, loaded_kv_bytes(lv)
        if self._kv_shape is None and self.model_name:
            try:
                self._kv_shape = model_kv_shape(self.model_name, self.data.root, self.load_options)
            except (UserError, ValueError, OSError) as exc:
                log.info("no size estimate for prepared films with %s: %s", self.model_name, exc)
        return self._kv_shape

    def set_prepared(self, movie_id: int, wanted: bool) -> str:
        """Prepare a film for fast answers with this service's model (and its language, which picks
        the subtitles), in this service's queue (:meth:`prepare_film`: no second copy of the model),
        and keep the choice (the indexer prepares it again after a re-index when no app holds the
        model); or stop preparing it, and delete its prepared state. Returns what was done, in words."""
        movie = self.movie(movie_id)
        name = Path(movie.rel_path).name
        with LibraryStore.open(self.data.database) as store:
            if not wanted:
                self._stop_preparing(movie.id)
                forget_prepared(store, [movie.id])
                return f"{name} is no longer prepared: new fast conversations prepare it again"
            if not self.model_name:
                raise UserError("preparing a film needs a chat model: choose one first")
            if self.family() == QWEN_VL:
                raise UserError("prepared films (fast answers) are made with LLaMA-VID models; a Qwen3-VL reads "
                                "the film's frames at its first question: pick a LLaMA-VID model to prepare it")
            mark_for_preparing(store, [movie.id], self.model_name, self.language, self.load_options)
        size = self.prepare_estimate(movie)
        about = f" (about {human_size(size)} on disk)" if size else ""
        if not movie.features_complete:
            return f"{name} will be prepared for fast answers{about} once its frames are indexed"
        self.prepare_film(movie.id)
        return f"{name} is being prepared for fast answers{about}: it takes its turn after the questions waiting"

    def prepare_film(self, movie_id: int, model: str | None = None) -> AskStream:
        """Queue the reading ahead of a film for fast answers with the model this service holds: it
        takes its turn like a question, reports its progress (:meth:`preparing`) and can be stopped
        (the stream's ``cancel``, or ``set_prepared(id, False)``); no second copy of the model loads."""
        movie = self.movie(movie_id)
        if not movie.features_complete:
            raise library.FeaturesNotReady(f"{movie.rel_path} is not indexed yet: it can be prepared once its "
                                           "frames are read")
        stream = self._submit(AskStream(f"prepare {movie.rel_path}", _Prepare(movie.id)), model)
        with self._lock:
            self._preparing[movie.id] = stream
        return stream

    def preparing(self) -> dict[int, str]:
        """The films this service is preparing or will prepare, with where each stands, in words."""
        with self._lock:
            streams = {i: s for i, s in self._preparing.items() if not s.finished}
            self._preparing = streams
        return {i: _where(s) for i, s in streams.items()}

    def _stop_preparing(self, movie_id: int) -> None:
        with self._lock:
            stream = self._preparing.pop(movie_id, None)
        if stream is not None and not stream.finished:
            stream.cancel()

    # -- questions ------------------------------------------------------------------------------
    def ask(self, conversation_id: int, question: str, options: SamplingOptions | None = None,
            time_budget: float | None = None, model: str | None = None) -> AskStream:
        """Queue the next question of a kept conversation; the stream starts with its place in the queue.
        The conversation is answered by the model it began with while that one is installed (a
        conversation's turns are that model's tokens; another family could not go on from them)."""
        model = self._model_of(conversation_id, model)
        return self._submit(AskStream(question, _InConversation(conversation_id), options=options,
                                      time_budget=time_budget, conversation_id=conversation_id), model)

    def ask_film(self, movie_id: int, question: str, *, history: Sequence[tuple[str, str]] = (),
                 track_id: int | None = None, fast: bool = False, options: SamplingOptions | None = None,
                 time_budget: float | None = None, model: str | None = None) -> AskStream:
        """Queue a question about a film that follows ``history`` (the earlier (question, answer)
        turns of a message list): it goes into the newest kept conversation in the same mode whose
        turns are exactly ``history`` (so a client that resends the whole list, as Open WebUI does,
        continues with that conversation's cache), else into a new one holding ``history``. The
        stream's ``conversation_id`` is set once the worker has found or made it."""
        job = _AboutFilm(movie_id, track_id, tuple((q, a) for q, a in history), fast)
        return self._submit(AskStream(question, job, options=options, time_budget=time_budget), model)

    def ask_about(self, question: str, *, images: Sequence[Any] = (), video: str | Path | None = None,
                  history: Sequence[tuple[str, str]] = (), delete_video: bool = False,
                  options: SamplingOptions | None = None, time_budget: float | None = None,
                  model: str | None = None) -> AskStream:
        """Queue a stateless question about ``images`` (files or RGB arrays), a short ``video`` file,
        or text alone, after the earlier turns ``history``; nothing is kept. ``delete_video``: the
        file is the caller's temporary copy, deleted once its frames are read (or the question ends)."""
        if images and video is not None:
            raise UserError("ask about pictures or a video, not both at once")
        job = _AboutMedia(tuple(images), Path(video) if video is not None else None,
                          tuple((q, a) for q, a in history), delete_video)
        try:
            return self._submit(AskStream(question, job, options=options, time_budget=time_budget), model)
        except BaseException:
            job.finish()  # refused: the caller's copy goes now
            raise

    def _submit(self, stream: AskStream, model: str | None) -> AskStream:
        with self._lock:
            if len(self._waiting) >= self.max_waiting:
                raise QueueFull(f"{len(self._waiting)} questions are already waiting for the model; "
                                "try again when one has been answered")
            if model is not None and model != self.shown_model:
                self._wanted = self._full_names.get(model, model)
            stream.model = self.model_name
            stream.on_end = lambda last, ended=stream: self._ended(ended, last)
            stream.control.rates = self._lv.rates if self._lv is not None else stream.control.rates
            rank = _rank(stream)
            position = sum(_rank(s) <= rank for s in self._waiting) + (self._current is not None)
            self._waiting.append(stream)
        stream.put(ChatEvent("queued", position=position))
        self._queue.put((rank, next(self._arrivals), stream))
        return stream

    def close(self) -> None:
        """Cancel the questions waiting or being answered, save the live conversation's state, stop
        the worker (a cancelled question leaves its conversation as it was, see :meth:`AskStream.cancel`)."""
        with self._lock:
            pending = [*self._waiting, *([self._current] if self._current else [])]
        for stream in pending:
            stream.cancel()
        self._queue.put((STOP_RANK, next(self._arrivals), None))
        self._worker.join(timeout=600)
        self._chats.release()
        self._qwen.release()
        self._let_go()
        self.store.close()
        self._library.close()

    # -- the worker ---------------------------------------------------------------------------------
    def _serve(self) -> None:
        while (stream := self._queue.get()[2]) is not None:
            with self._lock:
                if stream in self._waiting:
                    self._waiting.remove(stream)
                self._current = stream
            try:
                with answering(self.data.root):  # an indexer on this machine waits meanwhile (indexer.sharing)
                    self._run(stream)
            except BaseException as exc:  # noqa: BLE001 - every failure becomes an event
                event = ChatEvent.failure(exc)
                if event.kind == "internal":
                    log.error("question %r failed", stream.question, exc_info=exc)
                stream.put(event)
            finally:
                with self._lock:
                    self._current = None
                if isinstance(stream.job, _AboutMedia):
                    stream.job.finish()
                if self._lv is not None:
                    self._lv.rates.write(self._rates_file(self._lv))

    def _rates_file(self, lv: LlamaVid) -> Path:
        """Where the rates this model runs at on this machine are kept (one file per engine: the
        backend, KV type and weights, as a film's plan is keyed)."""
        key = hashlib.blake2b((lv.engine_id if isinstance(lv, QwenVL) else engine_id(lv)).encode(),
                              digest_size=8).hexdigest()
        return self.data.root / "cache" / "rates" / f"{key}.json"

    def _ended(self, stream: AskStream, last: ChatEvent) -> None:
        """A question's end in the stats and the queue's state, before its asker sees it: a health
        check made once an answer has arrived agrees with it."""
        with self._lock:
            if self._current is stream:
                self._current = None
        if last.type == "done":
            self.stats.answered += 1
        elif last.kind == "cancelled":
            self.stats.cancelled += 1
        else:
            self.stats.failed += 1

    def _run(self, stream: AskStream) -> None:
        job = stream.job
        self._switch_to(stream.model)
        if isinstance(job, _Load):
            self.model()
            return
        stream.control.check()  # cancelled while waiting
        lv = self.model()
        stream.control.rates = lv.rates
        if isinstance(lv, QwenVL):
            self._run_qwen(stream, job, lv)
            return
        if isinstance(job, _AboutMedia):
            self._answer_media(stream, job, lv)
            return
        if isinstance(job, _Prepare):
            self._prepare(stream, job, lv)
            return
        if isinstance(job, _AboutFilm):
            stream.conversation_id = self._film_conversation(job, stream.question)
        self._answer(stream)

    def _run_qwen(self, stream: AskStream, job: Any, model: QwenVL) -> None:
        """A question for the second family (:mod:`app.qwen_live`): the same queue, events and moments."""
        if isinstance(job, _Prepare):
            raise UserError("prepared films (fast answers) are made with LLaMA-VID models; a Qwen3-VL reads the "
                            "film's frames at its first question: pick a LLaMA-VID model to prepare it")
        if isinstance(job, _AboutMedia):
            self._qwen.release()  # the model answers one conversation at a time: the live one goes to disk
            first = media_turn(job.images, job.video, self.max_video_frames, stream.control.check)
            job.finish()  # its frames are read: a request's copy goes before the answer is sent
            chat = QwenChat(model, first)
            chat.replay(job.history, stream.control)
            for piece in chat.ask(stream.question, stream.options, control=stream.control,
                                  time_budget=stream.time_budget):
                stream.put(ChatEvent("text", text=piece))
            stream.put(ChatEvent("done", stopped=chat.turns[-1].stopped, notes=tuple(chat.notes)))
            return
        if isinstance(job, _AboutFilm):
            stream.conversation_id = self._film_conversation(job, stream.question)
        self._answer(stream, self._qwen)

    def _answer(self, stream: AskStream, chats: LiveChats | QwenChats | None = None) -> None:
        chats = chats or self._chats
        live = chats.take(stream.conversation_id, stream.control)
        pieces = live.chat.ask(stream.question, stream.options, control=stream.control,
                               time_budget=stream.time_budget)
        for piece in pieces:
            stream.put(ChatEvent("text", text=piece))
        turn = live.chat.turns[-1]
        try:
            moments = chats.moments(live, turn)
        except Exception:  # noqa: BLE001 - moments are a bonus: the answer is kept without them
            log.exception("moments of %r failed", turn.question)
            moments = []
        turn_id = chats.keep(live, turn, moments)
        if live.movie is not None:
            stream.put(ChatEvent("moments", moments=tuple(moments)))
        stream.put(ChatEvent("done", turn_id=turn_id, stopped=turn.stopped, notes=tuple(live.chat.notes)))

    def _prepare(self, stream: AskStream, job: _Prepare, lv: LlamaVid) -> None:
        """Read the film with the neutral first turn and keep the state, as the indexer would."""
        if isinstance(lv.backend, LlamaCppBackend):
            self._chats.release()  # a llama.cpp context holds one sequence: the live one goes to disk first
        store = LibraryStore(self._db)
        movie = library.get_movie(store, job.movie_id)
        chat, track = film_chat(lv, store, movie, self.language)
        key = prepared_key(chat, movie, track)
        if not is_current(store, movie.id, key):
            make_prepared(chat, store, self.data, movie, key, stream.control)
        size = library.get_movie(store, movie.id).prepared_bytes
        stream.put(ChatEvent("done", notes=(f"{Path(movie.rel_path).name} is prepared for fast answers "
                                            f"({human_size(size)})",)))

    def _answer_media(self, stream: AskStream, job: _AboutMedia, lv: LlamaVid) -> None:
        control = stream.control
        if isinstance(lv.backend, LlamaCppBackend):
            self._chats.release()  # a llama.cpp context holds one sequence: the live one goes to disk first
        if job.images or job.video is not None:
            lv.attach_vision()
        if job.images:  # decoded one at a time, now that the question's turn has come
            visual = lv.visual(images=job.images, check=control.check)
        elif job.video is not None:
            visual = lv.visual(video=job.video, max_frames=self.max_video_frames, check=control.check)
            job.finish()  # its frames are read: a request's copy goes before the answer is sent
        else:
            visual = Visual("none")
        control.check()
        chat = Chat(lv, visual)
        chat.replay(job.history, control)
        for piece in chat.ask(stream.question, stream.options, control=control, time_budget=stream.time_budget):
            stream.put(ChatEvent("text", text=piece))
        stream.put(ChatEvent("done", stopped=chat.turns[-1].stopped, notes=tuple(chat.notes)))

    def _film_conversation(self, job: _AboutFilm, question: str) -> int:
        """The kept conversation a message list about a film continues (see :meth:`ask_film`)."""
        wanted = list(job.history)
        if wanted:
            for conv in self.store.recent(job.movie_id):
                shown = [(t.question, t.answer) for t in self.store.get(conv.id).shown_turns]
                if conv.track_id == job.track_id and conv.fast == job.fast and shown == wanted:
                    return conv.id
        title = short_title(wanted[0][0] if wanted else question)
        conv = self.new_conversation(job.movie_id, title=title, track_id=job.track_id, fast=job.fast)
        if wanted:
            self._seed(conv, wanted)
        return conv.id

    def _seed(self, conv: Conversation, history: list[tuple[str, str]]) -> None:
        """Give a new conversation earlier turns as if they had been asked here. The answers are kept
        as the tokens the model would end with; the film is read with the first (in a fast
        conversation, with the hidden neutral turn put before them)."""
        lv = self.model()
        if isinstance(lv, QwenVL):  # the second family: its own tokens, ending as its answers end
            for question, answer in history:
                self.store.add_turn(conv.id, question, answer, lv.tokenize(answer) + list(lv.stops[:1]), False, [])
            return
        tokenizer = lv.tokenizer
        if conv.fast:
            self.store.add_turn(conv.id, PREPARED_QUESTION, PREPARED_ANSWER, neutral_answer_ids(lv), False, [],
                                hidden=True)
        for question, answer in history:
            ids = tokenizer.encode(answer, add_special_tokens=False) + [tokenizer.eos_token_id]
            self.store.add_turn(conv.id, question, answer, ids, False, [])

def _where(stream: AskStream) -> str:
    """Where a queued piece of work stands, in words: its place in the queue, or its progress."""
    last = stream.last
    if last is not None and last.type == "progress" and last.progress is not None:
        return last.progress.describe()
    return queue_position(last.position if last is not None and last.type == "queued" else 0)


def fast_by_default(movie: library.Movie | None) -> bool:
    """Whether a new conversation about the film starts in fast-answers mode unless the person
    says otherwise: yes for a prepared film (answers in seconds), no otherwise (a fast
    conversation about an unprepared film first reads the whole film, like exact mode)."""
    return bool(movie is not None and movie.prepared_bytes)


def _user_language() -> str | None:
    """The two-letter language of the user's locale ("en" for en_US.UTF-8), for the subtitle track."""
    name = locale.getlocale()[0] or ""
    return name[:2].lower() if len(name) >= 2 and name[:2].isalpha() else None


def chat_models(data: DataDir) -> list[InstalledEntry]:
    """The installed models a chat can use (the catalogue's rule, :func:`llamavid.hub.catalog.can_chat`), by name."""
    return sorted((m for m in list_models(data, sizes=False) if can_chat(m.kind)), key=lambda m: m.name)


def _shown_name(name: str | None) -> str | None:
    """A model as a person sees it: a folder (``--model /path/to/llama-vid-7b``) by its name."""
    return Path(name).name if name and ("/" in name or os.sep in name) else name


def no_model_hint(data: DataDir) -> str:
    """What to do when no chat model is installed (every front end says it the same way)."""
    return (f"install one with `llamavid models pull llama-vid-7b-full-224-long-video` (or put a checkpoint "
            f"folder in {data.models}), then restart the server or pick it in the web UI")
