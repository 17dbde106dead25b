"""Sharing the machine (indexer.sharing): the indexer child runs at low priority and stops between
chunks while a question is being answered, seen through its own progress in the library."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time

import pytest

from indexer import sharing
from indexer.controls import add_folders, indexer_command, open_store
from llamavid.paths import DataDir
from tests.support.indexer_cli import REPO
from tests.support.media import make_video
from tests.support.wait import wait_for


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _marker(root, name: str, **fields) -> None:
    folder = sharing.busy_dir(root)
    folder.mkdir(parents=True, exist_ok=True)
    values = {"pid": os.getpid(), "host": sharing.socket.gethostname(), "started": time.time(), **fields}
    (folder / name).write_text(json.dumps(values))


def test_a_marker_lives_while_answering_and_only_live_ones_count(tmp_path):
    assert sharing.answering_now(tmp_path) == []
    with sharing.answering(tmp_path) as path:
        (marker,) = sharing.answering_now(tmp_path)
        assert marker.pid == os.getpid() and marker.path == path
    assert sharing.answering_now(tmp_path) == [] and not path.exists()

    _marker(tmp_path, "answering-dead.json", pid=_dead_pid())         # a chat killed with -9
    _marker(tmp_path, "answering-elsewhere.json", host="another-machine")  # a data folder shared over the network
    _marker(tmp_path, "answering-stale.json")                          # alive, but no heartbeat for a minute
    old = time.time() - sharing.STALE_S - 30
    os.utime(sharing.busy_dir(tmp_path) / "answering-stale.json", (old, old))
    (sharing.busy_dir(tmp_path) / "answering-broken.json").write_text("{")
    assert sharing.answering_now(tmp_path) == []


def test_the_heartbeat_keeps_a_long_answer_fresh(tmp_path, monkeypatch):
    monkeypatch.setattr(sharing, "HEARTBEAT_S", 0.05)
    with sharing.answering(tmp_path) as path:
        old = time.time() - 100
        os.utime(path, (old, old))
        wait_for(lambda: time.time() - path.stat().st_mtime < 5, timeout=10)
        assert sharing.answering_now(tmp_path)


def test_waiting_ends_with_the_answer_and_is_bounded(tmp_path):
    assert sharing.wait_while_answering(tmp_path) < 0.1  # nobody answers: no wait
    checks = []
    with sharing.answering(tmp_path):
        waited = sharing.wait_while_answering(tmp_path, lambda: checks.append(1), poll=0.01, max_wait=0.2)
    assert 0.2 <= waited < 5 and len(checks) >= 2  # bounded; pause and cancel are checked meanwhile

    class Paused(Exception):
        pass

    def pause():
        raise Paused

    with sharing.answering(tmp_path), pytest.raises(Paused):
        sharing.wait_while_answering(tmp_path, pause, poll=0.01)

    done = threading.Event()

    def answer():
        with sharing.answering(tmp_path):
            done.wait(10)

    worker = threading.Thread(target=answer)
    worker.start()
    wait_for(lambda: sharing.answering_now(tmp_path), timeout=10)
    threading.Timer(0.3, done.set).start()
    assert sharing.wait_while_answering(tmp_path, poll=0.01) >= 0.2
    worker.join()


LOWER = """
import json, os, threading
from indexer.sharing import lower_priority

def nice(tid):
    return os.getpriority(os.PRIO_PROCESS, tid)

stop, started = threading.Event(), threading.Event()
before = threading.Thread(target=lambda: (started.set(), stop.wait()))
before.start()
started.wait()
done = lower_priority()
threads = [nice(int(tid)) for tid in os.listdir("/proc/self/task")]
later = []
after = threading.Thread(target=lambda: later.append(nice(threading.get_native_id())))
after.start()
after.join()
stop.set()
print(json.dumps({"done": done, "threads": threads, "later": later}))
"""


def test_lower_priority_lowers_every_thread_and_those_started_later():
    out = subprocess.run([sys.executable, "-c", LOWER], cwd=REPO, capture_output=True, text=True, check=True)
    result = json.loads(out.stdout)
    assert "nice 19" in result["done"]
    assert set(result["threads"]) == {19} and len(result["threads"]) >= 2 and result["later"] == [19]


@pytest.mark.slow
def test_a_question_asked_while_indexing_gets_the_cpu(tmp_path, tiny_eva, tiny_checkpoint):
    """The indexer child, started as the apps start it, lowers its priority, and stops between chunks
    while the chat service generates an answer; it goes on once the answer is done."""
    from app.chat_service import ChatService
    from indexer.db import connect
    from llamavid.runtime.api import LlamaVid
    from llamavid.runtime.generate import SamplingOptions

    data = DataDir(tmp_path / "data").create()
    films = tmp_path / "films"
    make_video(films / "Long.mkv", seconds=16, size=(64, 48))
    (data.root / "models" / "shared").mkdir(parents=True)
    shutil.copy(tiny_eva, data.root / "models" / "shared" / "eva_vit_g.pth")
    with open_store(data) as store:
        add_folders(store, [films])

    def job() -> tuple[str | None, int]:
        db = connect(data.database)
        try:
            return db.execute("SELECT jobs.stage, movies.frames_done FROM jobs JOIN movies"
                              " ON movies.id = jobs.movie_id").fetchone()
        finally:
            db.close()

    env = {k: v for k, v in os.environ.items() if k != "LLAMAVID_INDEX_PRIORITY"}  # the apps' default
    env["PYTHONPATH"] = str(REPO)
    command = [*indexer_command(data, idle=0.1), "--vision-engine", "fp32", "--speech", "never", "--batch-size", "2"]
    with open(tmp_path / "indexer.log", "w") as log:
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    lv = LlamaVid.load(tiny_checkpoint, device="cpu", dtype="fp32", load_vision=False)
    service = ChatService(data.root, lv=lv)
    seen: dict[str, object] = {}
    original = lv.decode

    def generating(steps):
        """The answer is being generated: the indexer stops at its next chunk and stays stopped."""
        seen["stopped"] = wait_for(lambda: job()[0] == "waiting" and job(), timeout=120)
        observed = []
        for _ in range(8):  # several of the indexer's polls and of its chunk times (0.1 s rest + a tiny EVA)
            time.sleep(0.4)
            observed.append(job())
        seen["while answering"] = observed
        yield from original(steps)

    try:
        wait_for(lambda: job()[1] >= 2 or proc.poll() is not None, timeout=180)
        assert proc.poll() is None, (tmp_path / "indexer.log").read_text()
        assert os.getpriority(os.PRIO_PROCESS, proc.pid) == sharing.LOW_NICE
        lv.decode = generating
        events = list(service.ask_about("Say something.", options=SamplingOptions(temperature=0, max_new_tokens=4)))
        assert events[-1].type == "done", events[-1]
        stage, frames = seen["stopped"]
        assert 2 <= frames < 16
        assert seen["while answering"] == [("waiting", frames)] * 8  # no chunk while the answer was generated
        # the marker goes as the worker leaves the question, just after its last event
        wait_for(lambda: not list(sharing.busy_dir(data.root).glob("answering-*.json")), timeout=30)
        wait_for(lambda: proc.poll() is not None, timeout=300)  # then it goes on, to the end
        assert proc.returncode == 0, (tmp_path / "indexer.log").read_text()
        assert job() == ("features", 16)
    finally:
        service.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
