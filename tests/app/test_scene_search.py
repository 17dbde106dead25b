"""Scenes in every front end (issue 26): the served library (a tiny model, a 130 s film with English
subtitles, indexed by the real indexer) given scene vectors by ``llamavid index run`` once the tiny CLIP
is installed, and a description planted at 60-63 s (tests/support/scenes.py says why). Then: the real
server's ``GET /v1/search?kind=scene`` with a picture per result, moments that carry the question's own
scene evidence in exact mode, in a follow-up and in fast mode, the MCP ``search`` tool through the SDK's
own client, the web UI (Playwright) and the desktop (pytest-qt) seeking their player to a scene."""
from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import cli
from app.server.app import Running, start
from app.server.sample import MODEL
from app.server.settings import ServerSettings
from indexer.store import LibraryStore
from llamavid.runtime.options import LoadOptions
from tests.support.scenes import install_tiny_scene_model, plant, text_vector
from tests.support.served import serving

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
KITE = "a red kite in a pink sky at dawn"  # no line says any of its words
TREASURE = "The treasure is buried under the old lighthouse?"  # a subtitle says it word for word (40-44 s)
GREEDY = {"temperature": 0, "max_tokens": 4}


@pytest.fixture(scope="module")
def scened(served_library: tuple[Path, Path]) -> tuple[Path, int]:
    """The library with scene vectors made by ``index run`` and the kite planted at 60-63 s: (data, film id)."""
    data, _ = served_library
    model = install_tiny_scene_model(data)
    assert cli.main(["--data-dir", str(data), "index", "run", "--quiet", "--priority", "normal"]) == 0
    with LibraryStore.open(data / "library.db") as store:
        (row,) = store.movie_views()
        assert row["scenes_state"] == "done" and row["scenes_done"] == row["frames_done"] > 120
        # the tiny model's texts share a large part of their vectors: the planted picture is the kite's part
        # that the treasure question does not have (cosine 0 with it), so only the kite looks like it
        kite, treasure = text_vector(model, KITE), text_vector(model, TREASURE)
        kite_only = kite - (kite @ treasure) * treasure
        assert plant(store, row["id"], (60, 63), kite_only / np.linalg.norm(kite_only)) == [60, 61, 62]
    return data, row["id"]


@pytest.fixture(scope="module")
def server(scened: tuple[Path, int]) -> Iterator[Running]:
    data, _ = scened
    with serving(ServerSettings(data_dir=data, port=0, ui=False,
                                load_options=LoadOptions(device="cpu", dtype="fp32"))) as running:
        yield running



def test_the_search_route_finds_a_scene_by_description_with_its_picture(http, scened) -> None:
    _, movie = scened
    found = http.get("/v1/search", params={"q": KITE, "kind": "scene", "limit": 3}).json()
    best = found["data"][0]
    assert found["kind"] == "scene" and (best["kind"], best["movie_id"], best["title"]) == ("scene", movie, "Harbor")
    assert (best["start"], best["end"]) == (60.0, 63.0) and best["text"] is None and best["score"] == 1.0
    assert best["thumbnail_url"] == f"/v1/movies/{movie}/frame?t={best['time']:g}"
    picture = http.get(best["thumbnail_url"])
    assert picture.status_code == 200 and picture.headers["content-type"] == "image/jpeg"
    both = http.get("/v1/search", params={"q": TREASURE}).json()["data"]  # kind=all: a quoted line first
    assert (both[0]["kind"], both[0]["start"]) == ("quote", 40.0)
    described = http.get("/v1/search", params={"q": KITE}).json()["data"]
    assert [(r["kind"], r["start"]) for r in described] == [("scene", 60.0)]  # no line says it


def _scene_moment(moments: list[dict]) -> dict | None:
    return next((m for m in moments if any(w.startswith("scene: ") for w in m["why"])), None)


def _moments(obj: Any) -> list[dict]:
    return (obj.model_extra or {}).get("moments") or []


def test_every_question_gets_its_own_scene_evidence_exact_follow_up_and_fast(client, http, scened) -> None:
    _, movie = scened
    message = [{"role": "user", "content": [{"type": "text", "text": KITE}, {"type": "movie", "movie_id": movie}]}]
    exact = client.chat.completions.create(model=MODEL, messages=message, **GREEDY)
    scene = _scene_moment(_moments(exact))
    assert scene is not None and (scene["start"], scene["end"]) == (60.0, 63.0), _moments(exact)
    assert scene["why"][0].startswith("scene: the picture looks like the question (similarity 0.")

    treasure = [{"role": "user", "content": [{"type": "text", "text": TREASURE}, {"type": "movie", "movie_id": movie}]}]
    first = client.chat.completions.create(model=MODEL, messages=treasure, **GREEDY)
    assert _scene_moment(_moments(first)) is None and _moments(first)[0]["start"] == 40.0
    conversation = (first.model_extra or {})["conversation_id"]
    follow = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": KITE}],
                                            extra_body={"conversation_id": conversation}, **GREEDY)
    assert _scene_moment(_moments(follow))["start"] == 60.0  # the follow-up's own question, not the first's

    fast = client.chat.completions.create(model=MODEL, messages=message, extra_body={"fast": True}, **GREEDY)
    kept = http.get(f"/v1/conversations/{(fast.model_extra or {})['conversation_id']}").json()
    assert kept["fast"] is True and _scene_moment(_moments(fast))["start"] == 60.0


def test_the_mcp_search_tool_finds_scenes(scened) -> None:
    from mcp import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client

    data, movie = scened
    params = StdioServerParameters(command=sys.executable, cwd=ROOT, args=["-m", "cli", "--data-dir", str(data), "mcp",
                                                                           "--device", "cpu", "--dtype", "fp32"])

    async def search() -> tuple[dict, dict]:
        async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            scenes = await session.call_tool("search", {"query": KITE, "kind": "scene", "limit": 2})
            quotes = await session.call_tool("search", {"query": TREASURE, "kind": "quote"})
            return scenes.structured_content, quotes.structured_content

    scenes, quotes = asyncio.run(asyncio.wait_for(search(), 300))
    assert scenes["quotes"] == [] and scenes["note"] is None
    assert (scenes["scenes"][0]["film_id"], scenes["scenes"][0]["start"], scenes["scenes"][0]["at"]) == (movie, 60.0,
                                                                                                         "1:00")
    assert quotes["scenes"] == [] and quotes["quotes"][0]["start"] == 40.0


def test_the_web_ui_lists_a_scene_and_picking_it_seeks_the_player(scened, browser: Any) -> None:
    data, _ = scened
    running = start(ServerSettings(data_dir=data, port=0, load_options=LoadOptions(device="cpu", dtype="fp32")))
    page = browser.new_page(viewport={"width": 1300, "height": 1000})
    try:
        page.goto(running.url, wait_until="domcontentloaded", timeout=120_000)
        page.locator("#movie-question textarea").wait_for(timeout=120_000)
        page.wait_for_function("() => document.getElementById('llamavid-player').readyState >= 1", timeout=60_000)
        page.locator("#search-query textarea, #search-query input").first.fill(KITE)
        page.locator("#search").click()
        hit = page.locator("#search-results label", has_text="0:01:00")
        hit.wait_for(timeout=60_000)
        assert "Harbor · 0:01:00 · [scene that looks like it]" in hit.inner_text()
        assert "1 scene found" in page.locator("#search-info").inner_text()
        hit.click()
        page.wait_for_function("() => { const p = document.getElementById('llamavid-player'); "
                               "return p && !p.seeking && Math.abs(p.currentTime - 60) <= 1; }", timeout=60_000)
    finally:
        page.close()
        running.stop()


def test_the_desktop_lists_a_scene_and_picking_it_seeks_the_player(qtbot, scened) -> None:
    from PySide6.QtCore import Qt

    from tests.support.desktop import open_window, wait_for_films

    data, _ = scened
    window = open_window(qtbot, data, watch_folders=False)
    wait_for_films(qtbot, window, {"Harbor.mp4"})
    pane = window.library
    qtbot.keyClicks(pane.search, KITE)
    qtbot.keyClick(pane.search, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: pane.results.count() > 0, timeout=60_000)
    item = pane.results.item(0)
    assert item.text() == "Harbor · 0:01:00 · [scene that looks like it]" and pane.results.count() == 1
    qtbot.mouseClick(pane.results.viewport(), Qt.MouseButton.LeftButton, pos=pane.results.visualItemRect(item).center())
    qtbot.waitUntil(lambda: window.movie is not None and Path(window.movie.rel_path).name == "Harbor.mp4",
                    timeout=30_000)
    qtbot.waitUntil(lambda: abs(window.player.position() - 60.0) < 0.5, timeout=30_000)
