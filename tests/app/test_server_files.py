"""No file but a probed film inside a library folder leaves the server (``GET /v1/movies/{id}/video``),
tried as a hostile client would against a real server on 127.0.0.1 with a tiny indexed library:
a link in the folder that leads out of it, a TypeScript ``.ts`` file, a binary ``.ts`` that is no
video, a database whose stored path was moved outside the folders; and who may add a folder
from the web UI (``ServerSettings.allow_add_folders``). The rule is ``indexer.library.film_file``."""
from __future__ import annotations

import argparse
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from app.server.app import Running, start, upload_dir
from app.server.indexing import ADD_FOLDERS_OFF
from app.server.sample import FILM, MODEL
from app.server.settings import ServerSettings
from cli.web import add_server_arguments, server_options
from llamavid.media.synthetic import clock, write_video
from llamavid.model.tiny import write_tiny_checkpoint
from llamavid.runtime.options import LoadOptions

pytestmark = pytest.mark.slow

KEY = "correct-horse-battery"
CPU = LoadOptions(device="cpu", dtype="fp32")
TYPESCRIPT = 'import { film } from "./film";\n\nexport const title: string = film.title;\n'


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> dict[str, Path]:
    """A folder of films indexed by the real indexer: ``Harbor.mp4``; ``Second.mp4``; ``Stream.ts`` (a real
    MPEG transport stream); ``Link.mp4``, a link to ``Harbor.mp4``; ``Outside.mp4``, a link to a real
    film outside every library folder; ``app.ts`` (TypeScript) and ``junk.ts`` (binary, no video)."""
    root = tmp_path_factory.mktemp("files")
    data, films, outside = root / "data", root / "films", root / "outside"
    write_tiny_checkpoint(data / "models" / MODEL)
    write_video(films / FILM, clock(64, 48, 5), fps=5, seconds=3)
    write_video(films / "Second.mp4", clock(64, 48, 5), fps=5, seconds=3)
    write_video(films / "Stream.ts", clock(64, 48, 5), fps=5, seconds=3)
    write_video(outside / "Elsewhere.mp4", clock(48, 32, 5), fps=5, seconds=3)
    (films / "Link.mp4").symlink_to(films / FILM)
    (films / "Outside.mp4").symlink_to(outside / "Elsewhere.mp4")
    (films / "app.ts").write_text(TYPESCRIPT)
    (films / "junk.ts").write_bytes(b"\x00\x01not a transport stream\x00" * 64)
    for args in (["index", "add", str(films)], ["index", "run", "--speech", "never", "--quiet"]):
        proc = subprocess.run([sys.executable, "-m", "cli", "--data-dir", str(data), *args],
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"llamavid {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return {"data": data, "films": films, "outside": outside}


@pytest.fixture(scope="module")
def server(library) -> Running:
    """No key, on loopback (the default): folders may be added from the page."""
    running = start(ServerSettings(data_dir=library["data"], port=0, ui=False, load_options=CPU))
    try:
        yield running
    finally:
        running.stop()


def films_by_path(server: Running) -> dict[str, dict]:
    return {m["path"]: m for m in httpx.get(server.url + "v1/movies", timeout=60).json()["data"]}


def video(server: Running, movie_id: int) -> httpx.Response:
    return httpx.get(f"{server.url}v1/movies/{movie_id}/video", timeout=60)


def assert_refused(response: httpx.Response) -> None:
    assert response.status_code == 404, response.text[:200]
    error = response.json()["error"]
    assert error["code"] == "movie_file_missing" and error["type"] and error["message"]


def test_a_link_out_of_the_library_is_never_served(server, library) -> None:
    films = films_by_path(server)
    outside = films["Outside.mp4"]
    assert outside["width"] == 48  # the indexer probed it through the link: only the server's rule stops it
    assert_refused(video(server, outside["id"]))
    inside = video(server, films["Link.mp4"]["id"])  # the negative control: a link to a film of the folder
    assert inside.status_code == 200
    assert inside.content == (library["films"] / FILM).read_bytes()
    assert inside.headers["content-type"] == "video/mp4"
    assert video(server, films[FILM]["id"]).content == inside.content


def test_a_ts_file_is_a_film_only_when_it_is_a_transport_stream(server, library) -> None:
    films = films_by_path(server)
    assert "app.ts" not in films  # TypeScript: the scanner never took it for a film
    junk = films["junk.ts"]  # a binary .ts: queued, and the probe failed it
    assert junk["state"] == "failed" and junk["error"] and not junk["indexed"] and junk["width"] is None
    assert_refused(video(server, junk["id"]))
    stream = films["Stream.ts"]  # a real MPEG transport stream is a film as before
    assert stream["indexed"] and stream["width"] == 64
    served = video(server, stream["id"])
    assert served.status_code == 200 and served.content == (library["films"] / "Stream.ts").read_bytes()


def test_a_stored_path_outside_the_library_is_refused(server, library) -> None:
    """A stale or edited database: the film's row now names a real, probed video outside every folder."""
    second = films_by_path(server)["Second.mp4"]
    assert video(server, second["id"]).status_code == 200
    outside = library["outside"] / "Elsewhere.mp4"
    with sqlite3.connect(library["data"] / "library.db") as db:
        original = db.execute("SELECT path FROM movies WHERE id = ?", [second["id"]]).fetchone()[0]
        db.execute("UPDATE movies SET path = ? WHERE id = ?", [str(outside), second["id"]])
    try:
        response = video(server, second["id"])
        assert_refused(response)
        assert outside.read_bytes()[-64:] not in response.content
    finally:
        with sqlite3.connect(library["data"] / "library.db") as db:
            db.execute("UPDATE movies SET path = ? WHERE id = ?", [original, second["id"]])
    assert video(server, second["id"]).status_code == 200


def test_a_library_folder_that_is_a_link_is_followed(server, library, tmp_path) -> None:
    """The rule compares real paths: the folder itself may be a link (its films are still its own)."""
    from indexer.library import film_file, get_movie
    from indexer.store import LibraryStore

    alias = tmp_path / "alias"
    alias.symlink_to(library["films"], target_is_directory=True)
    with LibraryStore.open(library["data"] / "library.db") as store:
        movie = get_movie(store, films_by_path(server)[FILM]["id"])
        movie.path = str(alias / FILM)  # the same film, reached through a link to its folder
        assert film_file(store, movie) == (library["films"] / FILM).resolve()
        movie.width = None  # never probed as a video
        assert film_file(store, movie) is None


def test_the_web_ui_adds_folders_only_when_the_machine_allows_it(server, library, tmp_path) -> None:
    from app.server.ui import Handlers, gr  # gradio: only for this test

    keyed = start(ServerSettings(data_dir=library["data"], port=0, api_key=KEY, ui=False, load_options=CPU))
    try:
        assert keyed.app.state.indexer.may_add_folders is False
        handlers = Handlers(keyed.app.state.service, keyed.app.state.indexer, upload_dir())
        with pytest.raises(gr.Error) as refused:
            handlers.add_folder(str(tmp_path))
        assert ADD_FOLDERS_OFF in str(refused.value) and "--allow-add-folders" in ADD_FOLDERS_OFF
    finally:
        keyed.stop()
    with sqlite3.connect(library["data"] / "library.db") as db:
        folders = [r[0] for r in db.execute("SELECT path FROM libraries")]
    assert folders == [str(library["films"].resolve())]
    # loopback without a key (the fixture's server): this computer's user adds a folder
    empty = tmp_path / "more films"
    empty.mkdir()
    local = Handlers(server.app.state.service, server.app.state.indexer, upload_dir())
    _, _, added = local.add_folder(str(empty))
    assert added.startswith(f"Added {empty}")
    with sqlite3.connect(library["data"] / "library.db") as db:
        db.execute("DELETE FROM libraries WHERE path = ?", [str(empty.resolve())])


def test_who_may_add_folders_is_decided_by_the_server_options(tmp_path) -> None:
    assert ServerSettings(data_dir=tmp_path).allow_add_folders is True
    assert ServerSettings(data_dir=tmp_path, api_key=KEY).allow_add_folders is False
    assert ServerSettings(data_dir=tmp_path, host="0.0.0.0", api_key=KEY).allow_add_folders is False
    assert ServerSettings(data_dir=tmp_path, api_key=KEY, allow_add_folders=True).allow_add_folders is True
    assert ServerSettings(data_dir=tmp_path, allow_add_folders=False).allow_add_folders is False
    parser = argparse.ArgumentParser()
    add_server_arguments(parser)
    assert server_options(parser.parse_args([]))["allow_add_folders"] is None
    assert server_options(parser.parse_args(["--allow-add-folders"]))["allow_add_folders"] is True
    assert server_options(parser.parse_args(["--no-allow-add-folders"]))["allow_add_folders"] is False


def test_only_text_named_ts_is_skipped_by_the_scanner(tmp_path) -> None:
    from indexer.scan import text_named_ts

    def named(name: str, content: bytes) -> Path:
        (tmp_path / name).write_bytes(content)
        return tmp_path / name

    assert text_named_ts(named("app.ts", TYPESCRIPT.encode()))
    assert text_named_ts(named("long.ts", ("// é\n" * 2000).encode()[:5000]))  # a character cut at 4 KiB
    assert not text_named_ts(named("app.mp4", TYPESCRIPT.encode()))  # only .ts: others go to the probe
    assert not text_named_ts(named("empty.ts", b""))  # the probe says it was not copied completely
    assert not text_named_ts(named("stream.ts", b"\x47\x40\x00\x10" + b"\xff" * 184))
    assert not text_named_ts(named("m2ts.ts", b"\x00\x00\x00\x00\x47\x40\x00\x10" + b"\xff" * 184))
    assert not text_named_ts(named("binary.ts", b"abc\x00def"))
