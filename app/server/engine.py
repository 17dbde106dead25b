"""The one gate in front of the model, shared by the API and the web UI.

Every question, whichever route or tab it comes from, becomes a :class:`Request` in one
first-come queue served by one worker thread, because one model answers one question at a time.
The worker answers it in one of two ways:

* :class:`ConversationJob`: a kept conversation (a film, or text) through the chat service
  (:class:`app.chat_service.ChatService`): its KV cache, moments and stored turns. The worker asks
  the service and relays the service's events; nothing else reaches the model meanwhile, so the
  service's own queue never holds more than this one question.
* :class:`DirectJob`: a stateless request (images, a short video, or text with the earlier turns
  of a message list) on a :class:`~llamavid.runtime.chat.Chat` built here on the service's model;
  the service offers no image or video conversations. EVA, which the service does not load (films
  come with cached features), is attached to the model on the first such request.

A :class:`Request` is read as it happens, from a thread (``for event in request``) or from the
event loop (``async for event in request.events()``): the loop never waits on the model. It can
be cancelled from any thread at any point: waiting, reading, answering.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import os
import queue
import shutil
import tempfile
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from app.chat_service import ERROR_KINDS, ChatEvent, ChatService
from app.conversations import Conversation
from app.server.settings import ServerSettings
from app.settings import load_settings
from llamavid.errors import Cancelled, CheckpointError, ContextOverflow, UserError
from llamavid.files import EVA_FILE, find_part
from llamavid.hub.installed import InstalledEntry, list_models, search_dirs
from llamavid.model.eva import EvaVisionTower
from llamavid.paths import DataDir
from llamavid.runtime.api import LlamaVid
from llamavid.runtime.chat import Chat, Turn
from llamavid.runtime.control import Control
from llamavid.runtime.generate import SamplingOptions
from llamavid.runtime.inputs import Visual
from llamavid.runtime.llamacpp import LlamaCppBackend

log = logging.getLogger(__name__)

FINAL = ("done", "error")
#: Installed kinds a chat can use (speech models serve the indexer; a bare LLM has no vision side).
CHAT_KINDS_EXCLUDED = ("speech", "base-llm")


class QueueFull(UserError):
    """More questions wait than the server allows (``max_waiting``): try again later."""


class NoModel(UserError):
    """No chat model is installed or chosen; the message says how to get one."""


# -- requests ------------------------------------------------------------------------------------
class Request:
    """The events of one question, in order (queued, progress..., text..., moments, done | error)."""

    _ids = itertools.count(1)

    def __init__(self, job: Job):
        self.id = next(self._ids)
        self.job = job
        self.conversation_id: int | None = getattr(job, "conversation_id", None)
        self.model: str | None = None  # the model it is asked of (set by Engine.submit)
        self._events: list[ChatEvent] = []
        self._cond = threading.Condition()
        self._listeners: list[Callable[[], None]] = []
        self._cancelled = False
        self._canceller: Callable[[], None] | None = None

    # the worker's side
    def put(self, event: ChatEvent) -> None:
        with self._cond:
            if self._events and self._events[-1].type in FINAL:
                return  # the stream has ended; nothing may follow its last event
            self._events.append(event)
            self._cond.notify_all()
            listeners = list(self._listeners)
        for wake in listeners:
            wake()

    def attach(self, canceller: Callable[[], None]) -> None:
        """What stops the work now under way (the service's stream, a Control); runs at once if
        the request was cancelled before it started."""
        with self._cond:
            self._canceller = canceller
            cancelled = self._cancelled
        if cancelled:
            canceller()

    # anyone's side
    def cancel(self) -> None:
        """Stop this question wherever it is; an ``error`` event of kind ``cancelled`` ends the stream."""
        with self._cond:
            self._cancelled = True
            canceller = self._canceller
        if canceller is not None:
            canceller()

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    @property
    def finished(self) -> bool:
        with self._cond:
            return bool(self._events) and self._events[-1].type in FINAL

    def __iter__(self) -> Iterator[ChatEvent]:
        seen = 0
        while True:
            with self._cond:
                while seen >= len(self._events):
                    self._cond.wait()
                batch = self._events[seen:]
                seen = len(self._events)
            for event in batch:
                yield event
                if event.type in FINAL:
                    return

    async def batches(self, idle: float | None = None) -> AsyncIterator[list[ChatEvent]]:
        """The events from the event loop, as many at a time as have arrived, without a thread per
        reader: the worker wakes the loop (``call_soon_threadsafe``). With ``idle`` seconds, an empty
        batch comes whenever that long passes without an event (a server-sent-events keep-alive)."""
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()

        def notify() -> None:
            try:
                loop.call_soon_threadsafe(wake.set)
            except RuntimeError:  # the loop has closed: nobody is reading any more
                pass

        with self._cond:
            self._listeners.append(notify)
        try:
            seen = 0
            while True:
                wake.clear()
                with self._cond:
                    batch = self._events[seen:]
                    seen = len(self._events)
                if not batch:
                    try:
                        await asyncio.wait_for(wake.wait(), idle)
                    except asyncio.TimeoutError:
                        yield []
                    continue
                final = next((i for i, e in enumerate(batch) if e.type in FINAL), None)
                yield batch if final is None else batch[:final + 1]
                if final is not None:
                    return
        finally:
            with self._cond:
                self._listeners.remove(notify)

    async def events(self) -> AsyncIterator[ChatEvent]:
        """The events one by one, from the event loop (see :meth:`batches`)."""
        async for batch in self.batches():
            for event in batch:
                yield event

    @property
    def last(self) -> ChatEvent | None:
        with self._cond:
            return self._events[-1] if self._events else None


# -- jobs ------------------------------------------------------------------------------------------
@dataclass
class ConversationJob:
    """A question in a kept conversation; ``prepare(engine)`` may make the conversation first
    (in the worker: it may need the model's tokenizer) and returns its id."""

    question: str
    options: SamplingOptions | None = None
    conversation_id: int | None = None
    prepare: Callable[[Engine], int] | None = None
    time_budget: float | None = None


@dataclass
class DirectJob:
    """A stateless question: ``images`` (RGB arrays) or a ``video`` file, or neither; ``history``
    holds the earlier (question, answer) turns of the message list. ``cleanup`` runs when the job
    ends (a temporary video file is deleted)."""

    question: str
    options: SamplingOptions | None = None
    images: Sequence[np.ndarray] = ()
    video: Path | None = None
    history: Sequence[tuple[str, str]] = ()
    cleanup: Callable[[], None] | None = None
    time_budget: float | None = None


@dataclass
class _LoadJob:
    """Load the model before the first question (the server's start)."""


Job = ConversationJob | DirectJob | _LoadJob


@dataclass
class Stats:
    answered: int = 0
    cancelled: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


# -- the engine ------------------------------------------------------------------------------------
class Engine:
    """The chat service, the installed models and the one queue in front of the model."""

    def __init__(self, settings: ServerSettings, service: ChatService | None = None):
        self.settings = settings
        self.data = DataDir(settings.data_dir).create()
        saved = load_settings(self.data)
        self.language = settings.language or saved.language
        self.load_options = {**saved.load_options(), **settings.load_options}
        self.load_error: str | None = None
        self._loaded = False
        self._service_has_live = False  # the service holds a live conversation (in the llama.cpp context)
        self.stats = Stats()
        self._models_cache: tuple[float, list[InstalledEntry]] | None = None
        self._service = service or ChatService(self.data.root, model=self._default_model(saved.model),
                                               language=self.language, **self.load_options)
        first = self._service.model_name
        self._full_names = {self._shown_name(first): first} if first else {}  # a --model folder, by its name
        self._queue: queue.Queue[Request | None] = queue.Queue()
        self._waiting: list[Request] = []
        self._current: Request | None = None
        self._wanted_model: str | None = None
        self._lock = threading.Lock()
        self.temp_dir = Path(tempfile.mkdtemp(prefix="llamavid-server-"))  # videos sent in requests, briefly
        self._worker = threading.Thread(target=self._serve, name="llamavid-server", daemon=True)
        self._worker.start()

    # -- models --------------------------------------------------------------------------------------
    def _default_model(self, saved: str | None) -> str | None:
        if self.settings.model:
            return self.settings.model
        if saved:
            return saved
        chat = self.models()
        return chat[0].name if chat else None

    def models(self) -> list[InstalledEntry]:
        """Installed models a chat can use, by name (a directory listing: cheap, cached while the
        models folder is unchanged)."""
        try:
            stamp = os.stat(self.data.models).st_mtime
        except OSError:
            stamp = 0.0
        cached = self._models_cache
        if cached is None or cached[0] != stamp:
            found = [m for m in list_models(self.data, sizes=False) if m.kind not in CHAT_KINDS_EXCLUDED]
            self._models_cache = cached = (stamp, sorted(found, key=lambda m: m.name))
        return cached[1]

    @property
    def service(self) -> ChatService:
        return self._service

    @property
    def model_name(self) -> str | None:
        """The model the next question is answered by (the last one chosen: by the picker, or by a
        request's ``model``); the one loaded may still be another while a switch waits its turn."""
        return self._shown_name(self._wanted_model or self._service.model_name)

    @property
    def model_loaded(self) -> bool:
        return self._loaded and self._wanted_model is None

    def resolve_model(self, requested: str | None) -> str:
        """The served model for a request's ``model`` field: empty or the served name (or its
        folder) means the current one; another installed chat model switches to it (between
        questions, in queue order); anything else is a KeyError (404 model_not_found)."""
        current = self.model_name
        if requested and requested != current and any(m.name == requested for m in self.models()):
            return requested
        if current is None:
            raise NoModel("no chat model is installed: " + no_model_hint(self.data))
        if not requested or requested in (current, self._service.model_name):
            return current
        names = ", ".join(m.name for m in self.models()) or "none"
        raise KeyError(f"model {requested!r} is not installed here; installed chat models: {names}")

    def select_model(self, name: str) -> None:
        """Answer the next questions with another installed model; it loads in the background, after
        the questions already waiting (which keep the model they were asked of)."""
        if name == self.model_name:
            return
        if not any(m.name == name for m in self.models()):
            raise KeyError(f"model {name!r} is not installed here")
        with self._lock:
            self._wanted_model = name
        self.warm_up()

    @staticmethod
    def _shown_name(name: str | None) -> str | None:
        return Path(name).name if name and ("/" in name or os.sep in name) else name

    # -- the queue -----------------------------------------------------------------------------------
    def submit(self, job: Job, model: str | None = None) -> Request:
        """Queue a question for ``model`` (None: :attr:`model_name`); the returned request starts
        with its place in the queue."""
        request = Request(job)
        with self._lock:
            if model is not None and model != self._shown_name(self._service.model_name):
                self._wanted_model = model
            request.model = model or self._shown_name(self._wanted_model or self._service.model_name)
            if len(self._waiting) >= self.settings.max_waiting:
                raise QueueFull(f"{len(self._waiting)} questions are already waiting for the model; "
                                "try again when one has been answered")
            position = len(self._waiting) + (self._current is not None)
            self._waiting.append(request)
        request.put(ChatEvent("queued", position=position))
        self._queue.put(request)
        return request

    def warm_up(self) -> None:
        """Load the model in the worker now, so the first question does not wait for it."""
        if self.model_name is not None:
            request = Request(_LoadJob())
            request.model = self.model_name
            self._queue.put(request)

    def status(self) -> dict[str, Any]:
        with self._lock:
            waiting, busy = len(self._waiting), self._current is not None
        return {"model": self.model_name, "model_loaded": self.model_loaded, "load_error": self.load_error,
                "busy": busy, "waiting": waiting, "answered": self.stats.answered,
                "cancelled": self.stats.cancelled, "failed": self.stats.failed}

    def close(self) -> None:
        """Stop the question under way, drop the queue, close the service."""
        with self._lock:
            pending = [*self._waiting, *([self._current] if self._current else [])]
        for request in pending:
            request.cancel()
        self._queue.put(None)
        self._worker.join(timeout=120)
        self._service.close()
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def _serve(self) -> None:
        while (request := self._queue.get()) is not None:
            with self._lock:
                if request in self._waiting:
                    self._waiting.remove(request)
                self._current = request
            try:
                self._run(request)
            except BaseException as exc:  # noqa: BLE001 - every failure becomes an event
                request.put(error_event(exc))
            finally:
                with self._lock:
                    self._current = None
                self._count(request)

    def _count(self, request: Request) -> None:
        if isinstance(request.job, _LoadJob):
            return
        last = request.last
        if last is None or last.type == "done":
            self.stats.answered += 1
        elif last.kind == "cancelled":
            self.stats.cancelled += 1
        else:
            self.stats.failed += 1

    def _switch_to(self, name: str | None) -> None:
        """Make ``name`` the resident model (in the worker, between questions)."""
        if name is None or name == self._shown_name(self._service.model_name):
            return
        old = self._service
        self._service = ChatService(self.data.root, model=self._full_names.get(name, name), language=self.language,
                                    **self.load_options)
        self.load_error, self._loaded, self._service_has_live = None, False, False
        with self._lock:
            if self._wanted_model == name:
                self._wanted_model = None
        old.close()

    def _run(self, request: Request) -> None:
        job = request.job
        try:
            self._switch_to(request.model)
            if isinstance(job, _LoadJob):
                self._load()
                return
            if request.cancelled:
                raise Cancelled("stopped by request")
            if isinstance(job, ConversationJob):
                self._ask_conversation(request, job)
            else:
                self._ask_direct(request, job)
        finally:
            if isinstance(job, DirectJob) and job.cleanup is not None:
                job.cleanup()

    def _load(self) -> LlamaVid:
        try:
            lv = self._service.model()
        except UserError as exc:
            self.load_error = str(exc)
            raise
        self._loaded = True
        return lv

    def model(self) -> LlamaVid:
        """The loaded model (from the worker thread only: it may load it)."""
        return self._load()

    def _ask_conversation(self, request: Request, job: ConversationJob) -> None:
        service = self._service
        conversation_id = job.prepare(self) if job.prepare is not None else job.conversation_id
        if conversation_id is None:
            raise ValueError("a conversation job needs a conversation id or a prepare step")
        request.conversation_id = conversation_id
        self._load()
        self._service_has_live = True
        stream = service.ask(conversation_id, job.question, job.options, job.time_budget)
        request.attach(stream.cancel)
        for event in stream:
            if event.type != "queued":  # the service's queue holds only this question
                request.put(event)

    def _hand_over_llama_cpp(self) -> None:
        """A llama.cpp context holds one conversation: before a stateless chat takes it, the
        service's live conversation is saved and let go (it reads its state back next time)."""
        self._service.suspend()
        self._service_has_live = False

    def _ask_direct(self, request: Request, job: DirectJob) -> None:
        lv = self._load()
        control = Control(on_progress=lambda p: request.put(ChatEvent("progress", progress=p)), rates=lv.rates)
        request.attach(control.cancel)
        if isinstance(lv.backend, LlamaCppBackend) and self._service_has_live:
            self._hand_over_llama_cpp()
        if job.images or job.video is not None:
            ensure_vision(lv, self.data)
        if job.images:
            visual = lv.visual(images=list(job.images))
        elif job.video is not None:
            visual = lv.visual(video=job.video, max_frames=self.settings.max_video_frames)
            if job.cleanup is not None:  # its frames are read: the file goes before the answer is sent
                job.cleanup()
        else:
            visual = Visual("none")
        control.check()
        chat = Chat(lv, visual)
        replay_history(chat, job.history, control)
        for piece in chat.ask(job.question, job.options, control=control, time_budget=job.time_budget):
            request.put(ChatEvent("text", text=piece))
        request.put(ChatEvent("done", stopped=chat.turns[-1].stopped))

    # -- conversations ---------------------------------------------------------------------------------
    def conversation_with_history(self, movie_id: int, track_id: int | None,
                                  history: Sequence[tuple[str, str]], question: str, fast: bool = False) -> int:
        """The film conversation to ask in for a stateless message list: the newest kept one in the
        same mode (``fast``: begun from the film's prepared state) whose turns are exactly
        ``history`` (so a client that resends the whole list, as Open WebUI does, continues with the
        conversation's cache), else a new one holding ``history`` as its turns. Runs in the worker
        (it may need the model's tokenizer)."""
        service = self._service
        wanted = [tuple(pair) for pair in history]
        if wanted:
            for conv in service.conversations(movie_id):
                shown = [(t.question, t.answer) for t in _shown(service.conversation(conv.id))]
                if conv.track_id == track_id and conv.fast == fast and shown == wanted:
                    return conv.id
        title = short_title(history[0][0] if history else question)
        conv = service.new_conversation(movie_id, title=title, track_id=track_id, fast=fast)
        if wanted:
            service.seed(conv.id, list(wanted))
        return conv.id


def _shown(conv: Conversation) -> list:
    return list(getattr(conv, "shown_turns", conv.turns))


def short_title(question: str | None) -> str | None:
    if not question:
        return None
    text = " ".join(question.split())
    return text if len(text) <= 60 else text[:57] + "..."


# -- helpers the worker uses ---------------------------------------------------------------------
def error_event(exc: BaseException) -> ChatEvent:
    """An exception as the service words it: an ``error`` event with its kind (see ERROR_KINDS)."""
    if isinstance(exc, QueueFull):
        kind = "queue_full"
    elif isinstance(exc, NoModel):
        kind = "no_model"
    else:
        kind = next((k for t, k in ERROR_KINDS.items() if isinstance(exc, t)), "internal")
    if kind == "internal":
        log.error("request failed", exc_info=exc)
    message = str(exc).strip("'\"") or exc.__class__.__name__
    return ChatEvent("error", text=message, kind=kind)


_vision_lock = threading.Lock()


def ensure_vision(lv: LlamaVid, data: DataDir) -> None:
    """Give the model its EVA tower, the first time an image or a video is asked about.

    The chat service loads models without EVA (films come with cached features). The weights are
    found as a chat loads them: the checkpoint folder first, then ``<data>/models/shared``; the
    tower runs where the model runs, in its dtype.
    """
    with _vision_lock:
        if lv.model.model.vision_tower is not None:
            return
        path = find_part(EVA_FILE, lv.report.folder, None, search_dirs(data))
        if path is None:
            raise CheckpointError(f"no vision weights ({EVA_FILE}) for images and videos: `llamavid models pull` "
                                  f"fetches them into {search_dirs(data)[0]}, or put the file in "
                                  f"{lv.report.folder}")
        anchor = lv.model.model.vlm_att_query
        tower = EvaVisionTower.from_file(path, image_size=lv.image_size, device=anchor.device, dtype=anchor.dtype)
        lv.model.model.vision_tower = tower
        lv.config.mm_vision_tower = EVA_FILE


def replay_history(chat: Chat, history: Sequence[tuple[str, str]], control: Control) -> None:
    """Read earlier (question, answer) turns of a message list into a new chat's cache, as if the
    chat had answered them: each turn's prompt and the given answer in one prefill (with progress),
    ending as a generated answer ends (the end-of-sequence token)."""
    if not history:
        return
    lv = chat.lv
    tokenizer, limit = lv.tokenizer, chat.backend.context_length()
    if tokenizer is None:
        raise CheckpointError(f"{lv.report.folder}: no LLaMA tokenizer (tokenizer.model) in the checkpoint folder")
    eos = tokenizer.eos_token_id
    for question, answer in history:
        control.check()
        plan = chat.plan(question)
        answer_ids = tokenizer.encode(answer, add_special_tokens=False) + [eos]
        needed = chat.state.length + plan.tokens + len(answer_ids)
        if needed + 1 > limit:
            raise ContextOverflow(f"the earlier messages need {needed} tokens, more than the model's {limit}-token "
                                  "context; send fewer of them", needed=needed, limit=limit)
        ids, slots = chat.turn_ids(question)
        tracker = control.phase("prefill", len(ids) + len(answer_ids) - 1 + len(chat.state.pending), "tokens")
        chat.backend.feed(chat.state, ids + answer_ids[:-1], slots, on_prefill=lambda n, total, t=tracker: t.update(n))
        tracker.finish()
        chat.state.seen_ids.append(eos)
        chat.state.pending = [eos]
        chat.last_token = eos
        chat.turns.append(Turn(question, answer, len(answer_ids), False, answer_ids))


def no_model_hint(data: DataDir) -> str:
    return (f"install one with `llamavid models pull llama-vid-7b-full-224-long-video` (or put a checkpoint "
            f"folder in {data.models}), then restart the server or pick it in the web UI")
