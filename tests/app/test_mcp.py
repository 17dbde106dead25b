"""``llamavid mcp`` as an MCP client sees it: ``python -m cli mcp`` started as a real stdio subprocess on the
served library (a tiny model in the released layout, a 130 s film with English subtitles indexed by the real
indexer), driven by the MCP SDK's own client (``ClientSession`` over ``stdio_client``). One server process
serves the whole module: its client session lives on an event loop of its own thread (:class:`McpClient`)."""
from __future__ import annotations

import asyncio
import sqlite3
import sys
import threading
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from app.server.sample import FILM

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
TREASURE = "The treasure is buried under the old lighthouse?"  # a subtitle says it word for word (40-44 s)


class McpClient:
    """A ``ClientSession`` with the server process, opened and closed in one task (anyio's rule for the
    transport's task group) on a loop of its own thread; the tests call it synchronously."""

    def __init__(self, params: StdioServerParameters, errlog: Any):
        self.params, self.errlog = params, errlog
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="mcp-client", daemon=True)
        self.thread.start()
        self.ready = threading.Event()
        self.session: ClientSession | None = None
        self.main = asyncio.run_coroutine_threadsafe(self._main(), self.loop)

    async def _main(self) -> None:
        self.stop = asyncio.Event()
        async with stdio_client(self.params, errlog=self.errlog) as (read, write), \
                ClientSession(read, write) as session:
            self.initialized = await session.initialize()
            self.session = session
            self.ready.set()
            await self.stop.wait()

    def wait_ready(self, timeout: float) -> None:
        if not self.ready.wait(timeout):
            if self.main.done():
                self.main.result()  # raises what went wrong
            raise TimeoutError(f"the MCP server did not initialize in {timeout} s")

    def call(self, coro_fn: Any, timeout: float = 300) -> Any:
        return asyncio.run_coroutine_threadsafe(coro_fn(self.session), self.loop).result(timeout)

    def tool(self, name: str, progress: list | None = None, **arguments: Any) -> Any:
        async def record(value: float, total: float | None, message: str | None) -> None:
            progress.append((value, total, message))

        return self.call(lambda s: s.call_tool(name, arguments, progress_callback=record if progress is not None
                                               else None))

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        try:
            self.main.result(30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)


@pytest.fixture(scope="module")
def mcp(served_library: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[McpClient]:
    data, _ = served_library
    log_path = tmp_path_factory.mktemp("mcp") / "stderr.log"
    params = StdioServerParameters(
        command=sys.executable, cwd=ROOT,
        args=["-m", "cli", "--data-dir", str(data), "mcp", "--device", "cpu", "--dtype", "fp32",
              "--max-tokens", "6", "--temperature", "0"])
    with open(log_path, "w") as errlog:
        client = McpClient(params, errlog)
        try:
            client.wait_ready(120)
            yield client
        except BaseException:
            errlog.flush()
            print(f"llamavid mcp's stderr:\n{log_path.read_text()}")
            raise
        finally:
            client.close()


def text_of(result: Any) -> str:
    return "".join(getattr(part, "text", "") for part in result.content)


def film_id(mcp: McpClient) -> int:
    films = mcp.tool("list_films").structured_content["films"]
    return next(f["id"] for f in films if f["path"] == FILM)


def test_the_server_names_itself_and_lists_its_three_tools(mcp: McpClient) -> None:
    assert mcp.initialized.server_info.name == "llamavid" and mcp.initialized.instructions
    tools = {t.name: t for t in mcp.call(lambda s: s.list_tools()).tools}
    assert set(tools) == {"list_films", "search", "ask_film"}
    ask = tools["ask_film"]
    assert ask.input_schema["required"] == ["question"]
    assert {"question", "film_id", "conversation_id", "fast"} <= set(ask.input_schema["properties"])
    assert {"answer", "moments", "conversation_id"} <= set(ask.output_schema["properties"])
    assert tools["list_films"].annotations.read_only_hint and tools["search"].annotations.read_only_hint


def test_list_films_says_what_each_film_is_and_whether_it_is_ready(mcp: McpClient) -> None:
    result = mcp.tool("list_films")
    assert not result.is_error
    (film,) = result.structured_content["films"]
    assert film["title"] == "Harbor" and film["path"] == FILM
    assert film["indexed"] and film["state"] == "done" and film["status"] == "ready to chat"
    assert film["duration_seconds"] == pytest.approx(130, abs=1) and film["duration"] == "0:02:10"
    assert film["prepared"] is False and "(en)" in film["subtitles"]
    assert '"Harbor"' in text_of(result), "clients that read only text get the same films as JSON"


def test_search_finds_where_a_quote_is_said(mcp: McpClient) -> None:
    movie = film_id(mcp)
    found = mcp.tool("search", query="The treasure is buried under the old lighthouse.").structured_content
    quote = found["quotes"][0]
    assert (quote["film_id"], quote["start"], quote["end"], quote["at"]) == (movie, 40.0, 44.0, "0:40")
    assert quote["text"] == "The treasure is buried under the old lighthouse." and quote["title"] == "Harbor"
    assert quote["score"] == 1.0, "word for word"

    loose = mcp.tool("search", query="where was the treasure hidden? the lighthouse", film_id=movie)
    assert loose.structured_content["quotes"][0]["start"] == 40.0, "a paraphrase still finds the line"
    assert mcp.tool("search", query="zeppelin").structured_content["quotes"] == []
    unknown = mcp.tool("search", query="wind", film_id=999)
    assert unknown.is_error and "no film 999 in the library" in text_of(unknown)


def test_ask_film_answers_with_moments_a_conversation_and_progress(mcp: McpClient) -> None:
    movie = film_id(mcp)
    progress: list = []
    result = mcp.tool("ask_film", progress, question=TREASURE, film_id=movie)
    assert not result.is_error, text_of(result)
    answer = result.structured_content
    assert isinstance(answer["answer"], str) and answer["film_id"] == movie and answer["title"] == "Harbor"
    assert isinstance(answer["conversation_id"], int) and isinstance(answer["turn_id"], int)
    first = answer["moments"][0]
    assert (first["start"], first["end"], first["at"]) == (40.0, 44.0, "0:40-0:44")
    assert "treasure is buried" in first["why"][0]
    assert answer["fast"] is False and answer["truncated"] is True, "6 tokens: the answer length was reached"

    values = [value for value, _, _ in progress]
    assert values == sorted(set(values)), "MCP progress only moves forward"
    assert values[-1] == 100 and all(total == 100 for _, total, _ in progress)
    messages = " | ".join(message or "" for _, _, message in progress)
    assert "reading the film" in messages and "reading the prompt" in messages, messages

    follow: list = []
    again = mcp.tool("ask_film", follow, question="Who is speaking?", conversation_id=answer["conversation_id"])
    assert not again.is_error, text_of(again)
    later = again.structured_content
    assert later["conversation_id"] == answer["conversation_id"] and later["film_id"] == movie
    assert later["turn_id"] > answer["turn_id"]
    assert not any("reading the film" in (m or "") for _, _, m in follow), \
        "a follow-up reads the film's tokens from the conversation's cache"


def test_a_cancelled_question_stops_where_it_is_and_leaves_no_turn(mcp: McpClient,
                                                                  served_library: tuple[Path, Path]) -> None:
    movie = film_id(mcp)
    question = "Tell me everything that happens, scene by scene."

    async def cancel_while_answering(session: ClientSession) -> list[str]:
        answering, messages = asyncio.Event(), []

        async def progress(value: float, total: float | None, message: str | None) -> None:
            messages.append(message or "")
            if (message or "").startswith("answering"):
                answering.set()

        call = asyncio.create_task(session.call_tool(
            "ask_film", {"question": question, "film_id": movie, "max_tokens": 100_000}, progress_callback=progress))
        await asyncio.wait_for(answering.wait(), 240)
        call.cancel()  # the SDK's client sends notifications/cancelled
        with pytest.raises(asyncio.CancelledError):
            await call
        return messages

    assert mcp.call(cancel_while_answering)[-1].startswith("answering")
    after = mcp.tool("ask_film", question="Who is the captain?", film_id=movie)
    assert not after.is_error, text_of(after)
    data, _ = served_library
    with closing(sqlite3.connect(data / "conversations.db")) as db:
        kept = db.execute("SELECT COUNT(*) FROM turns WHERE question = ?", [question]).fetchone()[0]
    assert kept == 0, "a cancelled question is left as if it had not been asked"


def test_mistakes_are_tool_errors_that_say_what_to_do(mcp: McpClient) -> None:
    movie = film_id(mcp)
    missing = mcp.tool("ask_film", question="Who is the captain?", film_id=999)
    assert missing.is_error and "no film 999 in the library (list_films lists them)" in text_of(missing)
    nothing = mcp.tool("ask_film", question="Who is the captain?")
    assert nothing.is_error and "say which film" in text_of(nothing)
    gone = mcp.tool("ask_film", question="And then?", conversation_id=123456)
    assert gone.is_error and "no conversation 123456" in text_of(gone)
    out_of_range = mcp.tool("ask_film", question="Who?", film_id=0)
    assert out_of_range.is_error and "film_id" in text_of(out_of_range)
    # the server keeps answering after its mistakes
    assert not mcp.tool("ask_film", question="Who is the captain?", film_id=movie).is_error
