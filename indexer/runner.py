"""Work the queue: claim a job, run its pipeline, turn what went wrong into a job state and message.

Failure policy (see errors.py): bad input fails the movie at once and the queue goes on; an
unexpected error is kept as the job's last error and retried (after the fresh jobs) up to
``max_attempts``; a full disk or a setup problem (no vision weights) stops the run, because every
following job would fail the same way. Ctrl-C / SIGTERM put the current job back in the queue.
"""
from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from indexer import jobs
from indexer.errors import DiskFull, FileChanged, Interrupted, is_disk_full
from indexer.pipeline import IndexOptions, Pipeline, ProgressFn
from indexer.scan import rescan_movie
from indexer.scenes import queue_missing_scenes
from indexer.store import LibraryStore
from llamavid.errors import BadMedia, UserError

log = logging.getLogger(__name__)
EventFn = Callable[[dict, str, "str | None"], None]


@dataclass
class RunSummary:
    outcomes: dict[str, int] = field(default_factory=dict)
    stopped: str | None = None          # why the run ended early: paused, stopped, disk full...

    def count(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1

    def text(self) -> str:
        parts = [f"{n} {k}" for k, n in sorted(self.outcomes.items())] or ["nothing to do"]
        return ", ".join(parts) + (f" ({self.stopped})" if self.stopped else "")


def run_queue(data, options: IndexOptions, on_progress: ProgressFn | None = None,
              on_event: EventFn | None = None, wait: Callable[[], None] | None = None,
              stop: threading.Event | None = None) -> RunSummary:
    """Process queued jobs until none is left (or, with ``wait``, until ``stop`` is set)."""
    summary = RunSummary()
    data.create()
    with LibraryStore.open(data.database) as store, jobs.worker_lock(data.root):
        store.recover_stale_jobs()
        queue_missing_scenes(store, data, options.scenes)  # the scene model came after these films
        pipeline = Pipeline(store, data, options, on_progress)
        _work(store, pipeline, options, summary, on_event or (lambda movie, outcome, message: None), wait, stop)
    return summary


def _work(store: LibraryStore, pipeline: Pipeline, options: IndexOptions, summary: RunSummary,
          on_event: EventFn, wait: Callable[[], None] | None, stop: threading.Event | None) -> None:
    passed: set[int] = set()  # films given their first pass (dialogue) in this run
    while not (stop and stop.is_set()):
        if store.queue_paused():
            summary.stopped = "queue paused; `llamavid index resume` to continue"
            return
        job = store.claim_next_job(first_pass=options.dialogue_first, passed=passed)
        if job is None:
            if wait is None:
                return
            wait()
            continue
        movie = {"path": store.movie(job["movie_id"])["path"]}
        if job.get("first_pass"):
            passed.add(job["movie_id"])
        try:
            outcome, message = run_job(pipeline, store, job, options)
        except (DiskFull, UserError) as exc:
            on_event(movie, "stopped", str(exc))
            summary.stopped = str(exc)
            raise
        summary.count(outcome)
        on_event(movie, outcome, message)


def run_job(pipeline: Pipeline, store: LibraryStore, job: dict, options: IndexOptions) -> tuple[str, str | None]:
    """Run one job and record how it ended; returns (outcome, message)."""
    job_id = job["id"]
    first_pass = bool(job.get("first_pass"))
    try:
        pipeline.run(job, first_pass=first_pass)
    except Interrupted as exc:
        if exc.state == "yielded":
            store.yield_job(job_id)
        else:
            store.finish_job(job_id, exc.state, keep_error=True)
        return exc.state, None
    except BadMedia as exc:
        store.finish_job(job_id, "failed", str(exc))
        return "failed", str(exc)
    except FileChanged as exc:
        return _file_changed(store, job, exc)
    except DiskFull as exc:
        _finish_quietly(store, job_id, "failed", str(exc))
        raise
    except UserError as exc:
        store.finish_job(job_id, "queued", str(exc))
        raise
    except (KeyboardInterrupt, SystemExit):
        _finish_quietly(store, job_id, "queued", None, keep_error=True)
        raise
    except Exception as exc:  # noqa: BLE001 - anything else: keep the error, retry later
        if is_disk_full(exc):
            message = f"the disk is full ({exc}); free some space and run `llamavid index retry`"
            _finish_quietly(store, job_id, "failed", message)
            raise DiskFull(message) from exc
        log.exception("indexing movie %s failed", job["movie_id"])
        message = f"{exc.__class__.__name__}: {exc}"
        state = "failed" if job["attempts"] >= options.max_attempts else "queued"
        store.finish_job(job_id, state, message)
        return ("failed" if state == "failed" else "retrying"), message
    if first_pass:  # its dialogue can be searched and asked about; its frames come in their turn
        store.yield_job(job_id)
        return "dialogue ready", None
    store.finish_job(job_id, "done", None)
    return "done", None


def _file_changed(store: LibraryStore, job: dict, exc: FileChanged) -> tuple[str, str]:
    """Removed: wait in the queue for the file to come back. Replaced: index the new content."""
    what = rescan_movie(store, job["movie_id"])
    if what == "missing":
        message = f"{exc}; marked missing, it resumes if the file comes back"
        store.finish_job(job["id"], "queued", message)
        return "missing", message
    message = f"{exc}; indexing the new content from the start" if what == "changed" else str(exc)
    store.finish_job(job["id"], "queued", message)
    return "requeued", message


def _finish_quietly(store: LibraryStore, job_id: int, state: str, error: str | None, keep_error: bool = False) -> None:
    """Record the job's end if the database can still be written (it may be the full disk)."""
    try:
        store.finish_job(job_id, state, error, keep_error=keep_error)
    except sqlite3.Error:
        log.warning("could not record the end of job %s", job_id)
