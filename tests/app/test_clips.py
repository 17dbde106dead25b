"""A moment of a library film saved as a clip (``app.clips``) through every front end: a film written
with PyAV (the clock picture, keyframes every 4 s, a tone) and its English ``.srt``, indexed by the
real indexer with the tiny model; ``llamavid index clip`` and ``index search --clip``; the server's
``GET /v1/movies/{id}/clip`` through a real server (an MP4 of the span, its lines as ``.srt``; 4xx in
OpenAI's shape for bad spans, and a 404 for a film outside the library); the web UI's Save clip
link; the desktop's Save clip action on a moment, with its file dialog, progress and Cancel."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import av
import httpx
import pysubs2
import pytest

import cli
from app.clips import clip_name, export_moment
from app.server.app import Running, start
from app.server.sample import MODEL
from app.server.settings import ServerSettings
from app.server.views import moments_html
from indexer.library import find_movie
from indexer.store import LibraryStore
from llamavid.media.synthetic import X264, clock, srt_text, write_video
from llamavid.model.tiny import write_tiny_checkpoint
from llamavid.runtime.options import LoadOptions

pytestmark = pytest.mark.slow

FPS = 10
CUES = [(1.0, 2.5, "First line"), (6.0, 7.5, "The map is under the lighthouse."), (9.0, 9.8, "Edge line"),
        (11.3, 12.8, "We sail at night.")]


def film(path: Path, seconds: int = 20) -> Path:
    return write_video(path, clock(96, 64, FPS), fps=FPS, seconds=seconds, audio=True,
                       x264=X264(preset="ultrafast", keyint=40, fixed_keyint=True))


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> dict[str, Path]:
    """``films/Harbor.mp4`` with ``Harbor.en.srt``, and ``films/Outside.mp4``, a link to a film outside
    every library folder; indexed by ``llamavid index`` in a child process."""
    root = tmp_path_factory.mktemp("clips")
    data, films, outside = root / "data", root / "films", root / "outside"
    write_tiny_checkpoint(data / "models" / MODEL)
    film(films / "Harbor.mp4")
    (films / "Harbor.en.srt").write_text(srt_text(CUES))
    film(outside / "Elsewhere.mp4", seconds=8)
    (films / "Outside.mp4").symlink_to(outside / "Elsewhere.mp4")
    for args in (["index", "add", str(films)], ["index", "run", "--speech", "never", "--quiet"]):
        proc = subprocess.run([sys.executable, "-m", "cli", "--data-dir", str(data), *args],
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"llamavid {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return {"data": data, "films": films}


def movie(library, ref: str = "Harbor.mp4"):
    with LibraryStore.open(library["data"] / "library.db") as store:
        return find_movie(store, ref)


def video_facts(path: Path) -> tuple[int, float]:
    """(frames, seconds of audio) of a clip."""
    with av.open(str(path)) as container:
        count = sum(1 for _ in container.decode(video=0))
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        audio = sum(f.samples for f in container.decode(stream)) / stream.codec_context.sample_rate
    return count, audio


def srt_times(text: str) -> list[tuple[float, float, str]]:
    return [(e.start / 1000, e.end / 1000, e.plaintext) for e in pysubs2.SSAFile.from_string(text, format_="srt")]


def test_a_moment_becomes_a_clip_with_its_lines_timed_from_the_clip(library, tmp_path) -> None:
    harbor = movie(library)
    with LibraryStore.open(library["data"] / "library.db") as store:
        made = export_moment(store, harbor, 6.0, 7.5, tmp_path / "line.mp4")  # 4.0 s is a keyframe: copied
        encoded = export_moment(store, harbor, 11.3, 12.8, tmp_path / "night.mkv")  # 9.3 s is not: encoded
    assert (made.clip.start, made.clip.end, made.clip.method) == (4.0, 9.5, "copy")
    frames, audio = video_facts(made.clip.path)
    assert abs(frames / FPS - 5.5) <= 2 / FPS and abs(audio - 5.5) <= 0.1
    assert made.subtitles == tmp_path / "line.srt" and made.lines == 2
    assert srt_times(made.subtitles.read_text()) == [(2.0, 3.5, "The map is under the lighthouse."),
                                                     (5.0, 5.5, "Edge line")]  # cut at the clip's end
    assert (encoded.clip.start, encoded.clip.end, encoded.clip.method) == (9.3, 14.8, "encode")
    assert srt_times(encoded.subtitles.read_text()) == [(0.0, 0.5, "Edge line"), (2.0, 3.5, "We sail at night.")]


def test_the_command_line_saves_a_moment_and_the_lines_a_search_finds(library, tmp_path, capsys) -> None:
    data = ["--data-dir", str(library["data"])]
    assert cli.main([*data, "index", "clip", "Harbor.mp4", "0:06", "7.5", "-o", str(tmp_path / "a.mp4")]) == 0
    out = capsys.readouterr().out
    assert f"{tmp_path / 'a.mp4'}: 4.00-9.50 s of Harbor.mp4 (copy, 2 subtitle lines in {tmp_path / 'a.srt'})" in out
    assert (tmp_path / "a.mp4").stat().st_size > 0

    assert cli.main([*data, "index", "search", "sail at night", "--limit", "1", "--clip", str(tmp_path / "hits")]) == 0
    capsys.readouterr()
    name = clip_name(movie(library), 11.3)
    assert sorted(p.name for p in (tmp_path / "hits").iterdir()) == [name, name.replace(".mp4", ".srt")]
    assert srt_times((tmp_path / "hits" / name.replace(".mp4", ".srt")).read_text())[-1] == (
        2.0, 3.5, "We sail at night.")

    assert cli.main([*data, "index", "clip", "Harbor.mp4", "5", "400", "-o", str(tmp_path / "b.mp4")]) == 1
    assert "at most 5 minutes" in capsys.readouterr().err
    assert cli.main([*data, "index", "clip", "Outside.mp4", "1", "2", "-o", str(tmp_path / "c.mp4")]) == 1
    assert "moved out of the library's folders" in capsys.readouterr().err
    assert not (tmp_path / "b.mp4").exists() and not (tmp_path / "c.mp4").exists()


@pytest.fixture(scope="module")
def server(library) -> Running:
    running = start(ServerSettings(data_dir=library["data"], port=0, ui=False,
                                   load_options=LoadOptions(device="cpu", dtype="fp32")))
    try:
        yield running
    finally:
        running.stop()


def test_the_server_sends_a_moment_as_an_mp4_and_its_lines(server, library, tmp_path) -> None:
    harbor = movie(library)
    got = httpx.get(f"{server.url}v1/movies/{harbor.id}/clip", params={"start": 11.3, "end": 12.8}, timeout=120)
    assert got.status_code == 200, got.text[:300]
    assert got.headers["content-type"] == "video/mp4"
    assert got.headers["content-disposition"] == "attachment; filename*=utf-8''Harbor%200-00-11.mp4"
    (tmp_path / "got.mp4").write_bytes(got.content)
    frames, audio = video_facts(tmp_path / "got.mp4")
    assert abs(frames / FPS - 5.5) <= 2 / FPS and abs(audio - 5.5) <= 0.1
    lines = httpx.get(f"{server.url}v1/movies/{harbor.id}/clip",
                      params={"start": 11.3, "end": 12.8, "format": "srt"}, timeout=60)
    assert lines.status_code == 200 and lines.headers["content-type"].startswith("application/x-subrip")
    assert srt_times(lines.text) == [(0.0, 0.5, "Edge line"), (2.0, 3.5, "We sail at night.")]
    margin0 = httpx.get(f"{server.url}v1/movies/{harbor.id}/clip",
                        params={"start": 11.3, "end": 12.8, "margin": 0, "format": "srt"}, timeout=60)
    assert srt_times(margin0.text) == [(0.0, 1.5, "We sail at night.")]
    assert not list((library["data"] / "cache").glob("clip-*"))  # the temporary clip is gone once sent


@pytest.mark.parametrize(("params", "status", "param", "says"), [
    ({"end": 5}, 400, "start", "give the moment's span"),
    ({"start": 5, "end": 4}, 400, "start", "must end after it starts"),
    ({"start": 30, "end": 31}, 400, "start", "outside"),
    ({"start": 1, "end": 400}, 400, "start", "at most 5 minutes"),
    ({"start": "soon", "end": 4}, 400, "start", ""),
    ({"start": 1, "end": 2, "margin": 99}, 400, "margin", "from 0 to 30"),
    ({"start": 1, "end": 2, "format": "gif"}, 400, "format", "mp4 or srt"),
])
def test_bad_spans_are_refused_in_openais_shape(server, library, params, status, param, says) -> None:
    got = httpx.get(f"{server.url}v1/movies/{movie(library).id}/clip", params=params, timeout=60)
    assert got.status_code == status, got.text[:300]
    error = got.json()["error"]
    assert error["param"] == param and says in error["message"] and error["type"] == "invalid_request_error"


def test_no_clip_of_a_film_outside_the_library_or_not_there(server, library) -> None:
    outside = httpx.get(f"{server.url}v1/movies/{movie(library, 'Outside.mp4').id}/clip",
                        params={"start": 1, "end": 2}, timeout=60)
    assert outside.status_code == 404 and outside.json()["error"]["code"] == "movie_file_missing"
    missing = httpx.get(f"{server.url}v1/movies/999/clip", params={"start": 1, "end": 2}, timeout=60)
    assert missing.status_code == 404 and missing.json()["error"]["param"] == "movie_id"


def test_the_web_uis_save_clip_link_downloads_the_moment(server, library) -> None:
    harbor = movie(library)
    page = moments_html([{"start": 6.0, "end": 7.5, "why": ["subtitle"]}], harbor.id)
    assert moments_html([{"start": 6.0, "end": 7.5, "why": []}]).count("Save clip") == 0  # no film: no link
    href = page.split('class="clip" href="', 1)[1].split('"', 1)[0].replace("&amp;", "&")
    assert href == f"/v1/movies/{harbor.id}/clip?start=6.000&end=7.500"
    got = httpx.get(server.url.rstrip("/") + href, timeout=120)
    assert got.status_code == 200 and got.headers["content-type"] == "video/mp4" and len(got.content) > 1000


def test_the_desktop_saves_a_moment_from_its_context_menu(qtbot, library, tmp_path, monkeypatch) -> None:
    from PySide6.QtWidgets import QFileDialog

    from app.desktop.chat import ChatPane
    from app.desktop.clips import ClipWorker

    pane = ChatPane()
    qtbot.addWidget(pane)
    pane.movie = movie(library)
    pane.service = SimpleNamespace(data=SimpleNamespace(database=library["data"] / "library.db"))
    asked: list[str] = []
    monkeypatch.setattr(QFileDialog, "getSaveFileName",
                        staticmethod(lambda parent, title, suggested, filters: (asked.append(suggested) or
                                                                                str(tmp_path / "saved"), "")))
    view = pane._add_turn("Where is the map?", "Under the lighthouse.", [{"start": 6.0, "end": 7.5, "why": []}])
    said: list[str] = []
    pane.info.connect(said.append)
    with qtbot.waitSignal(pane.clips.ended, timeout=60000):
        save = view.moment_buttons[0].actions()
        assert [a.text() for a in save] == ["Save clip…"]
        save[0].trigger()
    assert asked and asked[0].endswith("Harbor 0-00-06.mp4")
    made = pane.clips.result
    assert pane.clips.error is None and made is not None and made.clip.path == tmp_path / "saved.mp4"
    assert abs(video_facts(made.clip.path)[0] / FPS - 5.5) <= 2 / FPS
    assert (tmp_path / "saved.srt").exists() and said and "saved.mp4" in said[0]

    # Cancel: the worker stops at its next packet and leaves nothing (run here, on this thread)
    worker = ClipWorker(library["data"] / "library.db", pane.movie, 11.3, 12.8, tmp_path / "cancelled.mp4")
    ends: list[str] = []
    for signal, name in ((worker.done, "done"), (worker.cancelled, "cancelled"), (worker.failed, "failed"),
                         (worker.finished, "finished")):
        signal.connect(lambda *_, n=name: ends.append(n))
    worker.cancel()
    worker.run()
    assert ends == ["cancelled", "finished"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["saved.mp4", "saved.srt"]
