"""The library controls every front end shares (indexer.controls), on a real SQLite library: folders
added and removed with their scan, re-index, pause and resume (paused films included), cancel and
retry; and the indexer child's command line and log file."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from indexer import controls
from llamavid.errors import UserError
from llamavid.paths import DataDir


@pytest.fixture
def data(tmp_path) -> DataDir:
    return DataDir(tmp_path / "data")


@pytest.fixture
def folder(tmp_path) -> Path:
    """Two films and a note; a scan fingerprints files and never decodes them, so bytes will do."""
    films = tmp_path / "films"
    (films / "sub").mkdir(parents=True)
    (films / "A.mkv").write_bytes(os.urandom(4096))
    (films / "sub" / "B.mp4").write_bytes(os.urandom(4096))
    (films / "notes.txt").write_text("not a film")
    return films


def _jobs(store) -> dict[str, str]:
    return {Path(r["path"]).name: r["state"] for r in
            store.db.query("SELECT movies.path, jobs.state FROM jobs JOIN movies ON movies.id = jobs.movie_id")}


def _id(store, name: str) -> int:
    return next(m["id"] for m in store.movie_views() if Path(m["path"]).name == name)


def test_adding_a_folder_scans_and_queues_its_films(data, folder) -> None:
    with controls.open_store(data) as store:
        added = controls.add_folders(store, [folder])
        assert [f["path"] for f in added.folders] == [str(folder.resolve())]
        assert added.new_films == 2 and _jobs(store) == {"A.mkv": "queued", "B.mp4": "queued"}
        assert added.message() == f"added {folder.resolve()}: 2 new films"
        assert controls.has_work(store)
        again = controls.add_folders(store, [folder])  # the same folder: nothing new, nothing doubled
        assert again.folders[0]["id"] == added.folders[0]["id"] and len(store.libraries()) == 1
        assert again.message() == f"added {folder.resolve()}: 0 new films, 2 already known"
        assert controls.find_folder(store, folder) == added.folders[0]["id"]
        assert controls.find_folder(store, folder / "sub") is None


def test_adding_without_a_scan_and_refusals(data, folder, tmp_path) -> None:
    with controls.open_store(data) as store:
        added = controls.add_folders(store, [folder], scan_now=False)
        assert added.report is None and added.message().endswith("(not scanned yet)")
        assert store.movie_views() == [] and not controls.has_work(store)
        with pytest.raises(UserError, match="not a folder"):
            controls.add_folders(store, [tmp_path / "nowhere"])
        with pytest.raises(UserError, match="overlaps the library folder"):
            controls.add_folders(store, [folder / "sub"])


def test_removing_a_folder_forgets_its_films_and_deletes_their_caches(data, folder) -> None:
    with controls.open_store(data) as store:
        library = controls.add_folders(store, [folder]).folders[0]
        cache = data.features / "a.npy"
        cache.write_bytes(b"features")
        store.update_movie(_id(store, "A.mkv"), {"feature_path": str(cache)})
        ids = sorted(m["id"] for m in store.movie_views())
        removed = controls.remove_folder(store, library["id"])
        assert sorted(removed.movie_ids) == ids
        assert removed.message() == f"removed {folder.resolve()} from the library (2 films; files kept)"
        assert store.libraries() == [] and store.movie_views() == [] and store.queue_counts() == {}
        assert not cache.exists() and (folder / "A.mkv").is_file()  # caches go, films stay
        with pytest.raises(UserError, match="not in the library any more"):
            controls.remove_folder(store, library["id"])


def test_reindex_continues_a_stopped_film_and_restarts_a_finished_one(data, folder) -> None:
    with controls.open_store(data) as store:
        controls.add_folders(store, [folder])
        a = _id(store, "A.mkv")
        assert controls.reindex(store, a).message() == "A.mkv is already waiting to be indexed"
        store.control_jobs([a], "cancel")
        assert controls.reindex(store, a).message() == "A.mkv: queued again; it continues where it stopped"
        assert _jobs(store)["A.mkv"] == "queued"
        job = store.claim_next_job()
        assert job["movie_id"] == a
        with pytest.raises(UserError, match="being indexed right now"):
            controls.reindex(store, a)
        store.finish_job(job["id"], "done")
        store.update_movie(a, {"frames_done": 12, "features_complete": 1, "subtitles_done": 1})
        done = controls.reindex(store, a)
        assert done.how == "restarted" and done.message() == "A.mkv: queued to be indexed again from the start"
        row = store.movie(a)
        assert (row["frames_done"], row["features_complete"], row["subtitles_done"]) == (0, 0, 0)
        assert _jobs(store) == {"A.mkv": "queued", "B.mp4": "queued"}
        with pytest.raises(UserError, match="not in the library"):
            controls.reindex(store, 999)


def test_pause_and_resume_the_queue_with_its_paused_films(data, folder) -> None:
    with controls.open_store(data) as store:
        controls.add_folders(store, [folder])
        a = _id(store, "A.mkv")
        assert controls.control(store, "pause", [a]) == {"paused": 1}
        assert controls.control(store, "pause") == {} and store.queue_paused()
        assert controls.control(store, "resume") == {"queued": 1}  # the paused film goes back in the queue
        assert not store.queue_paused() and _jobs(store) == {"A.mkv": "queued", "B.mp4": "queued"}
        assert controls.control(store, "resume") == {}  # nothing paused: nothing to say


def test_cancel_needs_films_and_retry_takes_the_failed_ones(data, folder) -> None:
    with controls.open_store(data) as store:
        controls.add_folders(store, [folder])
        a, b = _id(store, "A.mkv"), _id(store, "B.mp4")
        with pytest.raises(UserError, match="needs the films to cancel"):
            controls.control(store, "cancel")
        with pytest.raises(ValueError, match="unknown action"):
            controls.control(store, "stop")
        assert controls.control(store, "cancel", [b]) == {"cancelled": 1}
        job = store.claim_next_job()
        assert job["movie_id"] == a
        store.finish_job(job["id"], "failed", "decoder error")
        assert not controls.has_work(store)
        assert controls.control(store, "retry") == {"queued": 1}  # the failed film, not the cancelled one
        assert _jobs(store) == {"A.mkv": "queued", "B.mp4": "cancelled"} and controls.has_work(store)


def test_the_indexer_child_command_line_and_log(data) -> None:
    assert controls.indexer_command(data) == [
        sys.executable, "-m", "cli", "--data-dir", str(data.root), "index", "run", "--quiet",
        "--device", "auto", "--idle", "0"]
    assert controls.indexer_command(data, device="cuda:1", idle=2.5, quiet=False, python="py")[-6:] == [
        "index", "run", "--device", "cuda:1", "--idle", "2.5"]
    assert controls.indexer_command(data, device="", idle=-1)[-4:] == ["--device", "auto", "--idle", "0"]
    assert controls.indexer_log(data) == data.root / "logs" / "indexer.log"
