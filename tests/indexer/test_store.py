"""LibraryStore: the job state machine, what each write changes together, and what readers get back."""
from __future__ import annotations

import os

import pytest

from indexer import jobs
from indexer.errors import Interrupted
from indexer.store import STAGE_COLUMNS, LibraryStore
from indexer.subtitle_sources import Track
from llamavid.prompt.subtitles import Cue


@pytest.fixture
def store(tmp_path):
    with LibraryStore.open(tmp_path / "library.db") as store:
        yield store


def _movie(store: LibraryStore, name: str = "A.mkv", **values) -> int:
    library = store.library("/films") or store.add_library("/films")
    return store.add_movie(dict({"library_id": library["id"], "path": f"/films/{name}", "rel_path": name,
                                 "size": 10, "mtime": 1.0, "fingerprint": f"fp-{name}"}, **values), "new file")


def _state(store: LibraryStore, movie_id: int) -> tuple[str, str | None]:
    job = store.db.execute("SELECT state, request FROM jobs WHERE movie_id = ?", [movie_id]).fetchone()
    return tuple(job) if job else None


def test_a_new_movie_is_queued_with_it(store):
    movie_id = _movie(store)
    assert store.movie(movie_id)["rel_path"] == "A.mkv"
    assert store.queue_counts() == {"queued": 1}
    job = store.claim_next_job()
    assert (job["movie_id"], job["state"], job["reason"], job["pid"]) == (movie_id, "running", "new file", os.getpid())
    assert store.claim_next_job() is None
    with pytest.raises(KeyError):
        store.movie(movie_id + 1)


def test_claim_takes_fresh_jobs_before_retries_and_skips_missing_movies(store):
    retried, fresh, gone = _movie(store, "R.mkv"), _movie(store, "F.mkv"), _movie(store, "G.mkv")
    store.db.execute("UPDATE jobs SET attempts = 1 WHERE movie_id = ?", [retried])
    store.set_missing(gone, True)
    assert [store.claim_next_job()["movie_id"] for _ in range(2)] == [fresh, retried]
    assert store.claim_next_job() is None
    assert _state(store, gone) == ("queued", None)


def test_pause_and_cancel_of_a_running_job_are_requests(store):
    movie_id = _movie(store)
    job = store.claim_next_job()
    assert store.control_jobs([movie_id], "pause") == {"paused (after the current chunk)": 1}
    assert _state(store, movie_id) == ("running", "pause")
    with pytest.raises(Interrupted) as stopped:
        jobs.check_control(store, job["id"])
    assert stopped.value.state == "paused"
    assert store.control_jobs([movie_id], "resume") == {"running": 1}  # the request is withdrawn
    jobs.check_control(store, job["id"])
    store.control_jobs([movie_id], "cancel")
    with pytest.raises(Interrupted, match="cancelled"):
        jobs.check_control(store, job["id"])
    store.delete_movie(movie_id)  # removed from the index while running: cancelled too
    with pytest.raises(Interrupted, match="cancelled"):
        jobs.check_control(store, job["id"])


def test_control_of_jobs_that_are_not_running(store):
    queued, done, never = _movie(store, "Q.mkv"), _movie(store, "D.mkv"), _movie(store, "N.mkv")
    store.db.execute("UPDATE jobs SET state = 'done' WHERE movie_id = ?", [done])
    store.db.execute("DELETE FROM jobs WHERE movie_id = ?", [never])
    assert store.control_jobs([queued, done, never], "pause") == {"paused": 1, "not paused (done)": 1,
                                                                 "not paused (no job)": 1}
    assert store.paused_movie_ids() == [queued]
    assert store.control_jobs([queued, done], "resume") == {"queued": 1, "unchanged (done)": 1}
    assert store.control_jobs([done, never], "retry") == {"queued": 2}  # a retry creates a missing job
    assert store.queue_counts() == {"queued": 3}


def test_finish_keeps_the_last_error_until_a_success(store):
    movie_id = _movie(store)
    job = store.claim_next_job()
    store.finish_job(job["id"], "queued", "boom")
    store.claim_next_job()
    store.finish_job(job["id"], "paused", keep_error=True)
    assert (store.job(job["id"])["state"], store.job(job["id"])["error"]) == ("paused", "boom")
    store.finish_job(job["id"], "failed", "boom again")
    assert store.failed_movie_ids() == [movie_id]
    store.finish_job(job["id"], "done")
    assert store.job(job["id"])["error"] is None and store.failed_movie_ids() == []
    store.update_movie(movie_id, {"speech_state": "error: no model"})
    assert store.failed_movie_ids() == [movie_id]  # done, but its speech stage failed


def test_running_jobs_of_a_dead_worker_are_requeued(store):
    _movie(store)
    store.claim_next_job()
    assert store.recover_stale_jobs() == 1
    assert store.queue_counts() == {"queued": 1}
    assert store.recover_stale_jobs() == 0


def test_pausing_the_queue_puts_the_running_job_back(store):
    _movie(store)
    job = store.claim_next_job()
    assert not store.queue_paused()
    store.pause_queue(True)
    assert store.queue_paused()
    with pytest.raises(Interrupted) as stopped:
        jobs.check_control(store, job["id"])
    assert stopped.value.state == "queued"
    store.pause_queue(False)
    assert not store.queue_paused()
    jobs.check_control(store, job["id"])


def test_a_chunk_is_stored_whole_or_not_at_all(store, monkeypatch):
    movie_id = _movie(store)
    job = store.claim_next_job()
    store.add_frames(job["id"], movie_id, 0, [0.0, 1.0], capacity=4, total=4, rate=2.0)

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(store, "job_progress", fail)
    with pytest.raises(OSError):
        store.add_frames(job["id"], movie_id, 2, [2.0, 3.0], capacity=4, total=4, rate=2.0)
    assert store.frame_times(movie_id) == [0.0, 1.0] and store.movie(movie_id)["frames_done"] == 2
    assert store.job(job["id"])["done"] == 2
    assert (store.frame_time(movie_id, 1), store.frame_time(movie_id, 2)) == (1.0, None)


def _track(source: str, *texts: str, language: str = "en") -> Track:
    return Track(source=source, ref=source, language=language,
                 cues=[Cue(float(i), i + 0.5, text) for i, text in enumerate(texts)])


def test_subtitles_replaced_read_and_searched(store):
    movie_id = _movie(store)
    job = store.claim_next_job()
    asr = store.asr_track(movie_id, Track(source="asr", ref="small"))
    assert store.asr_track(movie_id, Track(source="asr", ref="other")) == asr  # resumed: the same track
    store.add_speech_window(job["id"], movie_id, asr, _track("asr", "spoken llama", language="fr"), 0, 3)
    store.replace_subtitle_tracks(movie_id, [_track("sidecar", "old line")], "sig-1")
    store.replace_subtitle_tracks(movie_id, [_track("sidecar", "Hello llama", "Bye"), _track("embedded")], "sig-2")
    assert not store.has_text_subtitles(_movie(store, "B.mkv"))
    assert store.has_text_subtitles(movie_id)
    tracks = store.subtitle_tracks(movie_id)
    assert [(t["source"], t["language"], t["cue_count"]) for t in tracks] == [
        ("asr", "fr", 1), ("sidecar", "en", 2), ("embedded", "en", 0)]
    movie = store.movie(movie_id)
    assert (movie["subtitles_done"], movie["sidecar_sig"], movie["speech_windows_done"]) == (1, "sig-2", 1)
    assert store.job(job["id"])["stage"] == "speech"
    assert [c[2] for c in store.cues(movie_id)] == ["spoken llama", "Hello llama", "Bye"]
    assert store.cues(movie_id, sources=["sidecar"], language="en")[0] == (0.0, 0.5, "Hello llama", "en", "sidecar")
    assert store.cues(movie_id, language="fr")[0][4] == "asr"
    hits = store.search_cues("llama")
    assert sorted(h[4] for h in hits) == ["Hello llama", "spoken llama"] and "[llama]" in hits[0][6]
    assert store.search_cues("old") == [] and store.search_cues('llama" OR "x') == []
    # any word, from free text with quotes and control characters (a model's answer): never an FTS5 syntax error
    assert {h[4] for h in store.search_cues('the "llama\x00 said', any_word=True)} == {"Hello llama", "spoken llama"}
    store.delete_movie(movie_id)  # cues and their full-text rows go with the movie
    assert store.search_cues("llama") == [] and store.subtitle_tracks(movie_id) == []


def test_a_reset_drops_everything_derived_from_the_old_content(store):
    movie_id = _movie(store)
    job = store.claim_next_job()
    store.update_movie(movie_id, {"probed": 1, "duration": 9.0, "features_complete": 1, "cache_bytes": 99,
                                  "warning": "old"})
    store.add_frames(job["id"], movie_id, 0, [0.0], capacity=1, total=1, rate=None)
    store.replace_subtitle_tracks(movie_id, [_track("sidecar", "line")], "sig")
    store.reset_movie(movie_id, {"size": 20, "fingerprint": "new", "missing": 0})
    row = store.movie(movie_id)
    assert {k: row[k] for k in STAGE_COLUMNS} == STAGE_COLUMNS
    assert (row["size"], row["fingerprint"], row["rel_path"]) == (20, "new", "A.mkv")
    assert store.frame_times(movie_id) == [] and store.cues(movie_id) == [] and store.subtitle_tracks(movie_id) == []


def test_clear_features_keeps_the_rest(store):
    movie_id = _movie(store)
    job = store.claim_next_job()
    store.start_features(movie_id, {"fps": 1.0, "vision_id": "eva:1", "feature_path": "/x.npy"})
    store.add_frames(job["id"], movie_id, 0, [0.0, 1.0], capacity=2, total=2, rate=None)
    store.update_movie(movie_id, {"probed": 1, "features_complete": 1})
    store.clear_features(movie_id)
    row = store.movie(movie_id)
    assert (row["probed"], row["fps"], row["vision_id"], row["frames_done"], row["features_complete"]) == (
        1, None, None, 0, 0)
    assert store.frame_times(movie_id) == []


def test_missing_movies_are_flagged_by_their_current_path(store):
    a, b = _movie(store, "A.mkv"), _movie(store, "B.mkv")
    store.update_movie(b, {"path": "/films/moved/B.mkv"})  # a move found earlier in the scan
    assert store.mark_missing([a, b], exists=lambda path: path == "/films/moved/B.mkv") == ["/films/A.mkv"]
    assert (store.movie(a)["missing"], store.movie(b)["missing"]) == (1, 0)


def test_libraries_and_the_read_views(store):
    other = store.add_library("/other")
    _movie(store, "B.mkv")
    a = _movie(store, "A.mkv")
    store.update_movie(a, {"cache_bytes": 5})
    assert store.find_library(["/nowhere", "/other"]) == other["id"] and store.find_library(["/x"]) is None
    assert store.library_paths() == ["/films", "/other"]
    assert [v["rel_path"] for v in store.movie_views()] == ["A.mkv", "B.mkv"]
    view = store.movie_view(a)
    assert (view["library"], view["job_state"], view["cue_count"]) == ("/films", "queued", 0)
    assert store.movie_view(a + 100) is None
    assert store.cache_bytes() == 5
    assert sorted(m["rel_path"] for m in store.library_movies(store.library("/films")["id"])) == ["A.mkv", "B.mkv"]
    assert [m["id"] for m in store.movies_with_fingerprint("fp-A.mkv")] == [a]
    store.remove_library(store.library("/films")["id"])  # its movies go with it
    assert store.movie_views() == [] and store.libraries() == [other]
