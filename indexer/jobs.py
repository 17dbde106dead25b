"""The job queue's process rules: one worker per data folder, and pause/cancel between chunks.

Each movie has one persistent job; its states and the queries on them are in store.py. Only one
process works the queue: it holds an exclusive ``flock`` on ``<data>/indexer.lock``. Because of
that, any job still marked ``running`` when the lock is taken belongs to a process that died
(kill -9, power loss), and is put back in the queue to resume (``LibraryStore.recover_stale_jobs``).
A job that is running when another process asks to pause or cancel it gets a ``request``; the
pipeline checks it between chunks and stops cleanly. A global pause makes the runner put its
current job back in the queue and exit. A film put before the running one (a person opened it)
makes the running job yield at its next chunk: it goes back in the queue, its finished chunks kept.
"""
from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from indexer.errors import Interrupted
from indexer.store import LibraryStore
from llamavid.errors import UserError


@contextmanager
def worker_lock(root: Path) -> Iterator[None]:
    """Be the only indexer working this data folder, or say which process is."""
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


def check_control(store: LibraryStore, job_id: int) -> None:
    """Raise Interrupted if the user paused or cancelled this job, or paused the whole queue."""
    try:
        request = store.job_request(job_id)
    except KeyError:  # the movie was removed from the index
        raise Interrupted("cancelled") from None
    if request == "pause":
        raise Interrupted("paused")
    if request == "cancel":
        raise Interrupted("cancelled")
    if store.queue_paused():
        raise Interrupted("queued")
    if store.outranked(job_id):
        raise Interrupted("yielded")
