"""``POST /v1/chat/completions``: the OpenAI wire format around the chat service.

A request is parsed and checked here (a 4xx in OpenAI's error shape before anything waits), then
asked through :class:`~app.chat_service.ChatService` (its one queue serves every front end); the
question's events become one JSON answer or a stream of server-sent events.

A stream, in order (every ``data:`` line a ``chat.completion.chunk``, as OpenAI's clients expect):

1. the assistant's role, with ``conversation_id`` when the answer goes into a kept conversation;
2. while the question waits and its film and prompt are read, chunks with an empty delta and a
   ``progress`` object (``phase`` queued, visual or prefill, ``done``, ``total``, ``unit``,
   ``eta_seconds``, ``message``): OpenAI clients see an empty delta and go on;
3. the answer's text, piece by piece;
4. the last chunk: ``finish_reason``, for a film the ``moments`` the answer rests on, and ``notes`` when
   the film or clip was not read whole ("...using every 3rd frame");
5. with ``stream_options.include_usage``, a chunk with ``usage`` and no choices; then ``[DONE]``.

A failure after the stream has begun is one ``data: {"error": ...}`` event and ``[DONE]``. A
client that goes away cancels its question, wherever it is (waiting, reading, answering).
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
from fastapi import Request as HttpRequest
from fastapi.responses import JSONResponse, StreamingResponse

from app.chat_service import ChatService
from app.film_words import queue_position
from app.questions import AskStream, ChatEvent
from app.server.errors import ApiError, bad_request, from_kind, not_found
from app.server.indexing import Indexer
from app.server.protocol import ChatCompletionRequest, ChatInput, parse_messages
from indexer.library import choose_track
from llamavid.errors import BadMedia
from llamavid.media.load import check_clip

KEEP_ALIVE_S = 15.0  # an SSE comment while nothing happens: proxies keep the connection, a gone client is seen
SSE_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}


async def chat_completions(body: ChatCompletionRequest, http: HttpRequest) -> Any:
    service: ChatService = http.app.state.service
    body.check_supported()
    try:
        model = service.resolve_model(body.model)
    except KeyError as exc:
        raise ApiError(404, exc.args[0], param="model", code="model_not_found") from None
    found = await anyio.to_thread.run_sync(_parse, http, body, model)  # decodes images, writes and probes a video
    stream = _ask(service, body, found, model)  # a refusal (queue full) is a UserError: the app words it
    # the model that answers: a kept conversation's own (it keeps the model it began with)
    answer = _Answer(Path(stream.model).name if stream.model else model, stream.conversation_id)
    if body.stream:
        return StreamingResponse(_sse(stream, answer, body.include_usage), media_type="text/event-stream",
                                 headers=SSE_HEADERS)
    return await _collect(stream, answer, http)


def _parse(http: HttpRequest, body: ChatCompletionRequest, model: str | None = None) -> ChatInput:
    """The request's messages, checked against the service (off the event loop: it decodes images
    and probes a video, which it writes to a file of its own)."""
    service: ChatService = http.app.state.service
    found = parse_messages(body.messages, http.app.state.settings.max_upload_bytes)
    if body.conversation_id is not None:
        _check_conversation(service, body, found)
    elif found.movie_id is not None:
        _check_movie(service, http.app.state.indexer, found, model)
    elif found.video is not None:
        found.video_path = _video_file(http.app.state.temp_dir, found)
    return found


def _ask(service: ChatService, body: ChatCompletionRequest, found: ChatInput, model: str) -> AskStream:
    """Queue the question with the service: in a kept conversation, about a film, or stateless."""
    options, budget = body.sampling(), body.time_budget
    if body.conversation_id is not None:
        return service.ask(body.conversation_id, found.question, options, budget, model=model)
    if found.movie_id is not None:
        return service.ask_film(found.movie_id, found.question, history=found.history, track_id=found.track_id,
                                fast=bool(body.fast), options=options, time_budget=budget, model=model)
    return service.ask_about(found.question, images=found.images, video=found.video_path, history=found.history,
                             delete_video=found.video_path is not None, options=options, time_budget=budget,
                             model=model)


def _check_conversation(service: ChatService, body: ChatCompletionRequest, found: ChatInput) -> None:
    if found.has_media:
        raise bad_request("a request with conversation_id continues that conversation: send only the new "
                          "question (its film is already in it)", "conversation_id")
    try:
        conv = service.conversation(body.conversation_id)
    except KeyError:
        raise not_found(f"no conversation {body.conversation_id} on this server", "conversation_id") from None
    if body.fast is not None and body.fast != conv.fast:
        mode = "fast answers" if conv.fast else "exact mode"
        raise bad_request(f"conversation {conv.id} is in {mode} and stays so; leave out fast, or start a new "
                          "conversation", "fast")


def _check_movie(service: ChatService, indexer: Indexer, found: ChatInput, model: str | None = None) -> None:
    try:
        movie = service.movie(found.movie_id)
    except KeyError:
        raise not_found(f"no movie {found.movie_id} in the library (GET /v1/movies lists them)",
                        f"{found.movie_param}.movie_id") from None
    if not movie.features_complete:
        moved = indexer.open_film(movie.id)  # asked about: it is indexed next
    if not service.can_ask(movie, model):
        first = "; it is now first in the indexing queue" if moved else ""
        raise from_kind("not_ready", f"{movie.rel_path} is not indexed yet (state {movie.state}{first}); wait "
                                     "for the indexer, or run `llamavid index run`", f"{found.movie_param}.movie_id")
    if found.track_id is not None:
        try:
            choose_track(movie, track_id=found.track_id)
        except KeyError as exc:
            raise not_found(exc.args[0], f"{found.movie_param}.subtitle_track") from None


def _video_file(temp_dir: Path, found: ChatInput) -> Path:
    """The request's video as a file of its own in the server's temporary folder, probed now (a bad
    file is a 400 before it waits in the queue); the service deletes it once its frames are read."""
    video = found.video
    fd, name = tempfile.mkstemp(suffix=video.suffix, prefix="request-", dir=temp_dir)
    path = Path(name)
    with open(fd, "wb") as fh:
        fh.write(video.data)
    try:
        check_clip(path, video.param)
    except BadMedia as exc:
        path.unlink(missing_ok=True)
        raise ApiError(400, str(exc), param=video.param, code="bad_media") from None
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


class _Answer:
    """What one answer is put together from, for both shapes of response."""

    def __init__(self, model: str, conversation_id: int | None):
        self.id = "chatcmpl-" + uuid.uuid4().hex[:24]
        self.created = int(time.time())
        self.model = model
        self.conversation_id = conversation_id
        self.text: list[str] = []
        self.moments: list[dict] | None = None
        self.turn_id: int | None = None
        self.notes: list[str] = []  # how the film or clip was read when not whole (every 3rd frame...)
        self.prompt_tokens = 0
        self.answer_tokens = 0
        self.answer_budget = 0

    def see(self, event: ChatEvent, stream: AskStream) -> None:
        self.conversation_id = stream.conversation_id
        if event.type == "text":
            self.text.append(event.text)
        elif event.type == "progress" and event.progress is not None:
            p = event.progress
            if p.phase == "prefill" and p.done == 0:  # each prefill starts at 0: earlier turns, then the question
                self.prompt_tokens += p.total
            elif p.phase == "answer":
                self.answer_tokens, self.answer_budget = p.done, p.total
        elif event.type == "moments":
            self.moments = [m.to_dict() for m in event.moments]
        elif event.type == "done":
            self.turn_id, self.notes = event.turn_id, list(event.notes)

    @property
    def finish_reason(self) -> str:
        return "length" if self.answer_budget and self.answer_tokens >= self.answer_budget else "stop"

    def usage(self) -> dict[str, int]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.answer_tokens,
                "total_tokens": self.prompt_tokens + self.answer_tokens}

    def extras(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.conversation_id is not None:
            out["conversation_id"] = self.conversation_id
            out["turn_id"] = self.turn_id
        if self.moments is not None:
            out["moments"] = self.moments
        if self.notes:
            out["notes"] = self.notes
        return out

    def completion(self) -> dict[str, Any]:
        return {"id": self.id, "object": "chat.completion", "created": self.created, "model": self.model,
                "system_fingerprint": None,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(self.text)},
                             "logprobs": None, "finish_reason": self.finish_reason}],
                "usage": self.usage(), **self.extras()}

    def chunk(self, delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        data = {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "system_fingerprint": None,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}], **extra}
        return _data(data)


def _data(obj: Any) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


def progress_object(event: ChatEvent) -> dict[str, Any]:
    if event.type == "queued":
        return {"phase": "queued", "position": event.position, "message": queue_position(event.position)}
    out = event.to_dict()
    out.pop("type", None)
    return out


async def _sse(stream: AskStream, answer: _Answer, include_usage: bool) -> AsyncIterator[str]:
    """The stream (see the module docstring); leaving early (a closed connection) cancels the question."""
    try:
        first = True
        async for batch in stream.batches(idle=KEEP_ALIVE_S):
            if not batch:
                yield ": keep-alive\n\n"
                continue
            out: list[str] = []
            if first:
                first = False
                out.append(answer.chunk({"role": "assistant", "content": ""}, **_conv(stream)))
            text: list[str] = []  # text pieces that arrived together go out as one chunk
            for event in batch:
                answer.see(event, stream)
                if event.type == "text":
                    text.append(event.text)
                    continue
                if text:
                    out.append(answer.chunk({"content": "".join(text)}))
                    text = []
                if event.type == "queued" or (event.type == "progress" and event.progress.phase != "answer"):
                    out.append(answer.chunk({}, progress=progress_object(event)))
                elif event.type == "error":
                    out.append(_data(from_kind(event.kind, event.text).body()))
                elif event.type == "done":
                    out.append(answer.chunk({}, answer.finish_reason, **answer.extras()))
                    if include_usage:
                        out.append(_data({"id": answer.id, "object": "chat.completion.chunk",
                                          "created": answer.created, "model": answer.model, "choices": [],
                                          "usage": answer.usage()}))
            if text:
                out.append(answer.chunk({"content": "".join(text)}))
            yield "".join(out)
        yield "data: [DONE]\n\n"
    finally:
        if not stream.finished:
            stream.cancel()


def _conv(stream: AskStream) -> dict[str, Any]:
    conversation_id = stream.conversation_id
    return {"conversation_id": conversation_id} if conversation_id is not None else {}


async def _collect(stream: AskStream, answer: _Answer, http: HttpRequest) -> JSONResponse:
    """The whole answer as one JSON object; a client that disconnects meanwhile cancels it."""
    async def watch_disconnect() -> None:
        while True:
            message = await http.receive()
            if message["type"] == "http.disconnect":
                stream.cancel()
                return

    watcher = asyncio.ensure_future(watch_disconnect())
    try:
        async for event in stream.events():
            answer.see(event, stream)
            if event.type == "error":
                raise from_kind(event.kind, event.text)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await watcher
        if not stream.finished:
            stream.cancel()
    return JSONResponse(answer.completion())
