"""Library scans: new, unchanged, renamed/moved, changed, missing and returning files."""
from __future__ import annotations

import os
import shutil

import pytest

from indexer import db as dbmod
from indexer import scan as scanmod
from indexer.store import LibraryStore
from llamavid import fingerprint as fpmod
from llamavid.errors import UserError
from tests.support.media import make_video


@pytest.fixture
def db(tmp_path):
    return dbmod.connect(tmp_path / "library.db")


@pytest.fixture
def store(db):
    return LibraryStore(db)


def _movies(db):
    return {r["rel_path"]: r for r in db.query("SELECT * FROM movies")}


def test_fingerprint_uses_size_and_samples(tmp_path):
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    data = os.urandom(1 << 20)
    a.write_bytes(data)
    b.write_bytes(data[:500_000] + b"x" + data[500_001:])  # one byte changed in the middle sample
    assert fpmod.fingerprint(a) != fpmod.fingerprint(b)
    c = tmp_path / "c.bin"
    c.write_bytes(data[:300_000] + b"y" + data[300_001:])  # outside the three samples: same print
    assert fpmod.fingerprint(a) == fpmod.fingerprint(c)
    small = tmp_path / "small.bin"
    small.write_bytes(b"abc")
    assert fpmod.fingerprint(small) != fpmod.fingerprint(a)


def test_scan_finds_videos_recursively_and_queues_them(db, store, movies):
    make_video(movies / "A.mkv")
    make_video(movies / "sub" / "deeper" / "B.mp4")
    (movies / "notes.txt").write_text("not a film")
    (movies / ".hidden.mkv").write_bytes(b"x")
    library = scanmod.add_library(store, movies)
    report = scanmod.scan(store)
    assert sorted(_movies(db)) == ["A.mkv", "sub/deeper/B.mp4"]
    assert len(report.added) == 2
    states = {r["state"] for r in db.query("SELECT state FROM jobs")}
    assert states == {"queued"}
    assert scanmod.add_library(store, movies)["id"] == library["id"]  # adding twice is a no-op


def test_overlapping_or_missing_folders_are_refused(db, store, movies, tmp_path):
    scanmod.add_library(store, movies)
    (movies / "inner").mkdir()
    with pytest.raises(UserError, match="overlaps"):
        scanmod.add_library(store, movies / "inner")
    with pytest.raises(UserError, match="not a folder"):
        scanmod.add_library(store, tmp_path / "nope")


def test_unchanged_files_are_not_reread(db, store, movies, monkeypatch):
    make_video(movies / "A.mkv")
    scanmod.add_library(store, movies)
    scanmod.scan(store)
    db.execute("UPDATE jobs SET state = 'done'")
    calls = []
    monkeypatch.setattr(scanmod, "fingerprint", lambda p: calls.append(p) or "x")
    report = scanmod.scan(store)
    assert report.unchanged == 1 and not calls
    assert db.execute("SELECT state FROM jobs").fetchone()[0] == "done"


def test_rename_and_move_keep_the_movie(db, store, movies, tmp_path):
    make_video(movies / "A.mkv")
    scanmod.add_library(store, movies)
    scanmod.scan(store)
    movie_id = _movies(db)["A.mkv"]["id"]
    db.execute("UPDATE jobs SET state = 'done'")
    db.execute("UPDATE movies SET frames_done = 7 WHERE id = ?", [movie_id])
    (movies / "new").mkdir()
    os.rename(movies / "A.mkv", movies / "new" / "A (2001).mkv")
    report = scanmod.scan(store)
    assert report.moved and not report.added and not report.missing
    row = _movies(db)["new/A (2001).mkv"]
    assert row["id"] == movie_id and row["frames_done"] == 7 and row["missing"] == 0
    # moved into another library folder
    other = tmp_path / "other"
    other.mkdir()
    scanmod.add_library(store, other)
    shutil.move(movies / "new" / "A (2001).mkv", other / "A.mkv")
    scanmod.scan(store)
    row = db.execute("SELECT id, rel_path, library_id FROM movies").fetchall()
    assert len(row) == 1 and row[0][0] == movie_id and row[0][1] == "A.mkv"


def test_missing_files_are_marked_not_deleted_and_come_back(db, store, movies, tmp_path):
    path = make_video(movies / "A.mkv")
    scanmod.add_library(store, movies)
    scanmod.scan(store)
    away = tmp_path / "away.mkv"
    os.rename(path, away)
    assert scanmod.scan(store).missing == [str(path)]
    assert _movies(db)["A.mkv"]["missing"] == 1
    os.rename(away, path)
    assert scanmod.scan(store).returned == [str(path)]
    assert _movies(db)["A.mkv"]["missing"] == 0


def test_unplugged_library_folder_marks_everything_missing(db, store, movies, tmp_path):
    make_video(movies / "A.mkv")
    scanmod.add_library(store, movies)
    scanmod.scan(store)
    os.rename(movies, tmp_path / "unplugged")
    report = scanmod.scan(store)
    assert report.errors and _movies(db)["A.mkv"]["missing"] == 1


def test_changed_content_resets_and_requeues(db, store, movies):
    path = make_video(movies / "A.mkv", seconds=2)
    scanmod.add_library(store, movies)
    scanmod.scan(store)
    movie_id = _movies(db)["A.mkv"]["id"]
    db.execute("UPDATE jobs SET state = 'done'")
    db.execute("UPDATE movies SET frames_done = 2, features_complete = 1 WHERE id = ?", [movie_id])
    make_video(path, seconds=3)  # replaced by another encode
    report = scanmod.scan(store)
    assert report.changed == [str(path)]
    row = _movies(db)["A.mkv"]
    assert row["id"] == movie_id and row["frames_done"] == 0 and row["features_complete"] == 0
    assert db.execute("SELECT state FROM jobs").fetchone()[0] == "queued"


def test_files_still_being_written_wait_for_a_later_scan(db, store, movies):
    make_video(movies / "A.mkv")
    scanmod.add_library(store, movies)
    report = scanmod.scan(store, settle_seconds=3600)
    assert report.busy and not _movies(db)
