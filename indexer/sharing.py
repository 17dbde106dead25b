"""Sharing the machine with the chat: the indexer works at low priority and steps aside while a
question is being answered on the same machine, so an answer never waits on it for the CPU.

Two mechanisms, both best-effort:

* **Priority** (:func:`lower_priority`): the indexer child (``llamavid index run`` / ``watch``, and
  so the process the web UI and the desktop start) lowers its own CPU priority to nice 19 and its
  disk priority to the lowest level of the best-effort class (``ionice -c2 -n7``) unless started
  with ``--priority normal``. Every thread is lowered, and the threads started later (torch's,
  FFmpeg's, the decode workers) inherit it. Not the idle I/O class: a process in it can be kept
  off the disk indefinitely while it holds the library's write lock, and then the chat would wait
  on it. Where the system refuses (a container without the syscall, Windows), nothing happens.
* **Stepping aside** (:func:`answering`, :func:`wait_while_answering`): a process answering a
  question (the chat service, around each question it works on) keeps a marker file in
  ``<data>/busy/``: ``answering-<pid>-<n>.json`` with its pid and host, its modification time
  refreshed every :data:`HEARTBEAT_S` seconds, removed when the answer ends. Between chunks (a
  feature chunk, a speech window, a block of a film being prepared) the indexer looks for live
  markers and, while there is one, waits (the job's stage reads ``waiting``), checking every
  :data:`POLL_S` seconds for pause or cancel. A marker counts only if its process is alive on this
  host and its heartbeat is fresher than :data:`STALE_S` (a killed chat leaves a marker that is
  ignored); one wait lasts at most ``max_wait`` seconds (:data:`MAX_WAIT_S`), after which the
  indexer does one more chunk before it looks again, so a stuck chat slows it down but cannot stop it.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import itertools
import json
import logging
import os
import platform
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

BUSY_DIR = "busy"
HEARTBEAT_S = 5.0
STALE_S = 30.0
POLL_S = 0.5
MAX_WAIT_S = 1800.0
LOW_NICE = 19
#: Linux ioprio: best-effort class (2), level 7 (the lowest), for the calling thread (who 1 = a process/thread id).
IOPRIO_CLASS_BE, IOPRIO_LOWEST, IOPRIO_CLASS_SHIFT, IOPRIO_WHO_PROCESS = 2, 7, 13, 1
_SYS_IOPRIO_SET = {"x86_64": 251, "amd64": 251, "aarch64": 30, "arm64": 30, "i386": 289, "i686": 289}
PRIORITIES = ("low", "normal")

_counter = itertools.count()


# -- priority -----------------------------------------------------------------------------------------
def _threads() -> list[int]:
    """This process's thread ids (Linux: /proc/self/task); elsewhere just the process (0)."""
    try:
        return [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        return [0]


def _ioprio_set(tid: int) -> bool:
    number = _SYS_IOPRIO_SET.get(platform.machine().lower())
    if not sys.platform.startswith("linux") or number is None:
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    value = (IOPRIO_CLASS_BE << IOPRIO_CLASS_SHIFT) | IOPRIO_LOWEST
    return libc.syscall(number, IOPRIO_WHO_PROCESS, tid, value) == 0


def lower_priority(niceness: int = LOW_NICE) -> list[str]:
    """Lower this process (every thread) to ``niceness`` and the lowest best-effort disk priority;
    returns what was done, e.g. ``["nice 19", "ionice best-effort 7"]`` (empty where not permitted)."""
    done = []
    if hasattr(os, "setpriority"):
        ok = False
        for tid in _threads():
            try:
                if os.getpriority(os.PRIO_PROCESS, tid) < niceness:
                    os.setpriority(os.PRIO_PROCESS, tid, niceness)
                ok = True
            except OSError:  # a thread that just ended, or not permitted
                continue
        if ok:
            done.append(f"nice {niceness}")
    try:
        if all([_ioprio_set(tid) for tid in _threads()]):
            done.append(f"ionice best-effort {IOPRIO_LOWEST}")
    except (OSError, AttributeError) as exc:
        log.debug("ioprio_set: %s", exc)
    return done


# -- answering markers --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Marker:
    path: Path
    pid: int
    host: str
    started: float


def busy_dir(root: str | Path) -> Path:
    return Path(root) / BUSY_DIR


@contextmanager
def answering(root: str | Path, what: str = "chat") -> Iterator[Path]:
    """Say "a question is being answered here" while the block runs (see the module docstring)."""
    with _marker(root, "answering", what=what) as path:
        yield path


@contextmanager
def holding(root: str | Path, model: str) -> Iterator[Path]:
    """Say "this process holds chat model ``model`` and prepares films with it" while the block runs:
    the indexer then leaves preparing to it instead of loading a second copy (:func:`holders`)."""
    with _marker(root, "holding", model=model) as path:
        yield path


@contextmanager
def _marker(root: str | Path, kind: str, **fields: str) -> Iterator[Path]:
    """A ``<data>/busy/<kind>-<pid>-<n>.json`` marker with a heartbeat, removed when the block ends."""
    folder = busy_dir(root)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{kind}-{os.getpid()}-{next(_counter)}.json"
    path.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), **fields,
                                "started": time.time()}))
    stop = threading.Event()

    def heartbeat() -> None:
        while not stop.wait(HEARTBEAT_S):
            try:
                os.utime(path)
            except OSError:
                return

    beat = threading.Thread(target=heartbeat, name=f"llamavid-{kind}", daemon=True)
    beat.start()
    try:
        yield path
    finally:
        stop.set()
        path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    except OSError:
        return False
    return True


def answering_now(root: str | Path, now: float | None = None) -> list[Marker]:
    """The live markers: a process on this host that is alive and whose heartbeat is fresh."""
    return [m for m, _ in _live(root, "answering", now)]


def holders(root: str | Path, model: str, now: float | None = None) -> list[Marker]:
    """The live processes on this machine that hold chat model ``model`` (:func:`holding`)."""
    return [m for m, data in _live(root, "holding", now) if data.get("model") == model]


def _live(root: str | Path, kind: str, now: float | None = None) -> list[tuple[Marker, dict]]:
    folder = busy_dir(root)
    try:
        paths = list(folder.glob(f"{kind}-*.json"))
    except OSError:
        return []
    now = time.time() if now is None else now
    host, found = socket.gethostname(), []
    for path in paths:
        try:
            age = now - path.stat().st_mtime
            data = json.loads(path.read_text())
            marker = Marker(path, int(data["pid"]), str(data["host"]), float(data.get("started", 0)))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # removed meanwhile, or half-written
        if age <= STALE_S and marker.host == host and _alive(marker.pid):
            found.append((marker, data))
    return found


def wait_while_answering(root: str | Path, check: Callable[[], None] = lambda: None, poll: float = POLL_S,
                         max_wait: float = MAX_WAIT_S) -> float:
    """Wait while a question is answered on this machine, at most ``max_wait`` seconds, calling
    ``check`` (which may raise to stop, e.g. a pause) every ``poll`` seconds; returns seconds waited."""
    start = time.monotonic()
    while answering_now(root):
        check()
        waited = time.monotonic() - start
        if waited >= max_wait:
            log.info("a question has been answered for %.0f s: indexing one more chunk", waited)
            break
        time.sleep(min(poll, max(0.0, max_wait - waited)))
    return time.monotonic() - start
