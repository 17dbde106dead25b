"""The order of work (issue 27): a film a person opens or asks about goes first, the film being indexed
yields to it at its next chunk and later resumes from its finished chunks, and the library's estimate
is the sum of the films' estimates, in queue order."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from indexer import controls, library
from indexer.estimate import film_seconds, library_estimate, long_duration
from indexer.library import list_movies
from indexer.pipeline import IndexOptions
from indexer.runner import run_queue
from indexer.store import LibraryStore
from llamavid.paths import DataDir
from tests.support.media import make_video
from tests.support.wait import wait_for


def _ids(cli) -> dict[str, int]:
    return {name: row["id"] for name, row in cli.status().items()}


def _order(cli) -> list[str]:
    names = {v: k for k, v in _ids(cli).items()}
    with LibraryStore.open(DataDir(cli.data_dir).database) as store:
        return [names[i] for i in store.queue_order()]


def test_first_and_last_change_the_order_the_queue_is_worked(cli, movies):
    for name in ("A.mkv", "B.mkv", "C.mkv"):
        make_video(movies / name, seconds=1, size=(32, 32))
    cli("add", movies)
    assert _order(cli) == ["A.mkv", "B.mkv", "C.mkv"]  # as found
    code, out, _ = cli("first", "C.mkv", "B.mkv")
    assert code == 0 and "2 moved first" in out
    assert _order(cli) == ["C.mkv", "B.mkv", "A.mkv"]  # the first named goes first
    assert "1 already first" in cli("first", "C.mkv")[1]
    cli("last", "C.mkv")
    assert _order(cli) == ["B.mkv", "A.mkv", "C.mkv"]
    cli("pause", "A.mkv")
    with LibraryStore.open(DataDir(cli.data_dir).database) as store:
        assert not controls.open_film(store, _ids(cli)["A.mkv"])  # a paused film stays paused
        claimed = store.claim_next_job()
    assert claimed["movie_id"] == _ids(cli)["B.mkv"]


@pytest.mark.slow
def test_the_running_film_yields_to_one_opened_and_resumes_from_its_chunks(cli, movies, tiny_eva):
    make_video(movies / "A.mkv", seconds=20, size=(64, 48))
    make_video(movies / "B.mkv", seconds=3, size=(64, 48))
    make_video(movies / "C.mkv", seconds=2, size=(64, 48))
    cli("add", movies)
    ids = _ids(cli)
    options = IndexOptions(vision=str(tiny_eva), speech="never", batch_size=2, idle=0.3, dialogue_first=False)
    events: list[tuple[str, str]] = []
    at_yield: dict = {}

    def on_event(movie: dict, outcome: str, _message) -> None:
        events.append((movie["path"].rsplit("/", 1)[-1], outcome))
        if outcome == "yielded":  # what the queue holds of A when it steps aside
            at_yield.update(cli.status()["A.mkv"])

    worker = threading.Thread(target=lambda: run_queue(DataDir(cli.data_dir), options, on_event=on_event))
    worker.start()
    try:
        wait_for(lambda: 2 <= cli.status()["A.mkv"]["frames"], timeout=120)
        with LibraryStore.open(DataDir(cli.data_dir).database) as store:  # as the web UI or the desktop does
            assert controls.open_film(store, ids["C.mkv"])
    finally:
        worker.join(timeout=300)
    assert events == [("A.mkv", "yielded"), ("C.mkv", "done"), ("A.mkv", "done"), ("B.mkv", "done")]
    assert at_yield["state"] == "queued" and 2 <= at_yield["frames"] < 20  # its finished chunks were kept
    assert at_yield["error"] is None

    db = library.open_library(cli.data_dir)
    movie = next(m for m in list_movies(db) if m.rel_path == "A.mkv")
    feats = np.array(library.open_features(movie))
    assert movie.state == "done" and feats.shape[0] == 20
    with LibraryStore.open(DataDir(cli.data_dir).database) as store:
        job = next(store.db.query("SELECT attempts FROM jobs WHERE movie_id = ?", [ids["A.mkv"]]))
    assert job["attempts"] == 1  # yielding is not a failed attempt


@pytest.mark.slow
def test_every_films_dialogue_comes_before_any_films_frames(cli, movies, tiny_eva):
    """Cheap passes first, unless a person put a film first: that one is indexed whole at once."""
    for name, seconds in (("A.mkv", 3), ("B.mkv", 2), ("C.mkv", 2)):
        make_video(movies / name, seconds=seconds, size=(48, 32))
        (movies / name).with_suffix(".en.srt").write_text(f"1\n00:00:00,500 --> 00:00:01,500\nHello from {name}.\n")
    cli("add", movies)
    cli("first", "C.mkv")
    events: list[tuple[str, str]] = []
    frames_when_dialogue_done: dict[str, int] = {}

    def on_event(movie: dict, outcome: str, _message) -> None:
        name = movie["path"].rsplit("/", 1)[-1]
        events.append((name, outcome))
        if outcome == "dialogue ready":
            status = cli.status()
            frames_when_dialogue_done[name] = sum(s["frames"] for n, s in status.items() if n != "C.mkv")
            assert status[name]["cues"] == 1  # its dialogue can be searched now

    summary = run_queue(DataDir(cli.data_dir), IndexOptions(vision=str(tiny_eva), speech="never", batch_size=2),
                        on_event=on_event)
    assert events == [("C.mkv", "done"), ("A.mkv", "dialogue ready"), ("B.mkv", "dialogue ready"),
                      ("A.mkv", "done"), ("B.mkv", "done")]
    assert frames_when_dialogue_done == {"A.mkv": 0, "B.mkv": 0}  # no frames read before every dialogue
    assert summary.outcomes == {"done": 3, "dialogue ready": 2}
    with LibraryStore.open(DataDir(cli.data_dir).database) as store:
        attempts = [r["attempts"] for r in store.db.query("SELECT attempts FROM jobs ORDER BY movie_id")]
    assert attempts == [1, 1, 1]  # the first pass is not an attempt that failed


def test_the_library_estimate_is_the_sum_of_the_films_in_queue_order(cli, movies, tiny_eva):
    make_video(movies / "Done.mkv", seconds=4, size=(32, 32))
    cli("add", movies)
    assert cli("run", "--speech", "never", "--quiet", "--vision", tiny_eva)[0] == 0  # measures the rate
    for name in ("A.mkv", "B.mkv", "C.mkv"):
        make_video(movies / name, seconds=2, size=(32, 32))
    cli("scan")
    cli("first", "C.mkv")
    with LibraryStore.open(DataDir(cli.data_dir).database) as store:
        films = list_movies(store)
        rate = store.last_rate()
        estimate = library_estimate(store, films)
        store.db.execute("UPDATE jobs SET rate = NULL")
        unknown = library_estimate(store, films)
    assert rate and [f.movie.rel_path for f in estimate.films] == ["C.mkv", "A.mkv", "B.mkv"]
    each = [film_seconds(f.movie, rate, typical=4.0) for f in estimate.films]  # not probed: as long as Done.mkv
    assert each[0] == pytest.approx(4.0 / rate, rel=0.05)
    assert estimate.seconds == pytest.approx(sum(each))
    assert estimate.describe().startswith("3 films to index, about ") and "next C.mkv" in estimate.describe()
    assert unknown.seconds is None and "known once the first film has been read" in unknown.describe()
    code, out, _ = cli("status")
    assert "3 films to index" in out and "index first MOVIE" in out


def test_long_durations_read_as_a_person_says_them():
    assert long_duration(40 * 60) == "40 min"
    assert long_duration(7 * 3600 + 20 * 60) == "7 h 20 min"
    assert long_duration(30 * 3600) == "30 h"
    assert long_duration(3 * 86400 + 4 * 3600) == "3 days 4 h"
