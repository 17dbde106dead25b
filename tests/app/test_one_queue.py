"""One chat engine under every front end: questions from the API (a real uvicorn server and the real
``openai`` client) and from the desktop app (a real window, offscreen) wait in the same queue of the
same :class:`~app.chat_service.ChatService`, and are answered in the order they were asked."""
from __future__ import annotations

import json
import threading
from pathlib import Path

import httpx
import openai
import pytest

from app.chat_service import ChatService
from app.server.app import start
from app.server.sample import FILM, MODEL, make_library
from app.server.settings import ServerSettings
from llamavid.runtime.api import LlamaVid
from tests.support.desktop import click, click_film, open_window, save_test_settings, wait_for_films

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    data, _ = make_library(tmp_path_factory.mktemp("one-queue"))
    save_test_settings(data, model=MODEL, max_new_tokens=4)
    return data


class Hold:
    """Keeps the model inside the first answer (after its first piece) until released, so the
    questions asked meanwhile can only wait."""

    def __init__(self, lv: LlamaVid, monkeypatch) -> None:
        self.reached, self.release = threading.Event(), threading.Event()
        decode, held = lv.decode, [False]

        def holding(steps):
            for piece in decode(steps):
                yield piece
                if not held[0]:
                    held[0] = True
                    self.reached.set()
                    assert self.release.wait(120), "the test never released the model"

        monkeypatch.setattr(lv, "decode", holding)


def _queued_position(url: str, body: dict) -> tuple[int, list[str]]:
    """Stream a chat completion with httpx: the position of its ``queued`` progress chunk, then the
    answer's text pieces once it is answered."""
    position, text = None, []
    with httpx.stream("POST", url + "v1/chat/completions", json={**body, "stream": True}, timeout=300) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            assert "error" not in chunk, chunk
            progress = chunk.get("progress") or {}
            if progress.get("phase") == "queued" and position is None:
                position = progress["position"]
            delta = chunk["choices"][0]["delta"] if chunk.get("choices") else {}
            text.append(delta.get("content") or "")
    return position, text


def test_a_question_from_the_api_and_one_from_the_desktop_wait_in_the_same_queue(qtbot, data: Path,
                                                                                    monkeypatch) -> None:
    lv = LlamaVid.load(data / "models" / MODEL, device="cpu", dtype="fp32", load_vision=False)
    hold = Hold(lv, monkeypatch)
    service = ChatService(data, model=MODEL, language="en", lv=lv)
    running = start(ServerSettings(data_dir=data, port=0, ui=False), service=service)
    client = openai.OpenAI(base_url=running.url + "v1", api_key="unused", max_retries=0, timeout=300)
    answers: dict[str, str] = {}
    try:
        def first_api_question() -> None:
            stream = client.chat.completions.create(model=MODEL, stream=True, temperature=0, max_tokens=4,
                                                    messages=[{"role": "user", "content": "Say hello."}])
            answers["api-1"] = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

        threads = [threading.Thread(target=first_api_question)]
        threads[0].start()
        assert hold.reached.wait(120), "the first API question never reached the model"

        window = open_window(qtbot, data, watch_folders=False, service_factory=lambda settings: service)
        wait_for_films(qtbot, window, {FILM})
        click_film(qtbot, window, FILM)
        qtbot.waitUntil(lambda: window.chat.conversations.count() >= 1, timeout=30_000)
        click(qtbot, window.chat.new_button)
        qtbot.waitUntil(window.chat.ask_button.isEnabled, timeout=30_000)
        qtbot.keyClicks(window.chat.question, "Where is the treasure?")
        click(qtbot, window.chat.ask_button)
        qtbot.waitUntil(lambda: window.chat.stream is not None, timeout=30_000)
        desktop_queued = next(iter(window.chat.stream))
        assert (desktop_queued.type, desktop_queued.position) == ("queued", 1)  # behind the API's question

        second: dict[str, object] = {}
        body = {"model": MODEL, "temperature": 0, "max_tokens": 4,
                "messages": [{"role": "user", "content": "Say goodbye."}]}

        def second_api_question() -> None:
            second["position"], second["text"] = _queued_position(running.url, body)

        threads.append(threading.Thread(target=second_api_question))
        threads[1].start()
        qtbot.waitUntil(lambda: service.status()["waiting"] == 2, timeout=30_000)
        assert service.status()["busy"] and service.stats.answered == 0, "nothing was answered while held"

        hold.release.set()
        qtbot.waitUntil(lambda: not window.chat.busy, timeout=120_000)
        for thread in threads:
            thread.join(120)
        assert second["position"] == 2, "the API's second question waited behind the desktop's"
        assert answers["api-1"] and "".join(second["text"]) and window.chat.turns[-1].answer
        qtbot.waitUntil(lambda: service.stats.answered == 3, timeout=30_000)  # counted just after the last event
        assert service.status()["waiting"] == 0 and service.stats.failed == 0
    finally:
        hold.release.set()
        running.stop()
        service.close()
