"""A real indexer subprocess killed with SIGKILL mid-film resumes and ends with identical features;
pause / cancel / the single-writer lock across processes; a full disk; files changing under the indexer."""
from __future__ import annotations

import resource
import signal

import numpy as np
import pytest

from indexer import library
from tests.support.indexer_cli import Cli
from tests.support.media import make_video
from tests.support.wait import wait_for

RUN = ("run", "--speech", "never", "--quiet", "--batch-size", "2")


def _frames_done(cli) -> int:
    db = cli.db()
    try:
        row = db.execute("SELECT frames_done FROM movies").fetchone()
        return row[0] if row else 0
    finally:
        db.close()


def _features(cli):
    db = library.open_library(cli.data_dir)
    (movie,) = library.list_movies(db)
    return np.array(library.open_features(movie)), library.frame_times(db, movie), movie


@pytest.mark.slow
def test_kill_9_mid_film_resumes_to_identical_features(cli, movies, tiny_eva, tmp_path, capsys):
    make_video(movies / "Film.mkv", seconds=24, fps=25, size=(128, 96), gop=60)
    cli("add", movies)
    proc = cli.spawn(*RUN, "--vision", tiny_eva, "--idle", "0.5")  # slow enough to be caught mid-film
    try:
        wait_for(lambda: _frames_done(cli) >= 6 or proc.poll() is not None, timeout=120)
        assert proc.poll() is None, proc.communicate()
        code, _, err = cli(*RUN, "--vision", tiny_eva)  # one writer: a second worker is refused
        assert code == 1 and "another indexer" in err
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    done = _frames_done(cli)
    assert 6 <= done < 24 and done % 2 == 0  # whole chunks only
    cache = cli.data_dir / "cache" / "features"
    assert [p.name.endswith(".npy.partial") for p in cache.iterdir()] == [True]  # never published
    state = cli.status()["Film.mkv"]
    assert state["state"] == "running" and state["features_complete"] is False
    with pytest.raises(library.FeaturesNotReady):
        _features(cli)

    code, out, err = cli(*RUN[:-1], "3", "--vision", tiny_eva)  # the movie keeps its chunk size of 2
    assert code == 0, err
    feats, times, movie = _features(cli)
    assert movie.state == "done" and feats.shape == (24, 257, 176)
    assert not list(cache.glob("*.partial"))

    reference = Cli(tmp_path / "reference-data", capsys)  # the same film, never interrupted
    reference("add", movies)
    assert reference(*RUN, "--vision", tiny_eva)[0] == 0
    ref_feats, ref_times, _ = _features(reference)
    assert np.array_equal(times, ref_times)
    assert all(k <= t < k + 0.09 for k, t in enumerate(times))  # one per second, at most 2 frames late
    assert np.array_equal(feats, ref_feats)


def test_pause_and_cancel_a_running_job(cli, movies, tiny_eva):
    """The worker runs in a thread here; control goes through the database as from another process."""
    import threading

    from indexer.pipeline import IndexOptions
    from indexer.runner import run_queue
    from llamavid.paths import DataDir

    make_video(movies / "A.mkv", seconds=20, size=(64, 48))
    make_video(movies / "B.mkv", seconds=2, size=(64, 48))
    cli("add", movies)
    options = IndexOptions(vision=str(tiny_eva), speech="never", batch_size=2, idle=0.3)
    result = {}
    worker = threading.Thread(target=lambda: result.update(summary=run_queue(DataDir(cli.data_dir), options)))
    worker.start()
    try:
        wait_for(lambda: _frames_done(cli) >= 2, timeout=120)
        assert cli("pause", "A.mkv")[0] == 0
    finally:
        worker.join(timeout=120)
    assert result["summary"].outcomes == {"dialogue ready": 2, "paused": 1, "done": 1}  # dialogue first
    status = cli.status()
    assert status["A.mkv"]["state"] == "paused" and 2 <= status["A.mkv"]["frames"] < 20
    assert status["B.mkv"]["state"] == "done"  # the rest of the queue went on
    cli("resume", "A.mkv")
    assert cli.status()["A.mkv"]["state"] == "queued"
    cli("cancel", "A.mkv")
    assert cli.status()["A.mkv"]["state"] == "cancelled"
    code, out, _ = cli(*RUN, "--vision", tiny_eva)
    assert "nothing to do" in out
    cli("resume", "A.mkv")
    cli(*RUN, "--vision", tiny_eva)
    status = cli.status()["A.mkv"]
    assert status["state"] == "done" and status["frames"] == 20


def test_pausing_the_whole_queue(cli, movies, tiny_eva):
    make_video(movies / "A.mkv", seconds=2)
    cli("add", movies)
    cli("pause")
    code, out, _ = cli(*RUN, "--vision", tiny_eva)
    assert code == 0 and "queue paused" in out and cli.status()["A.mkv"]["state"] == "queued"
    code, out, _ = cli("status")
    assert "(queue paused)" in out
    cli("resume")
    cli(*RUN, "--vision", tiny_eva)
    assert cli.status()["A.mkv"]["state"] == "done"


def test_full_disk_fails_with_a_clear_message(cli, movies, tiny_eva):
    """RLIMIT_FSIZE makes the kernel refuse writes past 1.5 MB (EFBIG), as a full disk would."""
    make_video(movies / "Long.mkv", seconds=20, size=(64, 48))  # 20 x 90 kB of features > 1.5 MB
    cli("add", movies)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1_500_000, hard))
    try:
        code, out, err = cli(*RUN, "--vision", tiny_eva)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert code == 1
    assert "no space for the feature cache" in err and "llamavid index retry" in err
    status = cli.status()["Long.mkv"]
    assert status["state"] == "failed" and "no space" in status["error"]
    assert not list((cli.data_dir / "cache" / "features").iterdir())  # nothing half-written left
    cli("retry")
    assert cli(*RUN, "--vision", tiny_eva)[0] == 0  # space is back: it completes
    assert cli.status()["Long.mkv"]["state"] == "done"


@pytest.mark.parametrize("change", ["remove", "replace"])
def test_file_changing_during_indexing(cli, movies, tiny_eva, monkeypatch, change):
    from indexer import pipeline

    path = make_video(movies / "A.mkv", seconds=8)
    make_video(movies / "B.mkv", seconds=2)
    cli("add", movies)
    original = pipeline.Pipeline._commit
    calls = []

    def commit_then_change(self, job, movie, *args):
        done = original(self, job, movie, *args)
        if movie["rel_path"] == "A.mkv" and not calls:
            calls.append(change)
            if change == "remove":
                path.unlink()
            else:
                make_video(path, seconds=5, size=(80, 64))
        return done

    monkeypatch.setattr(pipeline.Pipeline, "_commit", commit_then_change)
    code, out, err = cli(*RUN, "--vision", tiny_eva)
    assert code == 0, err
    status = cli.status()
    assert status["B.mkv"]["state"] == "done"
    if change == "remove":
        assert status["A.mkv"]["state"] == "missing"
        assert "removed during indexing" in status["A.mkv"]["error"]
    else:  # the new content was indexed from the start in the same run
        assert status["A.mkv"]["state"] == "done" and status["A.mkv"]["frames"] == 5
