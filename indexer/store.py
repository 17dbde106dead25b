"""Every query and write of the library database, as the methods of one object.

The scanner, the pipeline, the job runner and its controls, the watcher, the status table, the read
API (library.py) and ``llamavid index`` all go through :class:`LibraryStore`; the schema, the
migrations and the connection settings stay in db.py. A write method that changes several rows
runs as one transaction (``atomic``: BEGIN IMMEDIATE, a savepoint when the caller already holds
one), so what must change together does: a chunk's frame times with its frame count and the job's
progress, a new movie with its job, a changed film's reset.

The job state machine (``control_jobs``): ``queued`` -> ``running`` -> ``done`` | ``failed``;
``paused`` and ``cancelled`` are set by the user. A running job cannot be stopped from another
process, so it gets a ``request`` that the pipeline checks between chunks (jobs.check_control).
"""
from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import TYPE_CHECKING

import sqlite_utils

from indexer.db import atomic, connect

if TYPE_CHECKING:  # the type only: subtitle_sources imports PyAV, which the store never needs
    from indexer.subtitle_sources import Track

_WORD = re.compile(r"\w+", re.UNICODE)  # what FTS5's unicode61 tokenizer would index as a word

#: What the pipeline stores per movie, and the value of each column before it has run.
STAGE_COLUMNS = {
    "probed": 0, "duration": None, "width": None, "height": None, "video_codec": None,
    "frame_rate": None, "rotation": 0, "variable_frame_rate": 0, "has_audio": 0, "probe": None,
    "subtitles_done": 0, "speech_state": None, "speech_windows_done": 0, "speech_language": None,
    "fps": None, "vision_id": None, "feature_path": None, "feature_shape": None,
    "frames_capacity": None, "chunk_frames": None, "frames_done": 0, "features_complete": 0,
    "cache_bytes": 0, "warning": None,
    "scenes_state": None, "scenes_model": None, "scenes_path": None, "scenes_done": 0, "scenes_chunk": None,
    "scenes_bytes": 0,
}
PREPARED_COLUMNS = {"prepared_key": None, "prepared_path": None, "prepared_bytes": 0, "prepared_used_at": None}

#: A movie as the read API shows it: its row, its library folder, its job, its number of cues and
#: what decides whether it is prepared for fast answers (its folder's choice, the library-wide one).
_MOVIE_VIEW = """
SELECT movies.*, libraries.path AS library, jobs.state AS job_state, jobs.error AS job_error,
       jobs.stage AS job_stage, jobs.done AS job_done, jobs.total AS job_total, jobs.rate AS job_rate,
       (SELECT COUNT(*) FROM cues WHERE cues.movie_id = movies.id) AS cue_count,
       libraries.prepare AS library_prepare,
       (SELECT value FROM settings WHERE key = 'prepare_all') AS prepare_all
FROM movies JOIN libraries ON libraries.id = movies.library_id
LEFT JOIN jobs ON jobs.movie_id = movies.id
"""


def prepare_choice(own: int | None, folder: int | None, everything: str | None) -> bool:
    """Whether a film is to be prepared for fast answers: its own choice (1 / 0), else its folder's,
    else the library-wide setting ``prepare_all``."""
    if own is not None:
        return bool(own)
    return bool(folder) or everything == "1"


#: the order jobs are claimed in: a film brought forward first, retries after fresh jobs, then as found
QUEUE_ORDER = "jobs.priority DESC, jobs.attempts, jobs.id"
#: a film whose cheap stages are not all done: the first pass reads its dialogue before any frames
#: (a speech stage that failed is tried again with the frames, not in the first pass again and again)
NO_DIALOGUE_YET = "(movies.probed = 0 OR movies.subtitles_done = 0 OR movies.speech_state IS NULL)"


class LibraryStore:
    """The library database of one data folder (a sqlite-utils ``Database`` from ``db.connect``)."""

    def __init__(self, db: sqlite_utils.Database):
        self.db = db

    @classmethod
    def open(cls, path: str | Path) -> LibraryStore:
        """Connect to (and create or upgrade) the database file."""
        return cls(connect(path))

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> LibraryStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


    def setting(self, key: str, default: str | None = None) -> str | None:
        row = self.db.execute("SELECT value FROM settings WHERE key = ?", [key]).fetchone()
        return row[0] if row else default

    def set_setting(self, key: str, value: str | None) -> None:
        with atomic(self.db):
            self.db.execute("INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET"
                            " value = excluded.value", [key, value])

    def queue_paused(self) -> bool:
        """The whole queue was paused (``llamavid index pause``)."""
        return self.setting("paused") == "1"

    def pause_queue(self, paused: bool) -> None:
        self.set_setting("paused", "1" if paused else None)


    def libraries(self) -> list[dict]:
        return list(self.db.query("SELECT * FROM libraries ORDER BY id"))

    def library_paths(self) -> list[str]:
        return [r["path"] for r in self.db.query("SELECT path FROM libraries ORDER BY path")]

    def library(self, path: str) -> dict | None:
        return next(self.db.query("SELECT * FROM libraries WHERE path = ?", [path]), None)

    def find_library(self, paths: list[str]) -> int | None:
        """The id of the library registered under one of these spellings of a folder."""
        row = self.db.execute(f"SELECT id FROM libraries WHERE path IN ({', '.join('?' * len(paths))})",
                              paths).fetchone()
        return row[0] if row else None

    def add_library(self, path: str) -> dict:
        with atomic(self.db):
            self.db.execute("INSERT INTO libraries (path, added_at) VALUES (?, ?)", [path, time.time()])
        return self.library(path)

    def library_scanned(self, library_id: int) -> None:
        with atomic(self.db):
            self.db.execute("UPDATE libraries SET scanned_at = ? WHERE id = ?", [time.time(), library_id])

    def remove_library(self, library_id: int) -> None:
        """Forget the folder (and, by cascade, any movie row of it still left)."""
        self.db.execute("DELETE FROM libraries WHERE id = ?", [library_id])


    def movie(self, movie_id: int) -> dict:
        row = next(self.db.query("SELECT * FROM movies WHERE id = ?", [movie_id]), None)
        if row is None:
            raise KeyError(movie_id)
        return row

    def movie_ids(self) -> set[int]:
        """The ids of every movie of the library (a removed movie's id is never reused)."""
        return {r[0] for r in self.db.execute("SELECT id FROM movies")}

    def library_movies(self, library_id: int) -> list[dict]:
        return list(self.db.query("SELECT * FROM movies WHERE library_id = ?", [library_id]))

    def movies_with_fingerprint(self, fingerprint: str) -> list[dict]:
        """Movies with this content, missing ones first (the likely origin of a move)."""
        return list(self.db.query("SELECT * FROM movies WHERE fingerprint = ? ORDER BY missing DESC, id",
                                  [fingerprint]))

    def add_movie(self, values: dict, reason: str) -> int:
        """Insert a new movie and queue its job, together; returns its id."""
        t = time.time()
        with atomic(self.db):
            movie_id = self.db["movies"].insert(dict(values, added_at=t, changed_at=t)).last_pk
            self.enqueue(movie_id, reason)
        return movie_id

    def update_movie(self, movie_id: int, values: dict) -> None:
        with atomic(self.db):
            self.db["movies"].update(movie_id, values)

    def set_missing(self, movie_id: int, missing: bool) -> None:
        with atomic(self.db):
            self.db.execute("UPDATE movies SET missing = ? WHERE id = ?", [int(missing), movie_id])

    def mark_missing(self, movie_ids: list[int], exists: Callable[[str], bool] = os.path.exists) -> list[str]:
        """Flag as missing, in one transaction, those of these movies whose file no longer exists;
        returns their paths. Each path is read again here: a move found earlier in the same scan
        may have changed it."""
        marked = []
        with atomic(self.db):
            for movie_id in movie_ids:
                current = self.db.execute("SELECT path FROM movies WHERE id = ?", [movie_id]).fetchone()
                if current and not exists(current[0]):
                    self.db.execute("UPDATE movies SET missing = 1 WHERE id = ?", [movie_id])
                    marked.append(current[0])
        return marked

    def reset_movie(self, movie_id: int, identity: dict) -> None:
        """The content changed: drop everything derived from it and record the new identity."""
        with atomic(self.db):
            self.db.execute("DELETE FROM frames WHERE movie_id = ?", [movie_id])
            self.db.execute("DELETE FROM scene_frames WHERE movie_id = ?", [movie_id])
            self.db.execute("DELETE FROM subtitle_tracks WHERE movie_id = ?", [movie_id])
            self.db["movies"].update(movie_id, dict(STAGE_COLUMNS, **PREPARED_COLUMNS, **identity,
                                                    changed_at=time.time()))

    def reread_subtitles(self, movie_id: int, reason: str, redo_speech: bool) -> None:
        """Sidecar files changed: queue the subtitle stage again (and the speech stage if asked)."""
        with atomic(self.db):
            self.db.execute("UPDATE movies SET subtitles_done = 0 WHERE id = ?", [movie_id])
            if redo_speech:
                self.db.execute("UPDATE movies SET speech_state = NULL WHERE id = ?", [movie_id])
            self.enqueue(movie_id, reason, keep_error=True)

    def delete_movie(self, movie_id: int) -> None:
        with atomic(self.db):
            self.db.execute("DELETE FROM movies WHERE id = ?", [movie_id])


    def replace_subtitle_tracks(self, movie_id: int, tracks: list[Track], sidecar_sig: str) -> None:
        """Store the embedded and sidecar tracks read now in place of the earlier ones (speech
        recognition's track is kept) and mark the subtitle stage done."""
        with atomic(self.db):
            self.db.execute("DELETE FROM subtitle_tracks WHERE movie_id = ? AND source != 'asr'", [movie_id])
            for track in tracks:
                self._add_track(movie_id, track)
            self.db["movies"].update(movie_id, {"subtitles_done": 1, "sidecar_sig": sidecar_sig})

    def has_text_subtitles(self, movie_id: int) -> bool:
        """The movie has cues from an embedded or sidecar track."""
        row = self.db.execute("SELECT COUNT(*) FROM subtitle_tracks WHERE movie_id = ? AND source != 'asr'"
                              " AND cue_count > 0", [movie_id]).fetchone()
        return bool(row[0])

    def asr_track(self, movie_id: int, new: Track) -> int:
        """The id of the movie's speech-recognition track; ``new`` is stored if it has none yet (a
        resumed run keeps adding to the track of the first)."""
        row = self.db.execute("SELECT id FROM subtitle_tracks WHERE movie_id = ? AND source = 'asr'",
                              [movie_id]).fetchone()
        if row:
            return row[0]
        with atomic(self.db):
            return self._add_track(movie_id, new)

    def add_speech_window(self, job_id: int, movie_id: int, track_id: int, track: Track, window: int,
                          total: int) -> None:
        """One transcribed window: its cues, the track's language and count, the movie's resume
        point and the job's progress, together."""
        with atomic(self.db):
            self._add_cues(movie_id, track_id, track)
            self.db.execute("UPDATE subtitle_tracks SET language = ?, cue_count = cue_count + ? WHERE id = ?",
                            [track.language, len(track.cues), track_id])
            self.db["movies"].update(movie_id, {"speech_windows_done": window + 1,
                                                "speech_language": track.language})
            self.job_progress(job_id, "speech", window + 1, total)

    def _add_track(self, movie_id: int, track: Track) -> int:
        track_id = self.db["subtitle_tracks"].insert({
            "movie_id": movie_id, "source": track.source, "ref": track.ref, "codec": track.codec,
            "language": track.language, "forced": int(track.forced), "sdh": int(track.sdh), "kind": track.kind,
            "status": track.status, "message": track.message, "cue_count": len(track.cues)}).last_pk
        self._add_cues(movie_id, track_id, track)
        return track_id

    def _add_cues(self, movie_id: int, track_id: int, track: Track) -> None:
        self.db.conn.executemany(
            'INSERT INTO cues (movie_id, track_id, start, "end", text, language, source) VALUES (?, ?, ?, ?, ?, ?, ?)',
            [(movie_id, track_id, c.start_time, c.end_time, c.text, track.language, track.source)
             for c in track.cues])


    def start_features(self, movie_id: int, values: dict) -> None:
        """A new feature file: forget the stored frame times and record its settings."""
        with atomic(self.db):
            self.db.execute("DELETE FROM frames WHERE movie_id = ?", [movie_id])
            self.db["movies"].update(movie_id, values)

    def add_frames(self, job_id: int, movie_id: int, start: int, times: list[float], capacity: int,
                   total: int, rate: float | None, reused: list[bool] | None = None) -> None:
        """One durable chunk: the times of rows ``start...`` (and which of them reuse an earlier frame's
        features, :mod:`indexer.similar`), the movie's frame count and the job's progress, together
        (the features themselves must be flushed before)."""
        end = start + len(times)
        flags = [int(bool(r)) for r in reused] if reused is not None else [0] * len(times)
        with atomic(self.db):
            self.db.conn.executemany("INSERT OR REPLACE INTO frames (movie_id, idx, time, reused) VALUES (?, ?, ?, ?)",
                                     [(movie_id, start + i, t, r) for i, (t, r) in enumerate(zip(times, flags,
                                                                                              strict=True))])
            self.db.execute("UPDATE movies SET frames_done = ?, frames_capacity = ? WHERE id = ?",
                            [end, capacity, movie_id])
            self.job_progress(job_id, "features", end, total, rate)

    def frame_time(self, movie_id: int, idx: int) -> float | None:
        row = self.db.execute("SELECT time FROM frames WHERE movie_id = ? AND idx = ?", [movie_id, idx]).fetchone()
        return row[0] if row else None

    def last_encoded_frame(self, movie_id: int, before: int) -> tuple[int, float] | None:
        """(row, time) of the last frame before row ``before`` whose features are its own (not reused)."""
        row = self.db.execute("SELECT idx, time FROM frames WHERE movie_id = ? AND idx < ? AND reused = 0"
                              " ORDER BY idx DESC LIMIT 1", [movie_id, before]).fetchone()
        return (row[0], row[1]) if row else None

    def clear_features(self, movie_id: int) -> None:
        """Forget the features (frame times and cache columns) so the feature stage starts over."""
        with atomic(self.db):
            self.db.execute("DELETE FROM frames WHERE movie_id = ?", [movie_id])
            self.db.execute("UPDATE movies SET fps = NULL, vision_id = NULL, feature_path = NULL, feature_shape = NULL,"
                            " frames_capacity = NULL, chunk_frames = NULL, frames_done = 0, features_complete = 0,"
                            " cache_bytes = 0"
                            " WHERE id = ?", [movie_id])


    def start_scenes(self, movie_id: int, values: dict) -> None:
        """A new scene-vector file: forget the stored scene rows and record its settings."""
        with atomic(self.db):
            self.db.execute("DELETE FROM scene_frames WHERE movie_id = ?", [movie_id])
            self.db["movies"].update(movie_id, dict(values, scenes_done=0, scenes_state=None, scenes_bytes=0))

    def add_scene_frames(self, job_id: int, movie_id: int, start: int, times: list[float], total: int) -> None:
        """One durable chunk of scene vectors (flushed before): its rows' times, the film's count and
        the job's progress, together."""
        end = start + len(times)
        with atomic(self.db):
            self.db.conn.executemany("INSERT OR REPLACE INTO scene_frames (movie_id, idx, time) VALUES (?, ?, ?)",
                                     [(movie_id, start + i, t) for i, t in enumerate(times)])
            self.db.execute("UPDATE movies SET scenes_done = ? WHERE id = ?", [end, movie_id])
            self.job_progress(job_id, "scenes", end, total)

    def scene_time(self, movie_id: int, idx: int) -> float | None:
        row = self.db.execute("SELECT time FROM scene_frames WHERE movie_id = ? AND idx = ?",
                              [movie_id, idx]).fetchone()
        return row[0] if row else None

    def scene_times_at(self, rows: list[tuple[int, int]]) -> dict[tuple[int, int], float]:
        """The times of some rows of scene vectors, (movie id, row) -> seconds, in one query."""
        found: dict[tuple[int, int], float] = {}
        for i in range(0, len(rows), 5000):  # within SQLite's bound on parameters
            part = rows[i:i + 5000]
            values = ", ".join("(?, ?)" for _ in part)
            sql = (f"WITH wanted(movie_id, idx) AS (VALUES {values}) SELECT scene_frames.movie_id, scene_frames.idx,"
                   " scene_frames.time FROM wanted JOIN scene_frames ON scene_frames.movie_id = wanted.movie_id"
                   " AND scene_frames.idx = wanted.idx")
            for movie_id, idx, t in self.db.execute(sql, [v for pair in part for v in pair]):
                found[(movie_id, idx)] = t
        return found

    def scene_rows(self, movie_id: int, low: int, high: int) -> list[tuple[int, float]]:
        """(row, time) of the film's scene vectors ``low <= row <= high``, in order."""
        return [(r[0], r[1]) for r in self.db.execute(
            "SELECT idx, time FROM scene_frames WHERE movie_id = ? AND idx BETWEEN ? AND ? ORDER BY idx",
            [movie_id, low, high])]

    def scene_times(self, movie_id: int) -> list[float]:
        """Seconds of each row of the film's scene vectors, in row order."""
        rows = self.db.execute("SELECT time FROM scene_frames WHERE movie_id = ? ORDER BY idx", [movie_id]).fetchall()
        return [r[0] for r in rows]

    def scene_films(self, model_id: str, movie_id: int | None = None) -> list[dict]:
        """The present films whose scene vectors are complete and made by ``model_id`` (one film's
        with ``movie_id``): id, path, rel_path, scenes_path, scenes_done, duration."""
        sql = ("SELECT id, path, rel_path, scenes_path, scenes_done, duration FROM movies WHERE scenes_state = 'done'"
               " AND scenes_model = ? AND missing = 0")
        params: list = [model_id]
        if movie_id is not None:
            sql, params = sql + " AND id = ?", params + [movie_id]
        return list(self.db.query(sql + " ORDER BY id", params))

    def requeue_for_scenes(self, model_id: str) -> list[int]:
        """Queue again the finished films that lack scene vectors of ``model_id`` (the scene model was
        installed, or changed, after they were indexed); those whose scene stage failed wait for
        ``retry``. Returns their ids."""
        with atomic(self.db):
            ids = [r[0] for r in self.db.execute(
                "SELECT movies.id FROM movies JOIN jobs ON jobs.movie_id = movies.id WHERE jobs.state = 'done'"
                " AND movies.missing = 0 AND movies.features_complete = 1 AND (movies.scenes_state IS NULL"
                " OR movies.scenes_state LIKE 'skipped%' OR (movies.scenes_state = 'done'"
                " AND movies.scenes_model IS NOT ?))", [model_id])]
            for movie_id in ids:
                self.enqueue(movie_id, "scene vectors", keep_error=True)
        return ids

    def enqueue(self, movie_id: int, reason: str, keep_error: bool = False) -> None:
        """Queue the movie's pipeline (one job row per movie, reused); running jobs are left alone."""
        t = time.time()
        with atomic(self.db):
            row = self.db.execute("SELECT state FROM jobs WHERE movie_id = ?", [movie_id]).fetchone()
            if row is None:
                self.db.execute("INSERT INTO jobs (movie_id, state, reason, created_at, updated_at)"
                                " VALUES (?, 'queued', ?, ?, ?)", [movie_id, reason, t, t])
            elif row[0] != "running":
                self.db.execute("UPDATE jobs SET state = 'queued', reason = ?, attempts = 0, updated_at = ?,"
                                " finished_at = NULL" + ("" if keep_error else ", error = NULL") +
                                " WHERE movie_id = ?", [reason, t, movie_id])

    def recover_stale_jobs(self) -> int:
        """Requeue jobs left ``running`` by a dead process (call only while holding the worker lock)."""
        with atomic(self.db):
            cur = self.db.execute("UPDATE jobs SET state = 'queued', pid = NULL, request = NULL,"
                                  " reason = 'resumed after an interrupted run' WHERE state = 'running'")
            return cur.rowcount

    def claim_next_job(self, first_pass: bool = False, passed: Collection[int] = ()) -> dict | None:
        """Take the next queued job of a present movie and mark it running (by this process).

        ``first_pass``: cheap passes first. Unless the next film was put first by a person, a film
        whose dialogue is not read yet (probe, subtitles, speech) comes before any film's frames; the
        job then has ``first_pass`` set: run only those stages, and yield (:meth:`yield_job`). ``passed``:
        films that had their first pass in this run already (never twice, whatever its stages left)."""
        with atomic(self.db):
            queued = ("SELECT jobs.* FROM jobs JOIN movies ON movies.id = jobs.movie_id"
                      " WHERE jobs.state = 'queued' AND movies.missing = 0")
            job = next(self.db.query(f"{queued} ORDER BY {QUEUE_ORDER} LIMIT 1"), None)
            cheap = None
            if job is not None and first_pass and job["priority"] <= 0:
                skip = f" AND jobs.movie_id NOT IN ({','.join(str(int(i)) for i in passed)})" if passed else ""
                cheap = next(self.db.query(f"{queued} AND {NO_DIALOGUE_YET}{skip} ORDER BY {QUEUE_ORDER} LIMIT 1"),
                             None)
            job = cheap or job
            if job is None:
                return None
            t = time.time()
            self.db.execute("UPDATE jobs SET state = 'running', pid = ?, request = NULL, attempts = attempts + 1,"
                            " started_at = ?, updated_at = ? WHERE id = ?", [os.getpid(), t, t, job["id"]])
        return {**self.job(job["id"]), "first_pass": cheap is not None}

    def queue_order(self) -> list[int]:
        """The films still to index, in the order they will be: the running one, then the queue."""
        return [r[0] for r in self.db.execute(
            "SELECT jobs.movie_id FROM jobs JOIN movies ON movies.id = jobs.movie_id"
            " WHERE jobs.state IN ('running', 'queued') AND movies.missing = 0"
            f" ORDER BY jobs.state = 'running' DESC, {QUEUE_ORDER}")]

    def bring_forward(self, movie_id: int) -> bool:
        """Put a queued film first (a person opened it or asked about it); True when it moved. The
        running job yields to it at its next chunk (:meth:`outranked`). A paused, cancelled or
        finished film is left as it is: the person decided that."""
        return self._reorder(movie_id, "MAX", +1)

    def send_back(self, movie_id: int) -> bool:
        """Put a queued film last; True when it moved."""
        return self._reorder(movie_id, "MIN", -1)

    def _reorder(self, movie_id: int, extreme: str, step: int) -> bool:
        with atomic(self.db):
            row = self.db.execute("SELECT id, priority FROM jobs WHERE movie_id = ? AND state = 'queued'",
                                  [movie_id]).fetchone()
            if row is None:
                return False
            others = self.db.execute(f"SELECT {extreme}(priority) FROM jobs WHERE state IN ('queued', 'running')"
                                     " AND id != ?", [row[0]]).fetchone()[0]
            if others is None or (row[1] - others) * step > 0:
                return False  # already ahead of (or behind) every other film
            self.db.execute("UPDATE jobs SET priority = ? WHERE id = ?", [others + step, row[0]])
        return True

    def outranked(self, job_id: int) -> bool:
        """A queued film of a present movie comes before this (running) job: it should yield."""
        return self.db.execute(
            "SELECT 1 FROM jobs JOIN movies ON movies.id = jobs.movie_id WHERE jobs.state = 'queued'"
            " AND movies.missing = 0 AND jobs.priority > (SELECT priority FROM jobs WHERE id = ?) LIMIT 1",
            [job_id]).fetchone() is not None

    def yield_job(self, job_id: int) -> None:
        """Back in the queue for a film put before it, its finished chunks kept; not a failed attempt."""
        t = time.time()
        self.db.execute("UPDATE jobs SET state = 'queued', pid = NULL, request = NULL, updated_at = ?,"
                        " attempts = MAX(0, attempts - 1) WHERE id = ?", [t, job_id])

    def job(self, job_id: int) -> dict:
        return next(self.db.query("SELECT * FROM jobs WHERE id = ?", [job_id]))

    def job_progress(self, job_id: int, stage: str, done: int, total: int | None,
                     rate: float | None = None) -> None:
        self.db.execute("UPDATE jobs SET stage = ?, done = ?, total = ?, rate = COALESCE(?, rate), updated_at = ?"
                        " WHERE id = ?", [stage, done, total, rate, time.time(), job_id])

    def finish_job(self, job_id: int, state: str, error: str | None = None, keep_error: bool = False) -> None:
        """End a run of the job; ``error`` is kept on the job until a later success clears it."""
        t = time.time()
        with atomic(self.db):
            if keep_error and error is None:
                self.db.execute("UPDATE jobs SET state = ?, pid = NULL, request = NULL, updated_at = ?,"
                                " finished_at = ? WHERE id = ?", [state, t, t, job_id])
            else:
                self.db.execute("UPDATE jobs SET state = ?, error = ?, pid = NULL, request = NULL,"
                                " updated_at = ?, finished_at = ? WHERE id = ?", [state, error, t, t, job_id])

    def job_request(self, job_id: int) -> str | None:
        """What the user asked of the running job (``pause``, ``cancel`` or None); KeyError if the
        job is gone (its movie was removed from the index)."""
        row = self.db.execute("SELECT request FROM jobs WHERE id = ?", [job_id]).fetchone()
        if row is None:
            raise KeyError(job_id)
        return row[0]

    def control_jobs(self, movie_ids: list[int], action: str) -> dict[str, int]:
        """pause / resume / cancel / retry the jobs of these movies; returns counts per outcome."""
        counts: dict[str, int] = {}
        t = time.time()
        with atomic(self.db):
            for movie_id in movie_ids:
                row = self.db.execute("SELECT id, state FROM jobs WHERE movie_id = ?", [movie_id]).fetchone()
                outcome = self._control(movie_id, row, action, t)
                counts[outcome] = counts.get(outcome, 0) + 1
        return counts

    def _control(self, movie_id: int, row, action: str, t: float) -> str:
        state = row[1] if row else None
        if action in ("pause", "cancel"):
            target = "paused" if action == "pause" else "cancelled"
            if state == "running":
                self.db.execute("UPDATE jobs SET request = ? WHERE id = ?", [action, row[0]])
                return f"{target} (after the current chunk)"
            if state in ("queued", "paused") or (action == "cancel" and state == "failed"):
                self.db.execute("UPDATE jobs SET state = ?, updated_at = ? WHERE id = ?", [target, t, row[0]])
                return target
            return f"not {target} ({state or 'no job'})"
        # resume / retry: back in the queue, the last error kept until a run succeeds
        allowed = ("paused", "cancelled") if action == "resume" else ("failed", "cancelled", "paused")
        if row is None:
            self.db.execute("INSERT INTO jobs (movie_id, state, reason, created_at, updated_at)"
                            " VALUES (?, 'queued', ?, ?, ?)", [movie_id, action, t, t])
            return "queued"
        if state in allowed or (action == "retry" and state == "done"):  # re-runs unfinished stages only
            self.db.execute("UPDATE jobs SET state = 'queued', attempts = 0, request = NULL, reason = ?,"
                            " updated_at = ? WHERE id = ?", [action, t, row[0]])
            return "queued"
        if state == "running":
            self.db.execute("UPDATE jobs SET request = NULL WHERE id = ?", [row[0]])
            return "running"
        return f"unchanged ({state})"

    def queue_counts(self) -> dict[str, int]:
        """Number of jobs in each state."""
        return {r["state"]: r["n"] for r in self.db.query("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state")}

    def last_rate(self) -> float | None:
        """The feature rate (frames per second) last measured by any job."""
        row = self.db.execute("SELECT rate FROM jobs WHERE rate > 0 ORDER BY updated_at DESC LIMIT 1").fetchone()
        return row[0] if row else None

    def failed_movie_ids(self) -> list[int]:
        """Movies whose job failed, or finished with a failed speech or scene stage (what ``retry`` retries)."""
        return [r["movie_id"] for r in self.db.query(
            "SELECT movie_id FROM jobs WHERE state = 'failed' OR (state = 'done' AND movie_id IN"
            " (SELECT id FROM movies WHERE speech_state LIKE 'error%' OR scenes_state LIKE 'error%'))")]

    def paused_movie_ids(self) -> list[int]:
        return [r["movie_id"] for r in self.db.query("SELECT movie_id FROM jobs WHERE state = 'paused'")]


    def set_prepare(self, movie_ids: list[int], wanted: bool | None) -> None:
        """Ask for (True), refuse (False) or inherit (None) a prepared state for these films."""
        with atomic(self.db):
            for movie_id in movie_ids:
                self.db.execute("UPDATE movies SET prepare = ? WHERE id = ?",
                                [None if wanted is None else int(wanted), movie_id])

    def set_library_prepare(self, library_id: int, wanted: bool) -> None:
        with atomic(self.db):
            self.db.execute("UPDATE libraries SET prepare = ? WHERE id = ?", [int(wanted), library_id])

    def prepare_wanted(self, movie_id: int) -> bool:
        """The film's own choice, else its folder's, else the library-wide setting."""
        row = self.db.execute("SELECT movies.prepare, libraries.prepare FROM movies JOIN libraries"
                              " ON libraries.id = movies.library_id WHERE movies.id = ?", [movie_id]).fetchone()
        if row is None:
            return False
        return prepare_choice(row[0], row[1], self.setting("prepare_all"))

    def record_prepared(self, movie_id: int, key: str, path: str, size: int) -> None:
        with atomic(self.db):
            self.db.execute("UPDATE movies SET prepared_key = ?, prepared_path = ?, prepared_bytes = ?,"
                            " prepared_used_at = ? WHERE id = ?", [key, path, size, time.time(), movie_id])

    def touch_prepared(self, movie_id: int) -> None:
        with atomic(self.db):
            self.db.execute("UPDATE movies SET prepared_used_at = ? WHERE id = ?", [time.time(), movie_id])

    def clear_prepared(self, movie_id: int) -> None:
        self.update_movie(movie_id, dict(PREPARED_COLUMNS))

    def prepared(self) -> list[dict]:
        """Films with a prepared state, least recently used first."""
        return list(self.db.query("SELECT id, rel_path, prepared_key, prepared_path, prepared_bytes, prepared_used_at"
                                  " FROM movies WHERE prepared_path IS NOT NULL ORDER BY prepared_used_at, id"))

    def film_plan(self, movie_id: int, model: str, track: int | None) -> dict | None:
        """The plan kept for a film, a model and a subtitle track (see ``db._v4``), or None."""
        row = self.db.execute("SELECT film, budget, stride, n_ctx FROM film_plans WHERE movie_id = ? AND model = ?"
                              " AND track = ?", [movie_id, model, track or 0]).fetchone()
        return dict(zip(("film", "budget", "stride", "n_ctx"), row, strict=True)) if row else None

    def keep_film_plan(self, movie_id: int, model: str, track: int | None, film: str, budget: int, stride: int,
                       n_ctx: int) -> dict:
        """Keep a film's plan unless one for the same film and budget is already kept (another process
        planned it first: the same plan, kept once); returns the plan kept."""
        with atomic(self.db):
            kept = self.film_plan(movie_id, model, track)
            if kept is None or (kept["film"], kept["budget"]) != (film, budget):
                self.db.execute("INSERT OR REPLACE INTO film_plans (movie_id, model, track, film, budget, stride,"
                                " n_ctx, planned_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                                [movie_id, model, track or 0, film, budget, stride, n_ctx, time.time()])
                kept = {"film": film, "budget": budget, "stride": stride, "n_ctx": n_ctx}
        return kept

    def movie_views(self) -> list[dict]:
        """Every movie with its library, job and cue count, ordered by library and relative path."""
        return list(self.db.query(_MOVIE_VIEW + " ORDER BY libraries.path, movies.rel_path"))

    def movie_view(self, movie_id: int) -> dict | None:
        return next(self.db.query(_MOVIE_VIEW + " WHERE movies.id = ?", [movie_id]), None)

    def subtitle_tracks(self, movie_id: int) -> list[dict]:
        return list(self.db.query("SELECT id, source, ref, codec, language, forced, sdh, kind, status, message,"
                                  " cue_count FROM subtitle_tracks WHERE movie_id = ? ORDER BY id", [movie_id]))

    def frame_times(self, movie_id: int) -> list[float]:
        """Seconds of each stored frame, in row order."""
        rows = self.db.execute("SELECT time FROM frames WHERE movie_id = ? ORDER BY idx", [movie_id]).fetchall()
        return [r[0] for r in rows]

    def reused_frames(self, movie_id: int) -> list[bool]:
        """Whether each stored frame's features are a copy of an earlier frame's, in row order."""
        rows = self.db.execute("SELECT reused FROM frames WHERE movie_id = ? ORDER BY idx", [movie_id]).fetchall()
        return [bool(r[0]) for r in rows]

    def cues(self, movie_id: int, sources: list[str] | None = None, language: str | None = None,
             track_id: int | None = None) -> list[tuple[float, float, str, str | None, str]]:
        """(start, end, text, language, source) of the movie's cues in time order."""
        sql = 'SELECT start, "end", text, language, source FROM cues WHERE movie_id = ?'
        params: list = [movie_id]
        if track_id is not None:
            sql += " AND track_id = ?"
            params.append(track_id)
        if sources:
            sql += f" AND source IN ({', '.join('?' * len(sources))})"
            params += list(sources)
        if language:
            sql += " AND language = ?"
            params.append(language)
        return self.db.execute(sql + ' ORDER BY start, "end", id', params).fetchall()

    def search_cues(self, query: str, movie_id: int | None = None, limit: int = 50,
                    track_id: int | None = None,
                    any_word: bool = False) -> list[tuple[int, str, float, float, str, str, str, float]]:
        """(movie id, path, start, end, text, source, snippet, bm25) of the best FTS5 matches.

        The query is taken literally (a phrase); ``any_word``: any of its words, ranked by bm25
        (lower is better), so a cue sharing more and rarer words ranks first."""
        sql = ("SELECT cues.movie_id, movies.path, cues.start, cues.\"end\", cues.text, cues.source,"
               " snippet(cues_fts, 0, '[', ']', '...', 12) AS snip, bm25(cues_fts) AS rank"
               " FROM cues_fts JOIN cues ON cues.id = cues_fts.rowid JOIN movies ON movies.id = cues.movie_id"
               " WHERE cues_fts MATCH ?")
        words = _WORD.findall(query) if any_word else [" ".join(_WORD.findall(query))]  # no quotes, no NULs
        match = " OR ".join(self.db.quote_fts(w) for w in words if w)
        if not match:
            return []
        params: list = [match]
        if movie_id is not None:
            sql += " AND cues.movie_id = ?"
            params.append(movie_id)
        if track_id is not None:
            sql += " AND cues.track_id = ?"
            params.append(track_id)
        return self.db.execute(sql + " ORDER BY rank LIMIT ?", params + [limit]).fetchall()

    def match_cues(self, match: str, movie_id: int | None = None, track_id: int | None = None,
                   limit: int = 200) -> list[dict]:
        """The cues an FTS5 query matches, FTS5's best (bm25, lower is better) first, with their film:
        id, movie_id, path, rel_path, track_id, start, end, text, source, bm25. ``match`` is an FTS5
        query of quoted words (``indexer.search`` builds it), never a person's text as typed."""
        found, params = self._fts_matches(match, movie_id, track_id)
        if movie_id is None and track_id is None:  # the library's best only: bm25 is not joined for every match
            found, params = found + " ORDER BY bm25 LIMIT ?", params + [limit]
        sql = (f"WITH found AS ({found}) SELECT cues.id, cues.movie_id, movies.path, movies.rel_path, cues.track_id,"
               ' cues.start, cues."end" AS "end", cues.text, cues.source, found.bm25'
               " FROM found JOIN cues ON cues.id = found.rowid JOIN movies ON movies.id = cues.movie_id WHERE 1")
        sql, params = _cue_scope(sql, params, movie_id, track_id)
        return list(self.db.query(sql + " ORDER BY found.bm25, cues.id LIMIT ?", params + [limit]))

    def count_cues(self, match: str | None = None, movie_id: int | None = None,
                   track_id: int | None = None) -> int:
        """How many cues (of a film, or one of its tracks) an FTS5 query matches; None: how many there are."""
        if match is None:
            sql, params = _cue_scope("SELECT COUNT(*) FROM cues WHERE 1", [], movie_id, track_id)
        elif movie_id is None and track_id is None:
            sql, params = "SELECT COUNT(*) FROM cues_fts WHERE cues_fts MATCH ?", [match]
        else:
            found, params = self._fts_matches(match, movie_id, track_id)
            sql, params = _cue_scope(f"WITH found AS ({found}) SELECT COUNT(*) FROM found JOIN cues"
                                     " ON cues.id = found.rowid WHERE 1", params, movie_id, track_id)
        return int(self.db.execute(sql, params).fetchone()[0])

    def _fts_matches(self, match: str, movie_id: int | None, track_id: int | None) -> tuple[str, list]:
        """The SQL (and its parameters) of the rowids and bm25 of the cues an FTS5 query matches; for a
        film or a track, only within the range of its cues' ids (a film's cues are written together):
        FTS5 seeks that range instead of the whole library's matches (milliseconds, not a second)."""
        sql, params = "SELECT rowid, bm25(cues_fts) AS bm25 FROM cues_fts WHERE cues_fts MATCH ?", [match]
        if movie_id is not None or track_id is not None:
            bounds, bound_params = _cue_scope("SELECT MIN(id), MAX(id) FROM cues WHERE 1", [], movie_id, track_id)
            low, high = self.db.execute(bounds, bound_params).fetchone()
            sql, params = sql + " AND rowid BETWEEN ? AND ?", params + [low or 0, high or -1]
        return sql, params

    def cue_chars(self, movie_id: int, track_id: int) -> int:
        """Characters of a subtitle track's cues, each with the space that joins it to the next in a
        prompt: what a film prompt's dialogue costs, counted without a tokenizer."""
        row = self.db.execute("SELECT COALESCE(SUM(LENGTH(text) + 1), 0) FROM cues WHERE movie_id = ? AND track_id = ?",
                              [movie_id, track_id]).fetchone()
        return int(row[0])

    def cache_bytes(self) -> int:
        """Total size of the complete feature caches."""
        return int(self.db.execute("SELECT COALESCE(SUM(cache_bytes), 0) FROM movies").fetchone()[0])


def _cue_scope(sql: str, params: list, movie_id: int | None, track_id: int | None) -> tuple[str, list]:
    """``sql`` (over ``cues``) narrowed to one film and one subtitle track when they are given."""
    if movie_id is not None:
        sql += " AND cues.movie_id = ?"
        params = [*params, movie_id]
    if track_id is not None:
        sql += " AND cues.track_id = ?"
        params = [*params, track_id]
    return sql, params
