"""The job queue: one persistent job per movie, claimed by the single indexer process.

States: ``queued`` -> ``running`` -> ``done`` | ``failed``; ``paused`` and ``cancelled`` are set by
the user. A job that is running when another process asks to pause or cancel it gets a
``request``; the runner checks it between chunks and stops cleanly. A global pause (setting
``paused``) makes the runner put its current job back in the queue and exit.

Only one process works the queue: it holds an exclusive ``flock`` on ``<data>/indexer.lock``.
Because of that, any job still marked ``running`` when the lock is taken belongs to a process
that died (kill -9, power loss), and is put back in the queue to resume.
"""
from __future__ import annotations

import fcntl
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import sqlite_utils

from indexer.db import atomic, get_setting, set_setting
from indexer.errors import Interrupted

STATES = ("queued", "running", "paused", "done", "failed", "cancelled")
ACTIVE = ("queued", "running")


@contextmanager
def worker_lock(root: Path) -> Iterator[None]:
    """Be the only indexer working this data folder, or say which process is."""
    from llamavid.errors import UserError

    root.mkdir(parents=True, exist_ok=True)
    path = root / "indexer.lock"
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "?"
        handle.close()
        raise UserError(f"another indexer (pid {holder}) is already working on {root}; "
                        "wait for it, or stop it and run again") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    try:
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def recover_stale(db: sqlite_utils.Database) -> int:
    """Requeue jobs left ``running`` by a dead process (call only while holding the lock)."""
    with atomic(db):
        cur = db.execute("UPDATE jobs SET state = 'queued', pid = NULL, request = NULL,"
                         " reason = 'resumed after an interrupted run' WHERE state = 'running'")
        return cur.rowcount


def claim_next(db: sqlite_utils.Database) -> dict | None:
    """Take the oldest queued job of a present movie and mark it running."""
    with atomic(db):
        rows = list(db.query(
            "SELECT jobs.* FROM jobs JOIN movies ON movies.id = jobs.movie_id"
            " WHERE jobs.state = 'queued' AND movies.missing = 0"
            " ORDER BY jobs.attempts, jobs.id LIMIT 1"))  # retries after fresh jobs
        if not rows:
            return None
        job = rows[0]
        t = time.time()
        db.execute("UPDATE jobs SET state = 'running', pid = ?, request = NULL, attempts = attempts + 1,"
                   " started_at = ?, updated_at = ? WHERE id = ?", [os.getpid(), t, t, job["id"]])
    return get_job(db, job["id"])


def get_job(db: sqlite_utils.Database, job_id: int) -> dict:
    return next(db.query("SELECT * FROM jobs WHERE id = ?", [job_id]))


def progress(db: sqlite_utils.Database, job_id: int, stage: str, done: int, total: int | None,
             rate: float | None = None) -> None:
    db.execute("UPDATE jobs SET stage = ?, done = ?, total = ?, rate = COALESCE(?, rate), updated_at = ?"
               " WHERE id = ?", [stage, done, total, rate, time.time(), job_id])


def finish(db: sqlite_utils.Database, job_id: int, state: str, error: str | None = None,
           keep_error: bool = False) -> None:
    """End a run of the job; ``error`` is kept on the job until a later success clears it."""
    t = time.time()
    with atomic(db):
        if keep_error and error is None:
            db.execute("UPDATE jobs SET state = ?, pid = NULL, request = NULL, updated_at = ?,"
                       " finished_at = ? WHERE id = ?", [state, t, t, job_id])
        else:
            db.execute("UPDATE jobs SET state = ?, error = ?, pid = NULL, request = NULL, updated_at = ?,"
                       " finished_at = ? WHERE id = ?", [state, error, t, t, job_id])


def check_control(db: sqlite_utils.Database, job_id: int) -> None:
    """Raise Interrupted if the user paused or cancelled this job, or paused the whole queue."""
    row = db.execute("SELECT request FROM jobs WHERE id = ?", [job_id]).fetchone()
    if row is None:  # the movie was removed from the index
        raise Interrupted("cancelled")
    if row[0] == "pause":
        raise Interrupted("paused")
    if row[0] == "cancel":
        raise Interrupted("cancelled")
    if queue_paused(db):
        raise Interrupted("queued")


def queue_paused(db: sqlite_utils.Database) -> bool:
    return get_setting(db, "paused") == "1"


def pause_queue(db: sqlite_utils.Database, paused: bool) -> None:
    with atomic(db):
        set_setting(db, "paused", "1" if paused else None)


def request(db: sqlite_utils.Database, movie_ids: list[int], action: str) -> dict[str, int]:
    """pause / resume / cancel / retry the jobs of these movies; returns counts per outcome."""
    counts: dict[str, int] = {}
    t = time.time()
    with atomic(db):
        for movie_id in movie_ids:
            row = db.execute("SELECT id, state FROM jobs WHERE movie_id = ?", [movie_id]).fetchone()
            outcome = _apply(db, movie_id, row, action, t)
            counts[outcome] = counts.get(outcome, 0) + 1
    return counts


def _apply(db: sqlite_utils.Database, movie_id: int, row, action: str, t: float) -> str:
    state = row[1] if row else None
    if action in ("pause", "cancel"):
        target = "paused" if action == "pause" else "cancelled"
        if state == "running":
            db.execute("UPDATE jobs SET request = ? WHERE id = ?", [action, row[0]])
            return f"{target} (after the current chunk)"
        if state in ("queued", "paused") or (action == "cancel" and state == "failed"):
            db.execute("UPDATE jobs SET state = ?, updated_at = ? WHERE id = ?", [target, t, row[0]])
            return target
        return f"not {target} ({state or 'no job'})"
    # resume / retry: back in the queue, the last error kept until a run succeeds
    allowed = ("paused", "cancelled") if action == "resume" else ("failed", "cancelled", "paused")
    if row is None:
        db.execute("INSERT INTO jobs (movie_id, state, reason, created_at, updated_at)"
                   " VALUES (?, 'queued', ?, ?, ?)", [movie_id, action, t, t])
        return "queued"
    if state in allowed or (action == "retry" and state == "done"):  # re-runs unfinished stages only
        db.execute("UPDATE jobs SET state = 'queued', attempts = 0, request = NULL, reason = ?,"
                   " updated_at = ? WHERE id = ?", [action, t, row[0]])
        return "queued"
    if state == "running":
        db.execute("UPDATE jobs SET request = NULL WHERE id = ?", [row[0]])
        return "running"
    return f"unchanged ({state})"


def queue_counts(db: sqlite_utils.Database) -> dict[str, int]:
    return {r["state"]: r["n"] for r in db.query("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state")}
