"""A film a person asks about through the API, or opens in the web UI, goes first in the indexing queue
(issue 27); the web UI's queue line lists the order and how long it takes. A real server on 127.0.0.1
with the tiny model and three films added but not indexed yet."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import openai
import pytest

from app.server.app import Running
from app.server.sample import MODEL
from app.server.settings import ServerSettings
from app.server.ui import Handlers
from indexer.store import LibraryStore
from llamavid.media.synthetic import clock, write_video
from llamavid.model.tiny import write_tiny_checkpoint
from llamavid.paths import DataDir
from llamavid.runtime.options import LoadOptions
from tests.support.served import serving

FILMS = ("A.mp4", "B.mp4", "C.mp4")


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("order")
    data, films = root / "data", root / "films"
    write_tiny_checkpoint(data / "models" / MODEL)
    for name in FILMS:
        write_video(films / name, clock(32, 32, 5), fps=5, seconds=2)
    proc = subprocess.run([sys.executable, "-m", "cli", "--data-dir", str(data), "index", "add", str(films)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return data


@pytest.fixture(scope="module")
def server(library) -> Running:
    with serving(ServerSettings(data_dir=library, port=0, ui=False,
                                load_options=LoadOptions(device="cpu", dtype="fp32"))) as running:
        yield running  # the ``client`` fixture of tests/app/conftest.py talks to it


def order(data: Path) -> list[str]:
    with LibraryStore.open(DataDir(data).database) as store:
        paths = {m["id"]: Path(m["path"]).name for m in store.db.query("SELECT id, path FROM movies")}
        return [paths[i] for i in store.queue_order()]


def movie_id(data: Path, name: str) -> int:
    with LibraryStore.open(DataDir(data).database) as store:
        return next(r["id"] for r in store.db.query("SELECT id, path FROM movies") if r["path"].endswith(name))


def test_asking_about_a_film_not_indexed_yet_puts_it_first(server, client, library) -> None:
    assert order(library) == list(FILMS)
    messages = [{"role": "user", "content": [{"type": "text", "text": "What happens?"},
                                             {"type": "movie", "movie_id": movie_id(library, "C.mp4")}]}]
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model=MODEL, messages=messages, max_tokens=2)
    assert caught.value.status_code == 409
    assert "now first in the indexing queue" in caught.value.body["message"], caught.value.body
    assert order(library) == ["C.mp4", "A.mp4", "B.mp4"]
    with pytest.raises(openai.APIStatusError) as again:  # already first: not said twice
        client.chat.completions.create(model=MODEL, messages=messages, max_tokens=2)
    assert "now first" not in again.value.body["message"]


def test_opening_a_film_in_the_web_ui_puts_it_first_and_the_queue_shows_the_order(server, library,
                                                                                     tmp_path) -> None:
    handlers = Handlers(server.app.state.service, server.app.state.indexer, tmp_path)
    handlers.pick_film(movie_id(library, "B.mp4"))
    assert order(library)[0] == "B.mp4"
    line = handlers.queue()
    assert "3 films to index" in line and "next B.mp4" in line, line
