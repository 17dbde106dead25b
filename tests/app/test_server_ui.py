"""The web UI in Debian's chromium (Playwright) against the real server: a film plays from the
library, an answer streams and stops, a moment seeks the player; the quick chat answers about an
uploaded picture, and two sessions that upload the same picture each keep their own; the library
tab lists the film; fast answers are a checkbox away, and the library prepares a film (its size
shown first) or forgets its prepared state."""
from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import numpy as np
import pytest
from PIL import Image

from app.server.app import Running, start, upload_dir
from app.server.sample import make_library
from app.server.security import SESSION_UPLOADS
from app.server.settings import ServerSettings
from llamavid.media.synthetic import clock, write_video
from llamavid.runtime.options import LoadOptions
from llamavid.storage import human_size

pytestmark = pytest.mark.slow

TREASURE = "The treasure is buried under the old lighthouse?"
PREPARED = re.compile(r"^prepared for fast answers \(")  # the library's Fast answers column for a prepared film
READY = "ready to chat"  # the library's Index column for an indexed film (app.film_words.index_state)
LAST_ANSWER = "() => { const b = document.querySelectorAll('#movie-chat .bot'); " \
              "return b.length ? b[b.length - 1].innerText : ''; }"
QUICK_ANSWERED = "() => { const b = document.querySelectorAll('#quick-chat .bot'); " \
                 "return b.length && b[b.length - 1].innerText.trim().length > 0; }"


@pytest.fixture(scope="module")
def web(tmp_path_factory) -> Running:
    data, _ = make_library(tmp_path_factory.mktemp("web"))
    running = start(ServerSettings(data_dir=data, port=0, load_options=LoadOptions(device="cpu", dtype="fp32")))
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def page(browser: Any, web: Running):
    page = browser.new_page(viewport={"width": 1300, "height": 1000})
    page.goto(web.url, wait_until="domcontentloaded", timeout=120_000)
    page.locator("#movie-question textarea").wait_for(timeout=120_000)
    try:
        yield page
    finally:
        page.close()


def settle_settings(page: Any, temperature: str, max_tokens: str) -> None:
    if not page.locator("#temperature input[type=number]").is_visible():
        page.locator("#answer-settings").get_by_text("Answer settings").click()
    for field, value in (("#temperature", temperature), ("#max-tokens", max_tokens)):
        box = page.locator(f"{field} input[type=number]")
        box.fill(value)
        box.press("Enter")


def test_a_film_answer_streams_stops_and_its_moment_seeks_the_player(page: Any, tmp_path: Path, capsys) -> None:
    player = page.locator("#llamavid-player")
    assert player.get_attribute("src").startswith("/v1/movies/")
    page.wait_for_function("() => document.getElementById('llamavid-player').readyState >= 1", timeout=60_000)
    assert page.evaluate("() => document.getElementById('llamavid-player').duration") == pytest.approx(130, abs=1)

    # a long answer streams in: it is seen growing, then Stop ends it
    settle_settings(page, "0", "2048")
    page.locator("#movie-question textarea").fill("What happens in the film?")
    page.locator("#movie-ask").click()
    page.wait_for_function(f"() => ({LAST_ANSWER})().length >= 3", timeout=300_000)
    early = page.evaluate(LAST_ANSWER)
    page.wait_for_function(f"() => ({LAST_ANSWER})().length > {len(early) + 10}", timeout=300_000)
    page.locator("#movie-stop").click()
    page.wait_for_function(f"() => ({LAST_ANSWER})().includes('(stopped)')", timeout=120_000)
    stopped = page.evaluate(LAST_ANSWER)
    assert stopped.startswith(early) and len(stopped) > len(early) + 10

    # a short answer about a line of the film: its moments are links that seek the player
    settle_settings(page, "0", "6")
    page.locator("#movie-question textarea").fill(TREASURE)
    page.locator("#movie-ask").click()
    first = page.locator("#moments a.moment").first
    first.wait_for(timeout=300_000)
    target = float(first.get_attribute("data-seek"))
    assert target == 40.0, "the subtitle that says the question word for word is the first moment"
    first.click()
    page.wait_for_function("() => !document.getElementById('llamavid-player').seeking", timeout=60_000)
    position = page.evaluate("() => document.getElementById('llamavid-player').currentTime")
    assert abs(position - target) <= 1.0
    assert TREASURE in page.locator("#movie-chat").inner_text()
    newest = httpx.get(page.url + "v1/conversations").json()["data"][0]
    kept = httpx.get(page.url + f"v1/conversations/{newest['id']}").json()["turns"]
    assert [t["question"] for t in kept] == [TREASURE], "the stopped answer was not kept"
    assert page.evaluate(LAST_ANSWER).strip() == kept[0]["answer"].strip()
    shot = tmp_path / "server-ui-movie-chat.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 20_000
    with capsys.disabled():
        print(f"\nweb UI screenshot for a person to look at: {shot}")


def test_quick_chat_answers_about_an_uploaded_picture(page: Any, tmp_path: Path) -> None:
    picture = tmp_path / "picture.png"
    Image.fromarray((np.random.default_rng(1).random((64, 64, 3)) * 255).astype(np.uint8)).save(picture)
    page.get_by_role("tab", name="Quick chat").click()
    settle_settings(page, "0", "6")
    page.locator("#quick-image input[type=file]").set_input_files(str(picture))
    page.locator("#quick-image img").wait_for(timeout=60_000)
    page.locator("#quick-question textarea").fill("Describe the picture.")
    page.locator("#quick-ask").click()
    page.wait_for_function(QUICK_ANSWERED, timeout=300_000)
    assert "Describe the picture." in page.locator("#quick-chat").inner_text()


def session_copies() -> set[Path]:
    """The quick chat's per-session copies of uploads: ``<upload dir>/sessions/<id>/<name>``."""
    return set((upload_dir() / SESSION_UPLOADS).glob("*/*"))


def wait_until(done: Any, what: str, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while not done():
        if time.monotonic() > end:
            pytest.fail(f"waited {timeout:.0f} s for {what}")
        time.sleep(0.2)


def upload_to_quick_chat(page: Any, picture: Path) -> Path:
    """Upload ``picture`` in the page's quick chat; returns the session's own copy the server made of it."""
    before = session_copies()
    page.locator("#quick-image input[type=file]").set_input_files(str(picture))
    page.locator("#quick-image img").wait_for(timeout=60_000)
    wait_until(lambda: len(session_copies() - before) == 1, "the session's copy of its upload")
    (copy,) = session_copies() - before
    return copy


def test_two_sessions_that_upload_the_same_picture_each_keep_their_own(browser: Any, web: Running, tmp_path: Path,
                                                                        monkeypatch) -> None:
    """Issue 24: Gradio stores both uploads at one path (a hash of the content); when one session
    removes its picture or ends, the other still asks about its own, and only the first's copy goes."""
    monkeypatch.setenv("GRADIO_IS_E2E_TEST", "1")  # Gradio then ends a closed session's state in 1 s, not 1 h
    picture = tmp_path / "same.png"
    Image.fromarray((np.random.default_rng(24).random((64, 64, 3)) * 255).astype(np.uint8)).save(picture)
    contexts = [browser.new_context(viewport={"width": 1300, "height": 1000}) for _ in range(3)]
    try:
        first, second, third = (c.new_page() for c in contexts)
        for page in (first, second, third):
            page.goto(web.url, wait_until="domcontentloaded", timeout=120_000)
            page.locator("#movie-question textarea").wait_for(timeout=120_000)
            page.get_by_role("tab", name="Quick chat").click()
        mine, theirs, closing = (upload_to_quick_chat(page, picture) for page in (first, second, third))
        shown = {page.locator("#quick-image img").get_attribute("src") for page in (first, second, third)}
        assert len(shown) == 1, "Gradio keeps the three uploads in one file"
        cached = Path(unquote(shown.pop().split("/file=", 1)[1]))
        assert len({mine, theirs, closing}) == 3 and all(c.read_bytes() == picture.read_bytes()
                                                         for c in (mine, theirs, closing))

        first.get_by_role("button", name="Remove Image").click()  # one session removes its picture
        wait_until(lambda: not mine.exists(), "the first session's copy to be deleted")
        contexts[2].close()  # and another one ends
        wait_until(lambda: not closing.exists(), "the closed session's copy to be deleted")
        assert not mine.parent.exists() and not closing.parent.exists()

        assert cached.read_bytes() == picture.read_bytes(), "Gradio's file is left to Gradio's sweep"
        settle_settings(second, "0", "6")
        second.locator("#quick-question textarea").fill("What is in my picture?")
        second.locator("#quick-ask").click()
        second.wait_for_function(QUICK_ANSWERED, timeout=300_000)
        assert "What is in my picture?" in second.locator("#quick-chat").inner_text()
        assert theirs.read_bytes() == picture.read_bytes(), "the session that kept its picture still has it"
    finally:
        for context in contexts:
            context.close()


def test_the_library_tab_lists_the_indexed_film(page: Any) -> None:
    page.get_by_role("tab", name="Library").click()
    table = page.locator("#library table")
    table.wait_for(timeout=60_000)
    assert "Harbor" in table.inner_text() and READY in table.inner_text()
    assert "Queue:" in page.locator("#queue").inner_text()


def _newest_conversation(base: str) -> dict:
    """The newest kept conversation once its first answer is kept (the page keeps it from the question on)."""
    for _ in range(600):
        newest = httpx.get(base + "v1/conversations").json()["data"][0]
        kept = httpx.get(base + f"v1/conversations/{newest['id']}").json()
        if kept["turns"]:
            return kept
        time.sleep(0.5)
    pytest.fail("no answer was kept")


def test_fast_answers_are_a_checkbox_away_and_the_library_prepares_a_film(page: Any) -> None:
    fast = page.locator("#fast-answers input[type=checkbox]")
    assert not fast.is_checked(), "a film that is not prepared starts in exact mode"
    assert "read once ahead" in page.locator("#fast-answers").inner_text()
    fast.check()
    settle_settings(page, "0", "6")
    page.locator("#movie-question textarea").fill("Where is the treasure?")
    page.locator("#movie-ask").click()
    kept = _newest_conversation(page.url)
    assert kept["fast"] is True and [t["question"] for t in kept["turns"]] == ["Where is the treasure?"]
    page.wait_for_function("() => document.querySelector('#fast-answers input').disabled", timeout=60_000)
    assert fast.is_checked(), "a kept conversation shows its mode, fixed"

    # the first fast question prepared the film: the library says so and offers to forget it
    page.get_by_role("tab", name="Library").click()
    page.locator("#library tr", has_text="Harbor").get_by_text(PREPARED).wait_for(timeout=60_000)
    assert "is prepared for fast answers" in page.locator("#prepare-info").inner_text()
    page.locator("#forget-prepared").click()
    prepare = page.locator("#prepare")
    prepare.wait_for(timeout=60_000)
    assert re.fullmatch(r"Prepare for fast answers \(about [\d.]+ [kM]?B, about \d+ (s|min) here\)",
                        prepare.inner_text().strip()), "the size, and the time measured here, shown before the click"
    movie = httpx.get(page.url + "v1/movies").json()["data"][0]
    assert movie["prepared"] == 0 and not movie["prepare_wanted"]
    assert human_size(movie["prepare_estimate_bytes"]) in prepare.inner_text()
    prepare.click()  # the server's chat service prepares it with the model it holds
    page.locator("#library tr", has_text="Harbor").get_by_text(PREPARED).wait_for(timeout=600_000)
    assert httpx.get(page.url + "v1/movies").json()["data"][0]["prepared"] > 0

    # a new conversation about a prepared film starts with fast answers on
    page.reload(wait_until="domcontentloaded")
    page.locator("#movie-question textarea").wait_for(timeout=120_000)
    page.wait_for_function("() => document.querySelector('#fast-answers input').checked", timeout=60_000)
    assert not page.locator("#fast-answers input[type=checkbox]").is_disabled()


def test_the_library_tab_adds_a_folder_and_indexes_it_after_a_pause(page: Any, tmp_path: Path) -> None:
    folder = tmp_path / "more films"
    write_video(folder / "Lighthouse.mp4", clock(64, 48, 4), fps=4, seconds=6)
    page.get_by_role("tab", name="Library").click()
    page.locator("#pause").click()
    page.locator("#queue").get_by_text("paused").wait_for(timeout=60_000)
    page.locator("#folder textarea, #folder input").first.fill(str(folder))
    page.locator("#add-folder").click()
    page.locator("#added").get_by_text("1 new").wait_for(timeout=120_000)
    row = page.locator("#library tr", has_text="Lighthouse")
    assert READY not in row.inner_text(), "a paused queue indexes nothing"
    page.locator("#resume").click()
    page.wait_for_function("() => !document.querySelector('#queue').innerText.includes('paused')", timeout=60_000)
    page.locator("#library tr", has_text="Lighthouse").get_by_text(READY).wait_for(timeout=600_000)


PLAYER_AT = "() => { const p = document.getElementById('llamavid-player'); " \
            "return p && p.readyState >= 1 && !p.seeking ? p.currentTime : null; }"


def test_searching_the_dialogue_finds_the_line_and_a_result_seeks_the_player(page: Any) -> None:
    """Issue 26: a line of any film's subtitles, searched from Movie chat: the result shows the film
    and the time, and picking it seeks the player there."""
    page.wait_for_function("() => document.getElementById('llamavid-player').readyState >= 1", timeout=60_000)
    assert page.evaluate("() => document.getElementById('llamavid-player').currentTime") < 1
    page.locator("#search-query textarea, #search-query input").first.fill("treasure")
    page.locator("#search").click()
    hit = page.locator("#search-results label", has_text="0:00:40")
    hit.wait_for(timeout=60_000)
    assert "Harbor · 0:00:40 · The treasure is buried under the old lighthouse." in hit.inner_text()
    assert "1 line found" in page.locator("#search-info").inner_text()
    hit.click()
    page.wait_for_function(f"() => Math.abs(({PLAYER_AT})() - 40) <= 1", timeout=60_000)

    # a result of another film opens it at the line: the player's address carries #t=START,
    # which chromium honours once the film's metadata is read
    src = page.locator("#llamavid-player").get_attribute("src").split("#")[0]
    page.evaluate(f"() => {{ document.getElementById('llamavid-player').src = '{src}#t=40.000'; }}")
    page.wait_for_function(f"() => Math.abs(({PLAYER_AT})() - 40) <= 1", timeout=60_000)

    page.locator("#search-query textarea, #search-query input").first.fill("zebra")
    page.locator("#search").click()
    page.locator("#search-info").get_by_text("No line").wait_for(timeout=60_000)
    assert not page.locator("#search-results").is_visible()
