"""``llamavid mcp``: the movie library and its chat as MCP tools, over stdio, for other assistants.

Built on the official ``mcp`` SDK (version 2: ``MCPServer``, what version 1 called ``FastMCP``) and
on one :class:`~app.chat_service.ChatService`: the same engine, queue and kept conversations as the
desktop app, the web UI and the OpenAI-compatible API; this module keeps no queue and no model of
its own. Three tools:

* ``list_films``: the library's films (id, title, path, duration, index state, prepared for fast answers);
* ``search``: the subtitle lines of every film closest to a quote or a paraphrase, and the scenes
  that look like a description ("a beach at night"), scored 0 to 1 (:func:`indexer.scenes_search.search_library`,
  the library's one search, as ``llamavid index search`` and the server's ``GET /v1/search``; scenes
  where the scene model is installed);
* ``ask_film``: a question about a film, or the next question of a conversation it began: the
  answer, the moments it rests on (start, end, why; from the index, never from text the model
  wrote) and the conversation id to continue with. Progress (waiting, reading the film, reading
  the prompt, answering) goes out as MCP progress notifications when the client sends a progress
  token; a client that cancels the request cancels the question wherever it is.

A failure is a tool error (``isError``) carrying the app's own message for a person ("no film 9 in
the library (list_films lists them)", "... is not indexed yet", a memory refusal saying what to
free). The model loads on the first question (``--preload``: at start). docs/mcp.md says how to
add the server to Claude Desktop and other MCP clients.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from contextlib import aclosing, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ToolAnnotations
from pydantic import BaseModel, Field

from app.settings import load_settings
from llamavid.errors import UserError, error_message
from llamavid.paths import DataDir
from llamavid.runtime.options import LoadOptions
from llamavid.system import llamavid_version

if TYPE_CHECKING:  # the chat service imports torch: it is made on a thread of its own once the server runs
    from app.chat_service import AskStream, ChatEvent, ChatService
    from indexer.db import ThreadConnections
    from indexer.library import Movie

__all__ = ["Answer", "Film", "Films", "Found", "Quote", "create_server", "make_service", "serve"]

log = logging.getLogger(__name__)

NAME = "llamavid"
INSTRUCTIONS = (
    "A local movie library with a video model that has watched each film. Call list_films for the films "
    "and their ids, search to find where a line is said, and ask_film to ask about a film: the answer "
    "comes with moments (start and end in seconds, and why each was chosen) and a conversation_id; pass "
    "that conversation_id with the next question to continue (the film is not read again). The first "
    "question about a film can take minutes on a CPU unless the film is prepared (list_films: prepared)."
)
#: SQLite's INTEGER is a signed 64-bit number: an id beyond it cannot exist
MAX_ID = 2**63 - 1
Id = Annotated[int, Field(ge=1, le=MAX_ID)]
MAX_ANSWER_TOKENS = 2**20  # as the API's max_tokens: the context limits an answer further
#: progress of a question, 0-100, by phase: reading the film, reading the prompt, writing the answer
SPANS = {"visual": (0.0, 60.0), "prefill": (60.0, 90.0), "answer": (90.0, 100.0)}


# -- what the tools return (each also the tool's output schema) ----------------------------------------
class Film(BaseModel):
    id: int = Field(description="the film's id, for ask_film and search")
    title: str
    path: str = Field(description="its file, relative to its library folder")
    duration_seconds: float | None
    duration: str = Field(description='"1:42:03"')
    state: str = Field(description="index state: new, queued, running, paused, done, failed, cancelled, missing")
    indexed: bool = Field(description="ready for questions")
    status: str = Field(description='the index state for a person: "ready to chat", "indexing, ... 3 min left"')
    prepared: bool = Field(description="prepared for fast answers: a new question costs seconds, not minutes")
    subtitles: str = Field(description='which subtitles it has: "subtitles: subtitle files (en)"')


class Films(BaseModel):
    films: list[Film]


class Quote(BaseModel):
    film_id: int
    title: str
    start: float = Field(description="seconds into the film")
    end: float
    at: str = Field(description='where, as a player shows it: "40:12"')
    text: str = Field(description="the subtitle line")
    score: float = Field(description="how closely the line says the query, 0 to 1 (1: word for word)")


class Scene(BaseModel):
    film_id: int
    title: str
    start: float = Field(description="seconds into the film: where the stretch that looks like the query begins")
    end: float
    at: str = Field(description='where, as a player shows it: "40:12"')
    score: float = Field(description="how much the pictures look like the query, 0 to 1")


class Found(BaseModel):
    query: str
    quotes: list[Quote] = Field(description="lines of dialogue, best first")
    scenes: list[Scene] = Field(default_factory=list, description="stretches of film that look like the query, "
                                                                  "best first")
    note: str | None = Field(default=None, description="why scenes were not searched, when they were not")


class MomentOut(BaseModel):
    start: float = Field(description="seconds into the film")
    end: float
    at: str = Field(description='"40:12-40:16"')
    score: float
    why: list[str] = Field(description="what points there: a subtitle the question or answer shares words "
                                       "with (\"subtitle: ...\"), frames that look like the question "
                                       "(\"scene: ...\"), or frames the question weighed most")


class Answer(BaseModel):
    answer: str
    conversation_id: int | None = Field(description="pass it with the next question to continue this conversation")
    film_id: int | None
    title: str | None
    turn_id: int | None
    moments: list[MomentOut] = Field(description="where in the film the answer comes from, best first")
    fast: bool = Field(description="the conversation began from the film's prepared state")
    truncated: bool = Field(description="the answer reached the answer length (llamavid mcp --max-tokens) and "
                                        "was cut there")
    notes: list[str] = Field(description="how the film was read, when not whole (every 3rd frame...)")


# -- the server ------------------------------------------------------------------------------------------
class _State:
    """What the tools share: the chat service, made on a thread of its own when the server starts
    (importing torch and the model library takes seconds: the client's handshake does not wait for
    it, the first tool call does), and a library connection per thread for the tools' own reads."""

    def __init__(self, make: Callable[[], ChatService], preload: bool):
        self._make, self._preload = make, preload
        self._service: Future[ChatService] = Future()
        self._library: ThreadConnections | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        threading.Thread(target=self._build, name="llamavid-mcp-start", daemon=True).start()

    def _build(self) -> None:
        try:
            service = self._make()
            if self._preload:
                service.warm_up()
            self._service.set_result(service)
        except BaseException as exc:  # noqa: BLE001 - every tool call reports it
            log.exception("the chat service could not start")
            self._service.set_exception(exc)

    def get(self) -> ChatService:
        """The chat service, once made (call it off the event loop: it may wait for the start)."""
        try:
            return self._service.result()
        except UserError as exc:  # a damaged settings.json...
            raise ToolError(error_message(exc)) from None
        except Exception as exc:
            raise ToolError(f"llamavid could not start: {error_message(exc)}; see the server's log") from None

    def db(self) -> Any:
        """This thread's connection to the library."""
        with self._lock:
            if self._library is None:
                from indexer.db import ThreadConnections

                self._library = ThreadConnections(self.get().data.database)
        return self._library.get()

    def close(self) -> None:
        """Close what was opened (waits for a start still under way)."""
        try:
            service = self._service.result()
        except BaseException:  # noqa: BLE001 - it never started: nothing to close
            return
        if self._library is not None:
            self._library.close()
        service.close()


def create_server(make: Callable[[], ChatService], sampling: Mapping[str, Any] | None = None,
                  preload: bool = False) -> MCPServer:
    """The MCP server over the chat service ``make()`` returns, made when the server starts (on a
    thread, once the transport owns stdout) and closed when it stops. ``sampling``: keyword arguments
    of :class:`~llamavid.runtime.generate.SamplingOptions` for every answer (None: the model's
    defaults); ``preload``: load the model at start, not on the first question."""
    state = _State(make, preload)

    @asynccontextmanager
    async def lifespan(_: MCPServer) -> Any:
        state.start()
        try:
            yield None
        finally:
            await anyio.to_thread.run_sync(state.close)

    server = MCPServer(NAME, title="llamavid movie library", instructions=INSTRUCTIONS,
                       version=llamavid_version(), lifespan=lifespan)
    reading = ToolAnnotations(read_only_hint=True, open_world_hint=False)

    @server.tool(annotations=reading)
    def list_films() -> Films:
        """The films of the library: id, title, duration, whether they are indexed (ready for questions)
        and prepared for fast answers."""
        return Films(films=[_film(m) for m in state.get().movies()])

    @server.tool(annotations=reading)
    def search(query: Annotated[str, Field(min_length=1, max_length=1000,
                                           description="a line of dialogue (even misremembered) or what it says")],
               film_id: Annotated[Id | None, Field(description="only this film (default: the whole library)")] = None,
               limit: Annotated[int, Field(ge=1, le=100)] = 10,
               kind: Annotated[Literal["quote", "scene", "all"], Field(
                   description="quote: lines of dialogue; scene: what is seen; all: both")] = "all") -> Found:
        """Find where a line is said or a scene is seen: the subtitle lines of the library (or of one
        film) that say what the query says (a quote, even misremembered, or a paraphrase), and the
        stretches of film that look like it (a description: "a beach at night"), best first, with the
        film, the time and a score from 0 to 1 (1: the line says it word for word)."""
        return _search(state, query, film_id, limit, kind)

    @server.tool(annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False,
                                             open_world_hint=False))
    async def ask_film(question: Annotated[str, Field(min_length=1, max_length=20_000)],
                       ctx: Context,
                       film_id: Annotated[Id | None, Field(description="the film (list_films gives ids); "
                                                                       "not needed with conversation_id")] = None,
                       conversation_id: Annotated[Id | None, Field(
                           description="continue this conversation (from an earlier answer)")] = None,
                       fast: Annotated[bool | None, Field(
                           description="start from the film's prepared state (seconds instead of minutes; "
                                       "default: when the film is prepared)")] = None,
                       max_tokens: Annotated[int | None, Field(
                           ge=1, le=MAX_ANSWER_TOKENS,
                           description="the longest answer, in tokens (default: the server's)")] = None) -> Answer:
        """Ask the video model about a film of the library. Returns the answer, the moments of the film
        it rests on (start and end in seconds, and why) and a conversation_id; pass conversation_id
        with a follow-up question to continue the same conversation. Reports progress while it waits
        for the model and reads the film."""
        queued: list[tuple[AskStream, Movie | None, bool]] = []

        def ask() -> None:
            wanted = {**(sampling or {}), **({"max_new_tokens": max_tokens} if max_tokens else {})}
            queued.append(_queue(state.get(), question, film_id, conversation_id, fast, wanted))

        try:
            await anyio.to_thread.run_sync(ask)
        except BaseException:  # cancelled while it was being queued: it is not left to run for nobody
            for stream, _, _ in queued:
                stream.cancel()
            raise
        return await _answer(*queued[0], ctx)

    return server


def _film(movie: Movie) -> Film:
    from app.film_words import clock, index_state, subtitle_summary

    return Film(id=movie.id, title=Path(movie.rel_path).stem, path=movie.rel_path,
                duration_seconds=movie.duration, duration=clock(movie.duration), state=movie.state,
                indexed=movie.features_complete, status=index_state(movie).text,
                prepared=bool(movie.prepared_bytes), subtitles=subtitle_summary(movie))


def _search(state: _State, query: str, film_id: int | None, limit: int, kind: str = "all") -> Found:
    from app.film_words import short_clock
    from indexer.scenes_search import ScenesUnavailable, search_library

    db = state.db()
    service = state.get()
    if film_id is not None:
        _movie(service, film_id)  # an unknown film is an error, not an empty list
    note = None
    try:
        found = search_library(db, query, kind, film_id, limit, service.data.root)
    except ScenesUnavailable as exc:  # kind="scene" without the scene model: say what to install
        found, note = [], str(exc)
    quotes = [Quote(film_id=hit.movie_id, title=Path(hit.rel_path).stem, start=round(hit.start, 3),
                    end=round(hit.end, 3), at=short_clock(hit.start), text=hit.text, score=round(hit.score, 4))
              for hit in found if hit.kind == "quote"]
    scenes = [Scene(film_id=hit.movie_id, title=Path(hit.rel_path).stem, start=round(hit.start, 3),
                    end=round(hit.end, 3), at=short_clock(hit.start), score=round(hit.score, 4))
              for hit in found if hit.kind == "scene"]
    return Found(query=query, quotes=quotes, scenes=scenes, note=note)


def _movie(service: ChatService, film_id: int) -> Movie:
    try:
        return service.movie(film_id)
    except KeyError:
        raise ToolError(f"no film {film_id} in the library (list_films lists them)") from None


def _queue(service: ChatService, question: str, film_id: int | None, conversation_id: int | None,
           fast: bool | None, sampling: Mapping[str, Any] | None) -> tuple[AskStream, Movie | None, bool]:
    """Check the question and put it in the service's queue (on a worker thread: it reads the
    databases); returns its stream, its film and whether it is in fast-answers mode."""
    from app.chat_service import fast_by_default
    from app.film_words import index_state
    from llamavid.runtime.generate import SamplingOptions

    options = SamplingOptions(**sampling) if sampling else None
    question = question.strip()
    if not question:
        raise ToolError("the question is empty")
    if service.model_name is None:
        raise ToolError("no chat model is installed: install one with `llamavid models pull "
                        "llama-vid-7b-full-224-long-video` (or start `llamavid mcp --model FOLDER`), then restart "
                        "the MCP server")
    try:
        if conversation_id is not None:
            try:
                conv = service.conversation(conversation_id)
            except KeyError:
                raise ToolError(f"no conversation {conversation_id}: ask with film_id to start one") from None
            if film_id is not None and conv.movie_id != film_id:
                raise ToolError(f"conversation {conversation_id} is not about film {film_id}: leave out film_id, "
                                "or leave out conversation_id to start a new conversation")
            if fast is not None and fast != conv.fast:
                mode = "fast answers" if conv.fast else "exact mode"
                raise ToolError(f"conversation {conv.id} is in {mode} and stays so; leave out fast, or start a "
                                "new conversation")
            if conv.movie_id is None:
                raise ToolError(f"conversation {conv.id} has no film: its film has left the library"
                                if conv.movie_path else f"conversation {conv.id} is not about a film")
            movie = _movie(service, conv.movie_id)
            return service.ask(conv.id, question, options=options), movie, conv.fast
        if film_id is None:
            raise ToolError("say which film: film_id (list_films lists them), or conversation_id to continue")
        movie = _movie(service, film_id)
        if not service.can_ask(movie):
            raise ToolError(f"{movie.rel_path} is not indexed yet ({index_state(movie).text}); wait for the "
                            "indexer, or run `llamavid index run`")
        fast_mode = fast_by_default(movie) if fast is None else fast
        return service.ask_film(movie.id, question, fast=fast_mode, options=options), movie, fast_mode
    except UserError as exc:  # the queue is full...
        raise ToolError(error_message(exc)) from None


async def _answer(stream: AskStream, movie: Movie | None, fast: bool, ctx: Context) -> Answer:
    """Read the question's events until it ends, reporting its progress; cancel it if the request is
    cancelled (the client's notifications/cancelled, or the client gone)."""
    report = _Progress(ctx)
    pieces: list[str] = []
    moments: tuple = ()
    done: ChatEvent | None = None
    written = budget = 0  # the answer's tokens, and how many it may have
    try:
        async with aclosing(stream.batches()) as batches:
            async for batch in batches:
                for event in batch:
                    if event.type == "text":
                        pieces.append(event.text)
                    elif event.type == "moments":
                        moments = event.moments
                    elif event.type == "error":
                        raise ToolError(event.text)
                    elif event.type == "done":
                        done = event
                    elif event.type == "progress" and event.progress and event.progress.phase == "answer":
                        written, budget = event.progress.done, event.progress.total
                    await report(event)
    finally:
        if not stream.finished:
            stream.cancel()
    assert done is not None
    return Answer(answer="".join(pieces).strip(), conversation_id=stream.conversation_id,
                  film_id=movie.id if movie else None, title=Path(movie.rel_path).stem if movie else None,
                  turn_id=done.turn_id, moments=[_moment(m) for m in moments], fast=fast,
                  truncated=bool(budget) and written >= budget, notes=list(done.notes))


def _moment(moment: Any) -> MomentOut:
    from app.film_words import short_clock

    return MomentOut(start=round(moment.start, 3), end=round(moment.end, 3),
                     at=f"{short_clock(moment.start)}-{short_clock(moment.end)}", score=round(moment.score, 3),
                     why=list(moment.why))


class _Progress:
    """A question's events as MCP progress, 0-100 over its phases (:data:`SPANS`). The protocol wants
    each value above the last, so an event that would not move it forward is not sent; within a
    phase, a step under one point is not sent either (the answer's phase moves token by token)."""

    def __init__(self, ctx: Context):
        self.ctx, self.last, self.phase = ctx, -1.0, ""

    async def __call__(self, event: ChatEvent) -> None:
        phase = event.type
        if event.type == "queued":
            from app.film_words import queue_position

            value, message = 0.0, queue_position(event.position)
        elif event.type == "progress" and event.progress is not None and event.progress.phase in SPANS:
            p = event.progress
            phase = p.phase
            low, high = SPANS[p.phase]
            value = low + (high - low) * (min(1.0, p.done / p.total) if p.total > 0 else 1.0)
            message = p.describe()
        elif event.type == "done":
            value, message = 100.0, "answered"
        else:
            return
        if value <= self.last or (phase == self.phase and value < 100.0 and value - self.last < 1.0):
            return
        self.last, self.phase = value, phase
        await self.ctx.report_progress(value, 100.0, message)


# -- running it ---------------------------------------------------------------------------------------------
def make_service(data_dir: Path, model: str | None = None, load: LoadOptions | None = None,
                 language: str | None = None) -> ChatService:
    """The chat service ``llamavid mcp`` answers with, chosen as the server's is: ``model``, else
    ``<data>/settings.json``'s, else the first installed chat model; the load options given over
    the settings' (backend, bits, device)."""
    from app.chat_service import ChatService, chat_models

    data = DataDir(Path(data_dir)).create()
    saved = load_settings(data)
    chosen = model or saved.model or next((m.name for m in chat_models(data)), None)
    options = saved.load_options().replace(**(load or LoadOptions()).changed())
    return ChatService(data.root, model=chosen, language=language or saved.language, load=options)


def sampling_for(data_dir: Path, max_tokens: int | None = None, temperature: float | None = None) -> dict[str, Any]:
    """How answers are sampled (SamplingOptions' keywords): ``settings.json``'s answer length and
    temperature, these over them."""
    values = load_settings(DataDir(Path(data_dir))).sampling_options()
    if max_tokens is not None:
        values["max_new_tokens"] = max_tokens
    if temperature is not None:
        values["temperature"] = temperature
    return values


def serve(data_dir: Path, model: str | None = None, load: LoadOptions | None = None, language: str | None = None,
          max_tokens: int | None = None, temperature: float | None = None, preload: bool = False) -> int:
    """Serve MCP over this process's stdin and stdout until the client closes stdin; returns 0."""
    sampling = sampling_for(data_dir, max_tokens, temperature)
    server = create_server(lambda: make_service(data_dir, model, load, language), sampling, preload)
    server.run("stdio")
    return 0
