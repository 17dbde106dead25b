"""The desktop window's library: folders of real films (PyAV) indexed by the real indexer in a child
process of the window, with progress, thumbnails, pause and resume, re-index and removal; closing
the window while a film is indexed, then opening it again."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("PySide6.QtMultimedia", reason="PySide6-Addons (QtMultimedia) is part of the install")

from PySide6.QtWidgets import QFileDialog, QMessageBox  # noqa: E402

from app.desktop.thumbnails import thumbnail_dir  # noqa: E402
from indexer.library import frame_times, get_movie, list_movies, open_library  # noqa: E402
from indexer.store import LibraryStore  # noqa: E402
from llamavid.model.eva import EvaVisionTower  # noqa: E402
from tests.support.desktop import (  # noqa: E402
    alive,
    click,
    click_film,
    install_tiny,
    make_films,
    open_window,
    processes_using,
    save_test_settings,
    wait_for_films,
)

pytestmark = pytest.mark.slow

INDEXING = 300_000  # ms: a cold start of the indexer process on a busy two-core machine is slow


@pytest.fixture
def setup(tmp_path: Path, tiny_checkpoint: Path):
    """An empty library with the tiny model installed (its EVA indexes) and a folder of two films."""
    data = tmp_path / "data"
    data.mkdir()
    install_tiny(data, tiny_checkpoint)
    films = make_films(tmp_path / "films", seconds=40)
    return data, tmp_path / "films", films


def _state(data: Path, name: str):
    db = open_library(data)
    try:
        return next(m for m in list_movies(db) if Path(m.rel_path).name == name)
    finally:
        db.close()


def _all_ready(window) -> bool:
    snap = window.snapshot
    return snap is not None and bool(snap.movies) and all(m.state == "done" for m in snap.movies)


def test_adding_a_folder_indexes_its_films_in_the_background_with_progress(qtbot, setup, monkeypatch) -> None:
    data, folder, _ = setup
    loaded_here: list[object] = []
    monkeypatch.setattr(EvaVisionTower, "from_file", lambda *a, **k: loaded_here.append(a))
    save_test_settings(data, index_idle=0.3)  # a lighter load: chunks come slowly enough to watch
    window = open_window(qtbot, data)
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, **k: str(folder))
    click(qtbot, window.library.add_button)
    wait_for_films(qtbot, window, {"Harbor.mkv", "Forest.mp4"})
    assert [window.library.folders.item(i).text() for i in range(window.library.folders.count())] == [str(folder)]
    assert "2 new films" in window.message.text()

    seen: list[tuple[str, int, int, bool]] = []

    def progressing() -> bool:
        for row in window.library.rows.values():
            bar = row.progress
            seen.append((row.state.text(), bar.value(), bar.maximum(), bar.isVisible()))
            if row.movie.state == "running" and bar.isVisible() and 0 < bar.value() < bar.maximum():
                return True
        return False

    qtbot.waitUntil(progressing, timeout=INDEXING)
    text, done, total, _ = seen[-1]
    assert text.startswith("indexing, reading frames: ") and f"/ {total} frames" in text, seen[-1]
    assert window.indexer.running() and window.library.status.text().startswith("Indexing ")
    qtbot.waitUntil(lambda: _all_ready(window), timeout=INDEXING)
    qtbot.waitUntil(lambda: not window.indexer.running(), timeout=60_000)  # exits once the queue is empty
    harbor, forest = window.library.row_by_name("Harbor.mkv"), window.library.row_by_name("Forest.mp4")
    assert harbor.state.text() == "ready to chat" and not harbor.progress.isVisible()
    assert harbor.details.text() == "0:00:40 · subtitles: subtitle files (en)"
    assert forest.details.text() == "0:00:26 · subtitles: embedded (eng)"
    qtbot.waitUntil(lambda: window.library.status.text() == "All films indexed")
    # a thumbnail per film, cut from the video at a stored frame time and cached under <data>/cache
    qtbot.waitUntil(lambda: harbor.has_thumbnail() and forest.has_thumbnail(), timeout=60_000)
    cached = sorted(p.name for p in thumbnail_dir(data).glob("*.jpg"))
    assert len(cached) == 2 and Path(harbor.thumbnail_file).parent == thumbnail_dir(data)
    movie = _state(data, "Harbor.mkv")
    times = frame_times(open_library(data), movie)
    assert int(Path(harbor.thumbnail_file).stem.rsplit("-", 1)[1]) in {int(round(t * 1000)) for t in times}
    assert loaded_here == []  # the window never loaded a vision model: the indexer did, in its own process


def test_pause_and_resume_indexing(qtbot, setup) -> None:
    data, folder, _ = setup
    save_test_settings(data, index_idle=0.5)
    window = open_window(qtbot, data)
    window.add_folder(str(folder))
    qtbot.waitUntil(lambda: window.indexer.running() and any(
        m.state == "running" and m.progress[0] > 0 for m in (window.snapshot.movies if window.snapshot else [])),
        timeout=INDEXING)
    pid = window.indexer.pid()
    click(qtbot, window.library.pause_button)
    qtbot.waitUntil(lambda: not window.indexer.running(), timeout=60_000)  # after its current chunk
    assert not alive(pid)
    qtbot.waitUntil(lambda: window.library.pause_button.text() == "Resume indexing")
    paused_line, *order = window.library.status.text().splitlines()
    assert re.fullmatch(r"Indexing paused \([12] films? waiting\)", paused_line)
    assert order and re.match(r"[12] films? to index", order[0])  # the order, and how long once measured
    with LibraryStore.open(data / "library.db") as store:
        assert store.queue_paused() and store.queue_counts().get("running", 0) == 0
    stopped_at = {name: _state(data, name).frames for name in ("Harbor.mkv", "Forest.mp4")}
    assert any(stopped_at.values())
    waiting = [r for r in window.library.rows.values() if r.movie.state != "done"]
    assert waiting and all(r.state.text().startswith("paused") for r in waiting)

    click(qtbot, window.library.pause_button)
    qtbot.waitUntil(lambda: window.indexer.running(), timeout=10_000)
    qtbot.waitUntil(lambda: _all_ready(window), timeout=INDEXING)
    for name, frames in stopped_at.items():
        assert _state(data, name).frames >= frames


def test_opening_a_film_that_waits_indexes_it_next(qtbot, setup) -> None:
    """The film being indexed yields to the one a person opens, at its next chunk, and keeps its chunks."""
    data, folder, _ = setup
    save_test_settings(data, index_idle=0.5)
    window = open_window(qtbot, data)
    window.add_folder(str(folder))
    qtbot.waitUntil(lambda: window.snapshot is not None and any(
        m.state == "running" and m.progress[0] > 0 for m in window.snapshot.movies), timeout=INDEXING)
    first = next(m for m in window.snapshot.movies if m.state == "running")
    other = next(m for m in window.snapshot.movies if m.id != first.id)
    click_film(qtbot, window, Path(other.rel_path).name)
    qtbot.waitUntil(lambda: _state(data, Path(other.rel_path).name).state == "running", timeout=INDEXING)
    yielded = _state(data, Path(first.rel_path).name)
    assert yielded.state == "queued" and yielded.frames > 0  # back in the queue with its finished chunks
    qtbot.waitUntil(lambda: _all_ready(window), timeout=INDEXING)


def test_reindexing_a_finished_film_reads_it_again(qtbot, setup) -> None:
    data, folder, _ = setup
    save_test_settings(data)
    window = open_window(qtbot, data)
    window.add_folder(str(folder))
    qtbot.waitUntil(lambda: _all_ready(window), timeout=INDEXING)
    before = _state(data, "Forest.mp4")
    cache = Path(before.feature_path)
    first_mtime = cache.stat().st_mtime_ns
    click_film(qtbot, window, "Forest.mp4")
    click(qtbot, window.library.reindex_button)
    qtbot.waitUntil(lambda: "queued to be indexed again" in window.message.text(), timeout=30_000)
    qtbot.waitUntil(lambda: _all_ready(window) and cache.exists() and cache.stat().st_mtime_ns != first_mtime,
                    timeout=INDEXING)
    after = _state(data, "Forest.mp4")
    assert after.frames == before.frames and after.cue_count == before.cue_count


def test_removing_a_folder_forgets_its_films_and_their_caches(qtbot, setup, monkeypatch) -> None:
    data, folder, films = setup
    save_test_settings(data)
    window = open_window(qtbot, data)
    window.add_folder(str(folder))
    qtbot.waitUntil(lambda: _all_ready(window), timeout=INDEXING)
    qtbot.waitUntil(lambda: all(r.has_thumbnail() for r in window.library.rows.values()), timeout=60_000)
    caches = [Path(m.feature_path) for m in window.snapshot.movies]
    assert all(p.is_file() for p in caches)
    click_film(qtbot, window, "Harbor.mkv")
    window.library.folders.setCurrentRow(0)
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Yes)
    click(qtbot, window.library.remove_button)
    qtbot.waitUntil(lambda: window.snapshot.movies == [] and window.library.films.count() == 0, timeout=30_000)
    assert window.library.folders.count() == 0 and window.library.empty.isVisible()
    qtbot.waitUntil(lambda: window.tasks.pending == 0)  # a thumbnail on its way finds its film gone
    assert not any(p.exists() for p in caches) and not list(thumbnail_dir(data).glob("*.jpg"))
    assert all(p.is_file() for p in films.values())  # the films themselves are never touched
    assert window.player.movie is None and window.chat.movie is None


def test_closing_during_indexing_loses_nothing_and_leaves_no_process(qtbot, setup) -> None:
    data, folder, _ = setup
    save_test_settings(data, index_idle=1.0)
    window = open_window(qtbot, data)
    window.add_folder(str(folder))
    qtbot.waitUntil(lambda: window.indexer.running() and any(
        m.state == "running" and m.stage == "features" and m.progress[0] >= 8
        for m in (window.snapshot.movies if window.snapshot else [])), timeout=INDEXING)
    pid = window.indexer.pid()
    window.close()

    assert not alive(pid), "the indexer process outlived the window"
    assert processes_using(data) == [], processes_using(data)
    db = open_library(data)
    movies = {Path(m.rel_path).name: m for m in list_movies(db)}
    assert {m.state for m in movies.values()} <= {"queued", "done"}, movies  # nothing left "running"
    partial = next(m for m in movies.values() if m.state == "queued" and m.frames > 0)
    kept_frames, kept_times = partial.frames, frame_times(db, partial).tolist()
    assert kept_frames >= 8 and len(kept_times) == kept_frames
    db.close()

    again = open_window(qtbot, data)  # picks the queue up by itself and resumes the film
    qtbot.waitUntil(lambda: again.indexer.running(), timeout=30_000)
    progress: list[int] = []

    def finished() -> bool:
        movie = again.snapshot.movie(partial.id) if again.snapshot else None
        if movie is not None and movie.state == "running" and movie.stage == "features":
            progress.append(movie.progress[0])
        return _all_ready(again)

    qtbot.waitUntil(finished, timeout=INDEXING)
    assert progress and min(progress) >= kept_frames, progress  # it went on from there, not from the start
    db = open_library(data)
    resumed = get_movie(db, partial.id)
    times = frame_times(db, resumed)
    assert resumed.features_complete and resumed.frames >= kept_frames
    assert times[:kept_frames].tolist() == kept_times
    assert np.all(np.diff(times) > 0)
    db.close()
    again.close()
    assert processes_using(data) == []


def test_an_indexer_that_cannot_work_says_why_and_is_not_restarted(qtbot, tmp_path: Path) -> None:
    data = tmp_path / "data"  # no model installed: no vision weights for the indexer
    make_films(tmp_path / "films", seconds=10)
    save_test_settings(data)
    window = open_window(qtbot, data, watch_folders=False)
    window.add_folder(str(tmp_path / "films"))
    qtbot.waitUntil(lambda: window.message.text().startswith("Indexing stopped: no vision weights installed"),
                    timeout=INDEXING)
    assert "llamavid models pull" in window.message.text() and window.message.kind == "error"
    qtbot.waitUntil(lambda: window.library.status.text().startswith("Indexing stopped: no vision weights"))
    starts = window.indexer.started_at
    qtbot.waitUntil(lambda: window.snapshot is not None and window.snapshot.waiting == 2)
    for _ in range(3):  # several more reads of the library: the failed indexer is left alone
        seen = window.poll_tasks.delivery
        qtbot.waitSignal(seen.delivered, timeout=5_000).wait()
    assert not window.indexer.running() and window.indexer.started_at == starts
    assert all(r.state.text() == "waiting to be indexed" for r in window.library.rows.values())
