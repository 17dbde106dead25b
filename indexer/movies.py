"""Write-side operations on movie rows shared by the scanner, the job runner and the CLI.

A movie row is the file's identity (path, size, mtime, fingerprint) plus what the pipeline has
stored for it. Resetting a movie (its content changed) drops everything derived from the old
content: features, frame times, subtitle tracks and cues.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import sqlite_utils

from indexer.db import atomic
from indexer.features import PARTIAL_SUFFIX

STAGE_COLUMNS = {
    "probed": 0, "duration": None, "width": None, "height": None, "video_codec": None,
    "frame_rate": None, "rotation": 0, "variable_frame_rate": 0, "has_audio": 0, "probe": None,
    "subtitles_done": 0, "speech_state": None, "speech_windows_done": 0, "speech_language": None,
    "fps": None, "vision_id": None, "feature_path": None, "feature_shape": None,
    "frames_capacity": None, "chunk_frames": None, "frames_done": 0, "features_complete": 0,
    "cache_bytes": 0, "warning": None,
}


def now() -> float:
    return time.time()


def remove_cache_files(row: dict) -> None:
    """Delete a movie's feature files (final and partial); missing files are fine."""
    path = row.get("feature_path")
    if not path:
        return
    for candidate in (Path(path), Path(path + PARTIAL_SUFFIX)):
        try:
            candidate.unlink()
        except FileNotFoundError:
            pass


def clear_features(db: sqlite_utils.Database, movie_id: int) -> None:
    """Forget the features (file and frame times) so the feature stage starts over."""
    row = get(db, movie_id)
    remove_cache_files(row)
    with atomic(db):
        db.execute("DELETE FROM frames WHERE movie_id = ?", [movie_id])
        db.execute("UPDATE movies SET fps = NULL, vision_id = NULL, feature_path = NULL, feature_shape = NULL,"
                   " frames_capacity = NULL, chunk_frames = NULL, frames_done = 0, features_complete = 0,"
                   " cache_bytes = 0"
                   " WHERE id = ?", [movie_id])


def reset(db: sqlite_utils.Database, movie_id: int, **identity) -> None:
    """The content changed: drop everything derived from it and record the new identity."""
    remove_cache_files(get(db, movie_id))
    values = dict(STAGE_COLUMNS, **identity, changed_at=now())
    with atomic(db):
        db.execute("DELETE FROM frames WHERE movie_id = ?", [movie_id])
        db.execute("DELETE FROM subtitle_tracks WHERE movie_id = ?", [movie_id])
        db["movies"].update(movie_id, values)


def get(db: sqlite_utils.Database, movie_id: int) -> dict:
    rows = list(db.query("SELECT * FROM movies WHERE id = ?", [movie_id]))
    if not rows:
        raise KeyError(movie_id)
    return rows[0]


def enqueue(db: sqlite_utils.Database, movie_id: int, reason: str, keep_error: bool = False) -> None:
    """Queue the movie's pipeline (one job row per movie, reused); running jobs are left alone."""
    t = now()
    with atomic(db):
        row = db.execute("SELECT state FROM jobs WHERE movie_id = ?", [movie_id]).fetchone()
        if row is None:
            db.execute("INSERT INTO jobs (movie_id, state, reason, created_at, updated_at)"
                       " VALUES (?, 'queued', ?, ?, ?)", [movie_id, reason, t, t])
        elif row[0] != "running":
            db.execute("UPDATE jobs SET state = 'queued', reason = ?, attempts = 0, updated_at = ?,"
                       " finished_at = NULL" + ("" if keep_error else ", error = NULL") +
                       " WHERE movie_id = ?", [reason, t, movie_id])


def stat_identity(path: Path) -> dict:
    st = os.stat(path)
    return {"size": st.st_size, "mtime": st.st_mtime}


def delete(db: sqlite_utils.Database, movie_id: int) -> None:
    """Remove the movie from the index (the video file itself is never touched)."""
    remove_cache_files(get(db, movie_id))
    with atomic(db):
        db.execute("DELETE FROM movies WHERE id = ?", [movie_id])
