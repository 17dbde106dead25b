"""Prepared films ("fast answers") and saved conversation states in the service and the indexer: a
prepared film answers a new question with the tokens of a chat whose first question was the
neutral one; the indexer prepares marked films with the chosen model; a damaged or outdated state
is rebuilt; the prepared cache stays under its cap."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.chat_service import ChatService
from indexer import library
from indexer.store import LibraryStore
from llamavid import cli
from llamavid.media.synthetic import clock, write_video
from llamavid.model.tiny import write_tiny_checkpoint
from llamavid.runtime.api import LlamaVid
from llamavid.runtime.chat import Chat
from llamavid.runtime.generate import SamplingOptions
from llamavid.runtime.prepared import PREPARED_QUESTION, neutral_turn

pytestmark = pytest.mark.slow

GREEDY = SamplingOptions(temperature=0, max_new_tokens=6)
CUES = "1\n00:00:05,000 --> 00:00:08,000\nThe keys are in the boat.\n\n"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "llama-vid-tiny-224-long-video")


@pytest.fixture()
def data_dir(tmp_path: Path, checkpoint: Path) -> Path:
    """A fresh library with two indexed films (each test prepares and evicts on its own)."""
    films, data = tmp_path / "films", tmp_path / "data"
    for name, seconds in (("Boat.mkv", 40), ("Quay.mkv", 30)):
        write_video(films / name, clock(64, 48, 5), fps=5, seconds=seconds)
        (films / name).with_suffix(".en.srt").write_text(CUES)
    assert cli.main(["--data-dir", str(data), "index", "add", str(films)]) == 0
    assert cli.main(["--data-dir", str(data), "index", "run", "--vision", str(checkpoint / "eva_vit_g.pth"),
                     "--speech", "never", "--quiet"]) == 0
    return data


@pytest.fixture(scope="module")
def lv(checkpoint: Path) -> LlamaVid:
    return LlamaVid.load(checkpoint, device="cpu", dtype="fp32", load_vision=False)


def _answer(stream) -> tuple[str, set[str]]:
    events = list(stream)
    assert events[-1].type == "done", events[-1]
    return "".join(e.text for e in events if e.type == "text"), {e.progress.phase for e in events if e.progress}


def _neutral_first(lv: LlamaVid, data_dir: Path, name: str, question: str) -> str:
    db = library.open_library(data_dir)
    chat = Chat(lv, library.film_visual(db, library.find_movie(db, name), language="en"))
    chat.restore([neutral_turn(chat)])
    return "".join(chat.ask(question, GREEDY))


def test_a_fast_conversation_answers_as_a_chat_begun_with_the_neutral_question(data_dir, checkpoint, lv):
    expected = _neutral_first(lv, data_dir, "Boat.mkv", "Where are the keys?")
    service = ChatService(data_dir, model=str(checkpoint), language="en", lv=lv)
    try:
        first = service.new_conversation("Boat.mkv", fast=True)
        answer, phases = _answer(service.ask(first.id, "Where are the keys?", GREEDY))
        assert answer == expected and "visual" in phases  # no prepared state yet: prepared now
        kept = service.conversation(first.id)
        assert [t.question for t in kept.turns] == [PREPARED_QUESTION, "Where are the keys?"]
        assert [t.question for t in kept.shown_turns] == ["Where are the keys?"]
        assert "Watch this movie" not in service.export_markdown(first.id)
        movie = service.movie("Boat.mkv")
        assert movie.prepared_bytes > 0
        second = service.new_conversation("Boat.mkv", fast=True)
        answer, phases = _answer(service.ask(second.id, "Where are the keys?", GREEDY))
        assert answer == expected and "visual" not in phases and "prefill" in phases  # only the question is read
    finally:
        service.close()


def test_the_indexer_prepares_marked_films_with_the_chosen_model(data_dir, checkpoint, lv, capsys):
    data = str(data_dir)
    assert cli.main(["--data-dir", data, "index", "prepare", "Boat.mkv", "--model", str(checkpoint),
                     "--language", "en"]) == 0
    assert cli.main(["--data-dir", data, "index", "run", "--vision", str(checkpoint / "eva_vit_g.pth"),
                     "--speech", "never", "--quiet"]) == 0
    capsys.readouterr()
    assert cli.main(["--data-dir", data, "index", "status", "--json"]) == 0
    status = {row["path"]: row for row in map(json.loads, capsys.readouterr().out.splitlines())}
    assert status["Boat.mkv"]["prepared_bytes"] > 0 and status["Quay.mkv"]["prepared_bytes"] == 0
    expected = _neutral_first(lv, data_dir, "Boat.mkv", "What is in the boat?")
    service = ChatService(data_dir, model=str(checkpoint), language="en", lv=lv)
    try:
        conv = service.new_conversation("Boat.mkv", fast=True)
        answer, phases = _answer(service.ask(conv.id, "What is in the boat?", GREEDY))
        assert answer == expected and "visual" not in phases  # the indexer's state was used
    finally:
        service.close()
    with LibraryStore.open(data_dir / "library.db") as store:
        boat = library.find_movie(store, "Boat.mkv")
        state = Path(next(r["prepared_path"] for r in store.prepared() if r["id"] == boat.id))
        assert state.is_file()
        assert cli.main(["--data-dir", data, "index", "prepare", "--off", str(boat.id)]) == 0
        assert library.get_movie(store, boat.id).prepared_bytes == 0 and not state.exists()
        assert not store.prepare_wanted(boat.id)


def test_a_damaged_conversation_state_is_rebuilt_and_continues_exactly(data_dir, checkpoint, lv):
    db = library.open_library(data_dir)
    reference = Chat(lv, library.film_visual(db, library.find_movie(db, "Quay.mkv"), language="en"))
    expected = ["".join(reference.ask(q, GREEDY)) for q in ("What is here?", "And the boat?")]
    service = ChatService(data_dir, model=str(checkpoint), language="en", lv=lv)
    conv = service.new_conversation("Quay.mkv")
    assert _answer(service.ask(conv.id, "What is here?", GREEDY))[0] == expected[0]
    service.close()  # saves the state
    state = data_dir / "states" / f"conversation-{conv.id}.state"
    state.write_bytes(state.read_bytes()[:-64])  # truncated
    service = ChatService(data_dir, model=str(checkpoint), language="en", lv=lv)
    try:
        answer, phases = _answer(service.ask(conv.id, "And the boat?", GREEDY))
        assert answer == expected[1] and "visual" in phases  # rebuilt from the kept turns
    finally:
        service.close()


def test_the_prepared_cache_keeps_under_its_cap_dropping_the_least_recently_used(data_dir, checkpoint, lv):
    data = str(data_dir)
    assert cli.main(["--data-dir", data, "index", "prepare", "--all", "--model", str(checkpoint)]) == 0
    assert cli.main(["--data-dir", data, "index", "run", "--vision", str(checkpoint / "eva_vit_g.pth"),
                     "--speech", "never", "--quiet"]) == 0
    with LibraryStore.open(data_dir / "library.db") as store:
        sizes = {r["rel_path"]: r["prepared_bytes"] for r in store.prepared()}
        assert set(sizes) == {"Boat.mkv", "Quay.mkv"}
        store.touch_prepared(library.find_movie(store, "Boat.mkv").id)  # Boat used last
        cap = max(sizes.values()) + 1  # room for one of them
    assert cli.main(["--data-dir", data, "index", "prepare", "--cap-gb", str(cap / 1e9), "--all"]) == 0
    from indexer.prepare import evict

    with LibraryStore.open(data_dir / "library.db") as store:
        assert evict(store) == ["Quay.mkv"]
        assert [r["rel_path"] for r in store.prepared()] == ["Boat.mkv"]
