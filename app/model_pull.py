"""Download a catalogue model for the desktop app, in a child process that reports JSON lines.

    python -m app.model_pull --data-dir DIR NAME

The model manager (:mod:`llamavid.hub.pull`) downloads resumably and verifies what arrives, but it
shows progress only as terminal bars and stops only on Ctrl-C. Run as a child process it can be
stopped at any moment, and its window never waits on the network: SIGTERM stops it like Ctrl-C,
the ``.part`` files stay, and the next pull resumes from them. This module tells the parent how
far it is by watching the files grow. One JSON object per line on stdout:

    {"event": "plan", "name": ..., "files": 3, "total": bytes wanted, "done": bytes already here}
    {"event": "file", "label": "YanweiLi/x/config.json", "index": 1, "count": 3}
    {"event": "progress", "done": ..., "total": ...}
    {"event": "done", "folder": ...}
    {"event": "error", "message": ...}           (exit status 1)
    {"event": "cancelled", "kept": bytes}        (exit status 130)
"""
from __future__ import annotations

import argparse
import json
import logging
import re
import signal
import sys
import threading
from pathlib import Path

from llamavid.errors import UserError
from llamavid.hub import catalog, download, pull
from llamavid.paths import DataDir

log = logging.getLogger(__name__)
_print_lock = threading.Lock()
POLL_SECONDS = 0.25


def emit(**values) -> None:
    with _print_lock:
        print(json.dumps(values), flush=True)


def _expected(remote: download.Remote) -> int:
    if remote.size is not None:
        return remote.size
    part = catalog.SHARED_PARTS.get(remote.dest.name)
    return (part.approx_size if part else None) or 0


def _have(remote: download.Remote) -> int:
    """Bytes of this file on disk now: the whole file once renamed, else its ``.part``."""
    for path in (remote.dest, download.part_path(remote.dest)):
        try:
            return path.stat().st_size
        except OSError:
            continue
    return 0


def stop_like_ctrl_c(signum, frame) -> None:  # noqa: ARG001 - signal handler signature
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.model_pull", description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("name", help="a catalogue name (llamavid models list --available)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, stop_like_ctrl_c)
    entry = catalog.get(args.name)
    if entry is None:
        emit(event="error", message=f"{args.name!r} is not in the catalogue")
        return 1
    stop = threading.Event()
    remotes: list[download.Remote] = []
    try:
        plan = pull.plan_pull(entry, DataDir(Path(args.data_dir)).create())
        remotes = [*plan.shared_remotes, *plan.remotes]
        total = sum(_expected(r) for r in remotes)
        emit(event="plan", name=entry.name, files=len(remotes), total=total, done=sum(_have(r) for r in remotes))

        def watch() -> None:
            while not stop.wait(POLL_SECONDS):
                emit(event="progress", done=sum(_have(r) for r in remotes), total=total)

        threading.Thread(target=watch, name="pull-progress", daemon=True).start()

        def say(line: str) -> None:
            m = re.match(r"\[(\d+)/(\d+)\] (\S+)", line)
            if m:
                emit(event="file", index=int(m.group(1)), count=int(m.group(2)), label=m.group(3))

        pull.pull(plan, progress=False, say=say)
    except KeyboardInterrupt:
        stop.set()
        emit(event="cancelled", kept=sum(_have(r) for r in remotes if not r.dest.exists()))
        return 130
    except UserError as exc:
        stop.set()
        emit(event="error", message=str(exc))
        return 1
    except Exception as exc:  # noqa: BLE001 - the parent shows it; the traceback goes to stderr
        stop.set()
        log.exception("pulling %s failed", args.name)
        emit(event="error", message=f"{exc.__class__.__name__}: {exc}")
        return 1
    stop.set()
    emit(event="progress", done=total, total=total)
    emit(event="done", folder=str(plan.folder))
    return 0


if __name__ == "__main__":
    sys.exit(main())
