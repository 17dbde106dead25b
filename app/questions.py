"""A question as its asker sees it: the events it makes, read from a thread or an event loop.

:class:`~app.chat_service.ChatService` answers questions one at a time on its worker thread; each
question it accepts is an :class:`AskStream`. The worker puts :class:`ChatEvent` objects into it as
they happen (its place in the queue, progress of the Q-Former pass and the prefill, the answer's
text piece by piece, the moments it rests on, then ``done`` or ``error``). A window or the command
line iterates it on a thread of its own; the server reads it on its event loop without a thread per
reader (:meth:`AskStream.batches`: the worker wakes the loop). Any thread may cancel it, wherever
the question is (waiting, reading, answering).
"""
from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from app.moments import Moment
from llamavid.errors import Cancelled, UserError, error_kind, error_message
from llamavid.runtime.control import Control, Progress, Rates

FINAL = ("done", "error")


@dataclass(frozen=True)
class ChatEvent:
    """One thing that happened to a question: ``type`` is queued, progress, text, moments, done or error."""

    type: str
    text: str = ""  # text: the new piece of the answer; error: the message
    progress: Progress | None = None
    moments: tuple[Moment, ...] = ()
    position: int = 0  # queued: requests ahead of this one
    kind: str = ""  # error: the error's kind (llamavid.errors.error_kind); "internal" for a bug
    turn_id: int | None = None  # done: the kept turn (None when the turn was not kept)
    stopped: bool = False  # done: the answer was cut short by the caller
    notes: tuple[str, ...] = ()  # done: what a person should know about how it was read (every 3rd frame...)

    @classmethod
    def failure(cls, exc: BaseException) -> ChatEvent:
        """The ``error`` event of an exception: its kind and message come from the error itself."""
        return cls("error", text=error_message(exc), kind=error_kind(exc))

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
            out.update(turn_id=self.turn_id, stopped=self.stopped, notes=list(self.notes))
        return out


class AskStream:
    """The events of one question, in order (queued, progress..., text..., moments, done | error).

    ``conversation_id`` is the kept conversation the answer goes into, set as soon as it is known
    (a question about a film by message list finds or makes its conversation on the worker);
    None for a stateless question.
    """

    _ids = itertools.count(1)

    def __init__(self, question: str, job: Any, model: str | None = None, options: Any = None,
                 time_budget: float | None = None, conversation_id: int | None = None, rates: Rates | None = None,
                 on_end: Callable[[ChatEvent], None] | None = None):
        """``on_end`` runs with the last event (done or error) before any reader sees it: a count
        kept by the asker is already up to date when the stream ends."""
        self.id = next(self._ids)
        self.question, self.job, self.model = question, job, model
        self.options, self.time_budget = options, time_budget
        self.conversation_id = conversation_id
        self.control = Control(on_progress=lambda p: self.put(ChatEvent("progress", progress=p)), rates=rates)
        self._events: list[ChatEvent] = []
        self._cond = threading.Condition()
        self._listeners: list[Callable[[], None]] = []
        self.on_end = on_end

    # -- the worker's side ---------------------------------------------------------------------------
    def put(self, event: ChatEvent) -> None:
        with self._cond:
            if self._events and self._events[-1].type in FINAL:
                return  # the stream has ended; nothing may follow its last event
            if event.type in FINAL and self.on_end is not None:
                self.on_end(event)
            self._events.append(event)
            self._cond.notify_all()
            listeners = list(self._listeners)
        for wake in listeners:
            wake()

    # -- anyone's side -------------------------------------------------------------------------------
    def cancel(self) -> None:
        """Stop this question wherever it is (waiting, reading the film, answering); the
        conversation is left as if it had not been asked, and an ``error`` event of kind
        ``cancelled`` ends the stream."""
        self.control.cancel()

    @property
    def cancelled(self) -> bool:
        return self.control.cancelled

    @property
    def finished(self) -> bool:
        with self._cond:
            return bool(self._events) and self._events[-1].type in FINAL

    @property
    def last(self) -> ChatEvent | None:
        with self._cond:
            return self._events[-1] if self._events else None

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

    def text(self) -> str:
        """Wait for the end and return the whole answer (raises the error of an ``error`` event)."""
        pieces = []
        for event in self:
            if event.type == "text":
                pieces.append(event.text)
            elif event.type == "error":
                raise (Cancelled(event.text) if event.kind == "cancelled" else UserError(event.text))
        return "".join(pieces)

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
