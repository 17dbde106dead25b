"""Nothing already stored is lost or corrupted: a write that fails half way (a full disk) leaves the
old file and no temporary one; two writers of one file never mix; an answer kept survives a state
that could not be saved (the state is rebuilt next time); a conversation whose film left the
library is detached and says so; the conversations store serves many threads at once."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

import app.live_chat
from app.chat_service import ChatService
from app.conversations import ConversationStore
from indexer import movies
from indexer.store import LibraryStore
from llamavid.model.tiny import write_tiny_checkpoint
from llamavid.paths import DataDir
from llamavid.runtime.api import LlamaVid
from llamavid.runtime.chat import Chat
from llamavid.runtime.generate import SamplingOptions
from llamavid.runtime.inputs import Visual
from llamavid.runtime.state import read_header, save_chat
from llamavid.storage import write_json_atomic

ROOT = Path(__file__).resolve().parents[2]
GREEDY = SamplingOptions(temperature=0, max_new_tokens=6)


def _fake_chat(payload: bytes, length: int = 3) -> SimpleNamespace:
    """What save_chat reads of a chat, with ``payload`` as the backend's cache bytes."""
    backend = SimpleNamespace(export_cache=lambda state: payload)
    state = SimpleNamespace(length=length, seen_ids=list(range(length)), pending=[])
    return SimpleNamespace(backend=backend, state=state, turns=[], last_token=0, relevance=None)


def _full_disk_child(code: str, limit: int) -> subprocess.CompletedProcess:
    """Run ``code`` where no file may grow past ``limit`` bytes (RLIMIT_FSIZE; SIGXFSZ ignored, so a
    write past it raises OSError(EFBIG) as a full disk's would)."""
    prelude = textwrap.dedent(f"""
        import resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
    """)
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def _save_on_a_full_disk(path: Path, backend: str) -> subprocess.CompletedProcess:
    """Save a 12 MB state whose backend is the code ``backend`` (a ``SimpleNamespace``) where no file
    may grow past 6 MB; the child exits 3 when the save raised OSError."""
    return _full_disk_child(f"""
        from types import SimpleNamespace
        from llamavid.runtime.state import save_chat

        def fill(state, dst):
            dst[:] = b"m" * dst.nbytes
            return dst.nbytes

        chat = SimpleNamespace(backend={backend}, state=SimpleNamespace(length=9, seen_ids=[1], pending=[]),
                               turns=[], last_token=0, relevance=None)
        try:
            save_chat(chat, {str(path)!r}, {{"film": "f"}})
        except OSError as exc:
            print("failed:", exc.errno)
            sys.exit(3)
        sys.exit(0)
    """, limit=6 << 20)


def test_a_state_write_that_fails_half_way_leaves_the_old_state_and_no_temporary_file(tmp_path):
    path = tmp_path / "states" / "conversation-1.state"
    save_chat(_fake_chat(b"old" * 1000), path, {"film": "f"})
    old = path.read_bytes()
    child = _save_on_a_full_disk(path, 'SimpleNamespace(export_cache=lambda s: b"n" * (12 << 20))')
    assert child.returncode == 3, child.stdout + child.stderr  # the write failed half way, with an OSError
    assert path.read_bytes() == old  # the old state, whole
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no partial temporary file left to fill the disk


def test_a_mapped_state_write_on_a_full_disk_fails_cleanly_and_keeps_the_old_state(tmp_path):
    """llama.cpp's cache is written into a mapping of the file; on a full disk a write into a mapping
    kills the process (SIGBUS), so the room is reserved before anything is written into it and a full
    disk is an ordinary OSError."""
    path = tmp_path / "states" / "conversation-1.state"
    save_chat(_fake_chat(b"old" * 1000), path, {"film": "f"})
    old = path.read_bytes()
    child = _save_on_a_full_disk(path, "SimpleNamespace(cache_size=lambda s: 12 << 20, export_cache_into=fill)")
    assert child.returncode == 3, child.stdout + child.stderr  # an OSError, not a signal
    assert path.read_bytes() == old
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_a_json_write_that_fails_half_way_leaves_the_old_file_and_no_temporary_file(tmp_path):
    path = tmp_path / "settings.json"
    write_json_atomic(path, {"model": "old"})
    child = _full_disk_child(f"""
        from pathlib import Path
        from llamavid.storage import write_json_atomic
        try:
            write_json_atomic(Path({str(path)!r}), {{"model": "new", "filler": "x" * 200000}})
        except OSError:
            sys.exit(3)
        sys.exit(0)
    """, limit=64 << 10)
    assert child.returncode == 3, child.stdout + child.stderr
    assert json.loads(path.read_text()) == {"model": "old"}
    assert [p.name for p in tmp_path.iterdir()] == ["settings.json"]


def test_a_write_interrupted_by_any_error_removes_its_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "conversation-2.state"
    save_chat(_fake_chat(b"old"), path, {"film": "f"})
    old = path.read_bytes()

    def no_memory(state):
        raise MemoryError

    chat = _fake_chat(b"")
    chat.backend.export_cache = no_memory
    with pytest.raises(MemoryError):
        save_chat(chat, path, {"film": "f"})
    chat = _fake_chat(b"x" * (9 << 20))  # more than one chunk: the second write is interrupted
    real_open = open
    writes = []

    class Interrupting:
        def __init__(self, fh):
            self.fh = fh

        def __getattr__(self, name):
            return getattr(self.fh, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return self.fh.__exit__(*exc)

        def write(self, data):
            writes.append(len(data))
            if len(writes) == 3:
                raise KeyboardInterrupt
            return self.fh.write(data)

    monkeypatch.setattr("os.fdopen", lambda *a, **k: Interrupting(real_open(*a, **k)))
    with pytest.raises(KeyboardInterrupt):
        save_chat(chat, path, {"film": "f"})
    monkeypatch.undo()
    assert len(writes) == 3 and path.read_bytes() == old
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


@pytest.mark.parametrize("kind", ["state", "json"])
def test_two_writers_of_one_file_never_leave_a_mixed_file(tmp_path, kind):
    path = tmp_path / ("conv.state" if kind == "state" else "registry.json")
    payloads = {name: bytes([ord(name)]) * (3 << 20) for name in "ab"}
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def writer(name: str) -> None:
        try:
            start.wait()
            for _ in range(6):
                if kind == "state":
                    save_chat(_fake_chat(payloads[name]), path, {"writer": name})
                else:
                    write_json_atomic(path, {"writer": name, "filler": name * (2 << 20)})
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    if kind == "state":
        name = read_header(path)["key"]["writer"]
        assert path.read_bytes().endswith(payloads[name]) and read_header(path)["payload_bytes"] == len(payloads[name])
    else:
        data = json.loads(path.read_text())
        assert data["filler"] == data["writer"] * (2 << 20)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_the_conversations_store_serves_eight_threads_at_once(tmp_path):
    store = ConversationStore(tmp_path / "conversations.db")
    errors: list[BaseException] = []
    start = threading.Barrier(8)
    made: dict[int, list[int]] = {}

    def client(n: int) -> None:
        try:
            start.wait()
            mine = []
            for i in range(12):
                conv = store.create("tiny", title=f"{n}-{i}")
                for k in range(3):
                    store.add_turn(conv.id, f"q{k}", f"a{k}", [k, k + 1], False, [{"start": 1.0, "end": 2.0}])
                store.rename(conv.id, f"renamed {n}-{i}")
                got = store.get(conv.id)
                assert [t.question for t in got.turns] == ["q0", "q1", "q2"] and got.title == f"renamed {n}-{i}"
                store.recent()
                store.markdown(conv.id)
                mine.append(conv.id)
            store.delete(mine.pop(0))
            made[n] = mine
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == [], errors[:3]
        kept = sorted(i for ids in made.values() for i in ids)
        assert sorted(c.id for c in store.recent()) == kept and len(kept) == 8 * 11
        assert all(len(store.get(i).turns) == 3 for i in kept)
    finally:
        store.close()
    with pytest.raises(Exception, match="closed"):
        store.get(kept[0])


# -- the chat service, with a tiny model ---------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "llama-vid-tiny-224-long-video")


@pytest.fixture(scope="module")
def lv(checkpoint: Path) -> LlamaVid:
    return LlamaVid.load(checkpoint, device="cpu", dtype="fp32", load_vision=False)


def _events(stream) -> list:
    return list(stream)


def test_an_answer_kept_survives_a_state_that_could_not_be_saved(tmp_path, checkpoint, lv, monkeypatch):
    questions = ("What is a harbour?", "And a lighthouse?", "Why at night?")
    reference = Chat(lv, Visual("none"))
    expected = ["".join(reference.ask(q, GREEDY)) for q in questions]
    service = ChatService(tmp_path, model=str(checkpoint), language="en", lv=lv)
    conv = service.new_conversation()
    try:
        assert "".join(e.text for e in _events(service.ask(conv.id, questions[0], GREEDY)) if e.type == "text") \
            == expected[0]
        service._chats.release()  # a good state of the first turn is on disk
        state = tmp_path / "states" / f"conversation-{conv.id}.state"
        assert state.is_file()

        def no_memory(*args, **kwargs):
            raise MemoryError("no memory left for the state")

        monkeypatch.setattr(app.live_chat, "save_chat", no_memory)
        monkeypatch.setattr(app.live_chat, "SAVE_AFTER_TOKENS", 1)  # saved right after the turn is kept
        events = _events(service.ask(conv.id, questions[1], GREEDY))
        assert events[-1].type == "done", events[-1]  # kept, and said so: not a failure
        assert "".join(e.text for e in events if e.type == "text") == expected[1]
        assert [t.answer for t in service.conversation(conv.id).turns] == expected[:2]
    finally:
        service.close()  # saving fails again here: no error either
    monkeypatch.undo()
    assert not state.exists()  # the older state (one turn) is gone: nothing stale is read back
    service = ChatService(tmp_path, model=str(checkpoint), language="en", lv=lv)
    try:
        events = _events(service.ask(conv.id, questions[2], GREEDY))
        assert events[-1].type == "done", events[-1]
        assert "".join(e.text for e in events if e.type == "text") == expected[2]  # rebuilt from the kept turns
    finally:
        service.close()


def test_a_conversation_whose_film_left_the_library_is_detached_and_says_so(tmp_path, checkpoint, lv):
    data = DataDir(tmp_path).create()
    prepared = data.cache / "prepared" / "movie-1.state"
    prepared.parent.mkdir(parents=True)
    prepared.write_bytes(b"state")
    with LibraryStore.open(data.database) as library:
        folder = library.add_library("/films")
        movie_id = library.add_movie({"library_id": folder["id"], "path": "/films/Gone.mkv", "rel_path": "Gone.mkv",
                                      "size": 1, "mtime": 0.0, "fingerprint": "f"}, "new")
        library.record_prepared(movie_id, "{}", str(prepared), 5)
    service = ChatService(tmp_path, model=str(checkpoint), language="en", lv=lv)
    try:
        conv = service.store.create(str(checkpoint), movie_id, "/films/Gone.mkv", "About the film")
        service.store.add_turn(conv.id, "Who is he?", "The captain.", [1, 2], False, [])
        with LibraryStore.open(data.database) as library:
            movies.delete(library, movie_id)  # `llamavid index rm`, in another process
            again = library.add_movie({"library_id": folder["id"], "path": "/films/New.mkv", "rel_path": "New.mkv",
                                       "size": 1, "mtime": 0.0, "fingerprint": "g"}, "new")
        assert again != movie_id and not prepared.exists()
        events = _events(service.ask(conv.id, "And then?", GREEDY))
        assert events[-1].type == "error" and events[-1].kind == "not_found", events[-1]
        assert "Gone.mkv is no longer in the library" in events[-1].text
        kept = service.conversation(conv.id)
        assert kept.movie_id is None and kept.movie_path == "/films/Gone.mkv" and kept.film_gone
        assert [(t.question, t.answer) for t in kept.turns] == [("Who is he?", "The captain.")]
        assert "The captain." in service.export_markdown(conv.id)
        assert service.conversations(again) == []  # never attached to the film that came next
    finally:
        service.close()


def test_a_service_started_after_a_film_was_removed_detaches_its_conversations(tmp_path):
    data = DataDir(tmp_path).create()
    with LibraryStore.open(data.database) as library:
        folder = library.add_library("/films")
        ids = [library.add_movie({"library_id": folder["id"], "path": f"/films/{n}.mkv", "rel_path": f"{n}.mkv",
                                  "size": 1, "mtime": 0.0, "fingerprint": n}, "new") for n in "ab"]
    store = ConversationStore(tmp_path / "conversations.db")
    convs = [store.create("m", i, f"/films/{n}.mkv") for i, n in zip(ids, "ab", strict=True)]
    store.close()
    with LibraryStore.open(data.database) as library:
        movies.delete(library, ids[1])
    service = ChatService(tmp_path)
    try:
        assert service.conversation(convs[0].id).movie_id == ids[0]
        gone = service.conversation(convs[1].id)
        assert gone.movie_id is None and gone.film_gone
    finally:
        service.close()
