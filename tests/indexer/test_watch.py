"""Watch mode: new files are picked up from file-system events and from periodic rescans."""
from __future__ import annotations

import os
import shutil
import signal
import time

import pytest

from indexer.watch import Watcher
from llamavid.paths import DataDir
from tests.support.media import make_video
from tests.support.wait import wait_for


def _paths(cli) -> set[str]:
    db = cli.db()
    try:
        return {r[0] for r in db.execute("SELECT rel_path FROM movies WHERE missing = 0")}
    finally:
        db.close()


def test_watcher_scans_on_events(cli, movies, tmp_path):
    make_video(movies / "A.mkv", seconds=1)
    cli("add", movies, "--no-scan")
    watcher = Watcher(DataDir(cli.data_dir), rescan_seconds=3600, settle_seconds=0, poll_seconds=0.5)
    watcher.start()  # the initial scan
    try:
        assert _paths(cli) == {"A.mkv"}
        staged = make_video(tmp_path / "B.mkv", seconds=1)
        shutil.move(staged, movies / "B.mkv")
        wait_for(lambda: _paths(cli) == {"A.mkv", "B.mkv"}, timeout=30)
        (movies / "A.mkv").unlink()
        wait_for(lambda: _paths(cli) == {"B.mkv"}, timeout=30)
    finally:
        watcher.stop()
    assert not watcher._thread.is_alive()


def test_periodic_rescan_without_events(cli, movies, tmp_path, monkeypatch):
    import watchfiles

    cli("add", movies, "--no-scan")

    def no_events(*paths, stop_event, **kwargs):  # a network share: no change notifications
        while not stop_event.wait(0.2):
            yield set()

    monkeypatch.setattr(watchfiles, "watch", no_events)
    watcher = Watcher(DataDir(cli.data_dir), rescan_seconds=0.5, settle_seconds=0, poll_seconds=0.2)
    watcher.start()
    try:
        make_video(movies / "C.mkv", seconds=1)
        wait_for(lambda: _paths(cli) == {"C.mkv"}, timeout=30)
    finally:
        watcher.stop()
    assert watcher.scans >= 2


def test_watch_command_indexes_and_stops_on_interrupt(cli, movies, tiny_eva, monkeypatch):
    """`index watch` = initial scan + worker that waits for work instead of exiting."""
    path = make_video(movies / "A.mkv", seconds=1)
    os.utime(path, (path.stat().st_atime - 60, path.stat().st_mtime - 60))  # copied a minute ago
    cli("add", movies, "--no-scan")
    seen = []

    def stop_when_idle(self):
        seen.append(True)
        raise KeyboardInterrupt  # what Ctrl-C does while the worker waits

    monkeypatch.setattr(Watcher, "wait", stop_when_idle)
    code, out, err = cli("watch", "--vision", tiny_eva, "--speech", "never", "--quiet")
    assert code == 130 and seen
    assert cli.status()["A.mkv"]["state"] == "done"
    code, out, _ = cli("run", "--vision", tiny_eva, "--quiet")  # the worker lock was released
    assert code == 0 and "nothing to do" in out


def _state(cli, path: str) -> str | None:
    return cli.status().get(path, {}).get("state")


@pytest.mark.slow
def test_index_watch_indexes_a_copied_film_and_marks_a_removed_one_missing(cli, movies, tiny_eva, tmp_path):
    """End to end: ``llamavid index watch`` as its own process, a film copied into the watched folder
    while it runs, another deleted. A fresh copy is newer than the 10 s settle time, so the watcher
    leaves it for its retry scan: the test takes about 20 s."""
    old = make_video(movies / "A.mkv", seconds=1)
    os.utime(old, (time.time() - 60, time.time() - 60))
    cli("add", movies, "--no-scan")
    proc = cli.spawn("watch", "--vision", tiny_eva, "--speech", "never", "--quiet")
    try:
        wait_for(lambda: _state(cli, "A.mkv") == "done", timeout=120, interval=0.5)  # the initial scan
        staged = make_video(tmp_path / "B.mkv", seconds=1)
        shutil.copy(staged, movies / "B.mkv")  # a copy has a new mtime, as cp and file managers give it
        wait_for(lambda: _state(cli, "B.mkv") == "done", timeout=120, interval=0.5)
        (movies / "A.mkv").unlink()
        wait_for(lambda: _state(cli, "A.mkv") == "missing", timeout=60, interval=0.5)
        assert proc.poll() is None, proc.communicate()  # still watching
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    b = cli.status()["B.mkv"]
    assert b["frames"] == 1 and b["features_complete"] and b["feature_shape"][0] == 1  # 1 s at 1 fps
