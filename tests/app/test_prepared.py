"""Prepared films ("fast answers") and saved conversation states in the service and the indexer: a
prepared film answers a new question with the tokens of a chat whose first question was the
neutral one; the indexer prepares marked films with the chosen model; a damaged or outdated state
is rebuilt; the prepared cache stays under its cap; the size shown before preparing is the KV
cache a prepared film holds (transformers and llama.cpp, config.json or a GGUF header)."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from unittest.mock import ANY

import pytest
from safetensors.torch import load as load_tensors

import cli
from app.chat_service import ChatService
from app.server import views
from app.server.errors import from_kind
from indexer import library
from indexer.prepare import engine_id, film_chat, film_identity, prepared_key, prepared_size_estimate
from indexer.prepared_size import estimate_prepared_bytes, film_tokens, llm_shape
from indexer.store import LibraryStore
from llamavid.media.synthetic import clock, write_video
from llamavid.model.eva import EvaVisionTower
from llamavid.model.tiny import write_tiny_checkpoint
from llamavid.runtime.api import LlamaVid
from llamavid.runtime.chat import Chat
from llamavid.runtime.control import rough_duration
from llamavid.runtime.generate import SamplingOptions
from llamavid.runtime.gguf_export import convert
from llamavid.runtime.inputs import Visual
from llamavid.runtime.options import LoadOptions
from llamavid.runtime.prepared import PREPARED_QUESTION, neutral_turn, prepare
from llamavid.runtime.state import read_header
from llamavid.storage import human_size

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


def test_the_indexer_prepares_marked_films_with_the_chosen_model(data_dir, checkpoint, lv, capsys, monkeypatch):
    data = str(data_dir)
    capsys.readouterr()
    assert cli.main(["--data-dir", data, "index", "prepare", "Boat.mkv", "--model", str(checkpoint),
                     "--language", "en"]) == 0
    db = library.open_library(data_dir)
    size = estimate_prepared_bytes(checkpoint, *film_tokens(db, library.find_movie(db, "Boat.mkv"), "en"))
    assert f"1 film: about {human_size(size)} on disk when prepared with {checkpoint}" in capsys.readouterr().out

    def no_eva(*args, **kwargs):
        raise AssertionError("EVA loaded for a film whose features are complete")

    monkeypatch.setattr(EvaVisionTower, "from_file", no_eva)  # preparing needs the LLM, not EVA
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


def _prepared_chat(lv: LlamaVid, data_dir: Path, name: str) -> Chat:
    db = library.open_library(data_dir)
    chat = Chat(lv, library.film_visual(db, library.find_movie(db, name), language="en"))
    prepare(chat)
    return chat


def test_the_size_shown_before_preparing_is_the_kv_cache_a_prepared_film_holds(data_dir, checkpoint, lv):
    chat = _prepared_chat(lv, data_dir, "Boat.mkv")
    kv = sum(t.numel() * t.element_size() for t in load_tensors(chat.backend.export_cache(chat.state)).values())
    frames = len(chat.visual.features)
    text = chat.state.length - 2 * frames
    assert kv > 0 and frames == 40  # 40 s at the indexer's one frame per second, every frame kept
    assert estimate_prepared_bytes(checkpoint, frames, text) == kv  # a transformers folder: fp32 on a CPU
    assert prepared_size_estimate(lv, frames, text) == kv
    db = library.open_library(data_dir)
    assert film_tokens(db, library.find_movie(db, "Boat.mkv"), "en")[0] == frames
    # the service says the same before its model is loaded as once it is (one rule)
    unloaded = ChatService(data_dir, model=str(checkpoint), language="en", load=LoadOptions(device="cpu", dtype="fp32"))
    loaded = ChatService(data_dir, model=str(checkpoint), language="en", lv=lv)
    try:
        movie = loaded.movie("Boat.mkv")
        before = unloaded.prepare_estimate(movie)
        assert before == loaded.prepare_estimate(movie) > estimate_prepared_bytes(checkpoint, frames, 0)
        assert unloaded._lv is None, "the estimate loaded no model"
    finally:
        unloaded.close()
        loaded.close()


def test_a_gguf_model_is_sized_from_its_header_and_its_llama_cpp_kv_type(data_dir, checkpoint, tmp_path):
    converted = tmp_path / "tiny-gguf"
    convert(checkpoint, converted, types=("f32",))
    bare = tmp_path / "gguf-only"  # no config.json: the shape comes from the GGUF metadata
    bare.mkdir()
    (bare / "llm-f32.gguf").symlink_to(converted / "llm-f32.gguf")
    assert llm_shape(bare) == llm_shape(checkpoint)
    shape = llm_shape(checkpoint)
    per_token = 2 * shape.num_hidden_layers * shape.num_key_value_heads * shape.head_dim
    assert estimate_prepared_bytes(bare, 10, 100, kv_bytes=34 / 32) == int(per_token * 120 * 34 / 32)  # q8_0
    cpp = LlamaVid.load(converted, backend="llama.cpp", device="cpu", dtype="fp32", load_vision=False, kv_type="f16")
    try:
        chat = _prepared_chat(cpp, data_dir, "Quay.mkv")
        payload = len(chat.backend.export_cache(chat.state))
        frames = len(chat.visual.features)
        estimate = estimate_prepared_bytes(bare, frames, chat.state.length - 2 * frames)  # f16: llama.cpp's default
        assert estimate == prepared_size_estimate(cpp, frames, chat.state.length - 2 * frames)
        assert estimate <= payload <= estimate * 1.05, (estimate, payload)  # llama.cpp adds its cells' positions
    finally:
        cpp.backend.close()


def _status_lines(data_dir: Path, capsys, name: str) -> list[str]:
    """What `llamavid index status` prints under the film's row."""
    capsys.readouterr()
    assert cli.main(["--data-dir", str(data_dir), "index", "status"]) == 0
    lines = capsys.readouterr().out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.endswith(name))
    return [line.strip() for line in lines[start + 1:] if line.startswith("      ")][:3]


def test_the_app_that_holds_the_model_prepares_a_film_itself_and_forgets_it(data_dir, checkpoint, capsys,
                                                                               monkeypatch):
    """Prepare from a front end: the service reads the film ahead in its own queue with the model it holds,
    with progress; the indexer, meanwhile, loads no second copy (it leaves preparing to the holder)."""
    import indexer.pipeline

    loads = []

    def second_copy(name, *args, **kwargs):
        loads.append(name)
        raise MemoryError("a second copy of the chat model does not fit")

    service = ChatService(data_dir, model=str(checkpoint), language="en", load=LoadOptions(device="cpu", dtype="fp32"))
    try:
        boat = service.movie("Boat.mkv")
        assert not boat.prepare_wanted and boat.prepared_bytes == 0
        about = human_size(service.prepare_estimate(boat))
        assert service.set_prepared(boat.id, True) == (f"Boat.mkv is being prepared for fast answers (about {about} "
                                                       "on disk): it takes its turn after the questions waiting")
        stream = service._preparing[boat.id]  # noqa: SLF001 - the queued work, to follow it to its end
        events = list(stream)
        assert events[-1].type == "done" and "Boat.mkv is prepared for fast answers" in events[-1].notes[0]
        assert {e.progress.phase for e in events if e.type == "progress"} >= {"visual", "prefill"}
        assert service.preparing() == {}
        boat = service.movie(boat.id)
        assert boat.prepare_wanted and boat.prepared_bytes > 0

        monkeypatch.setattr(indexer.pipeline, "load_model", second_copy)
        with LibraryStore.open(data_dir / "library.db") as store:
            store.reread_subtitles(boat.id, "a test asks", redo_speech=False)  # its job runs again, to the end
        assert cli.main(["--data-dir", str(data_dir), "index", "run", "--vision", str(checkpoint / "eva_vit_g.pth"),
                         "--speech", "never", "--quiet"]) == 0
        assert loads == []  # the service holds the model: the indexer left preparing to it
        assert f"prepared for fast answers ({human_size(boat.prepared_bytes)})" in \
            _status_lines(data_dir, capsys, "Boat.mkv")
        with LibraryStore.open(data_dir / "library.db") as store:
            assert store.setting("chat_model") == str(checkpoint) and store.setting("language") == "en"
            state = Path(next(r["prepared_path"] for r in store.prepared() if r["id"] == boat.id))
        assert service.set_prepared(boat.id, False).startswith("Boat.mkv is no longer prepared")
        boat = service.movie(boat.id)
        assert boat.prepared_bytes == 0 and not boat.prepare_wanted and not state.exists()
    finally:
        service.close()


def test_a_question_asked_while_a_preparation_waits_goes_before_it(data_dir, checkpoint, lv, monkeypatch):
    """Reading a 7B film ahead takes an hour on a CPU; in a first-come queue every question asked
    meanwhile waited for it. Questions now go before the preparations still waiting."""
    service = ChatService(data_dir, model=str(checkpoint), language="en", lv=lv)
    started: list[str] = []
    run, reached, release = service._run, threading.Event(), threading.Event()  # noqa: SLF001

    def run_in_order(stream):
        started.append(stream.question)
        if stream.question == "First?":  # the model is busy with it while the others are queued
            reached.set()
            assert release.wait(120), "the test never released the model"
        return run(stream)

    monkeypatch.setattr(service, "_run", run_in_order)
    try:
        first = service.ask(service.new_conversation().id, "First?", GREEDY)
        assert reached.wait(120)
        boat, quay = service.movie("Boat.mkv"), service.movie("Quay.mkv")
        preparing = service.prepare_film(boat.id)
        asked = service.ask(service.new_conversation("Quay.mkv").id, "What is here?", GREEDY)
        assert next(iter(preparing)).position == 1 and next(iter(asked)).position == 1  # ahead of the preparation
        release.set()
        for stream in (first, asked, preparing):
            assert list(stream)[-1].type == "done"
        assert started[-3:] == ["First?", "What is here?", "prepare Boat.mkv"]
        assert service.movie(boat.id).prepared_bytes > 0 and quay.id != boat.id
    finally:
        release.set()
        service.close()


def test_the_time_a_preparation_takes_is_this_machines_and_survives_a_restart(data_dir, checkpoint):
    """The time shown before a film is prepared comes from the rates this model ran at here (the
    Q-Former's frames per second, the LLM's prompt tokens per second), kept on disk per model."""
    load = LoadOptions(device="cpu", dtype="fp32")
    service = ChatService(data_dir, model=str(checkpoint), language="en", load=load)
    try:
        boat = service.movie("Boat.mkv")
        assert service.prepare_seconds(boat) is None  # nothing measured yet: no guess shown
        _answer(service.ask(service.new_conversation("Quay.mkv").id, "What is here?", GREEDY))  # the exact way
        rates = dict(service.model().rates.per_second)
        frames, text = film_tokens(service._db, boat, "en")  # noqa: SLF001
        expected = frames / rates["visual"] + (2 * frames + text) / rates["prefill"]
        assert service.prepare_seconds(boat) == pytest.approx(expected)
        line = views.prepare_controls(boat, service.prepare_estimate(boat), service.prepare_seconds(boat))[0]
        assert f"and about {rough_duration(expected)} on this computer" in line
    finally:
        service.close()
    (kept,) = (data_dir / "cache" / "rates").glob("*.json")
    assert json.loads(kept.read_text()) == pytest.approx(rates)
    restarted = ChatService(data_dir, model=str(checkpoint), language="en", load=load)
    try:
        restarted.model()  # loaded again: no question asked in this process yet
        assert restarted.prepare_seconds(restarted.movie("Boat.mkv")) == pytest.approx(expected)
    finally:
        restarted.close()


def test_preparing_can_be_stopped_and_leaves_nothing(data_dir, checkpoint):
    service = ChatService(data_dir, model=str(checkpoint), language="en", load=LoadOptions(device="cpu", dtype="fp32"))
    try:
        quay = service.movie("Quay.mkv")
        stream = service.prepare_film(quay.id)
        stream.control.on_progress = lambda p: service.set_prepared(quay.id, False) if p.done > 0 else None
        events = list(stream)
        assert events[-1].type == "error" and events[-1].kind == "cancelled"
        quay = service.movie(quay.id)
        assert quay.prepared_bytes == 0 and not quay.prepare_wanted
        assert not list((data_dir / "cache" / "prepared").glob("*"))  # no state, no temporary file
    finally:
        service.close()


def test_the_indexer_loads_the_model_as_the_service_does_so_its_state_is_used(data_dir, checkpoint):
    service = ChatService(data_dir, model=str(checkpoint), language="en", load=LoadOptions(device="cpu", dtype="bf16"))
    try:
        boat = service.movie("Boat.mkv")
        service.set_prepared(boat.id, True)
        with LibraryStore.open(data_dir / "library.db") as store:
            assert json.loads(store.setting("chat_load_options")) == {"backend": "auto", "device": "cpu",
                                                                      "dtype": "bf16", "kv_type": "auto"}
        assert cli.main(["--data-dir", str(data_dir), "index", "run", "--vision", str(checkpoint / "eva_vit_g.pth"),
                         "--speech", "never", "--quiet"]) == 0
        made = service.movie(boat.id).prepared_bytes
        assert made > 0
        conv = service.new_conversation("Boat.mkv", fast=True)
        _, phases = _answer(service.ask(conv.id, "Where are the keys?", GREEDY))
        assert "visual" not in phases  # the indexer's bf16 state matched; an fp32 one would be made again
        assert service.movie(boat.id).prepared_bytes == made
    finally:
        service.close()


def test_the_size_estimate_needs_no_torch_and_gives_about_4_gb_an_hour_for_a_7b_model(checkpoint):
    code = ("import sys; from indexer.prepared_size import estimate_prepared_bytes; "
            f"print(estimate_prepared_bytes({str(checkpoint)!r}, 3600)); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == [str(estimate_prepared_bytes(checkpoint, 3600)), "False"]
    llama_7b = {"num_hidden_layers": 32, "num_attention_heads": 32, "hidden_size": 4096}
    hour = estimate_prepared_bytes(llama_7b, 3600, 7000, kv_bytes=34 / 32)  # q8_0; an hour of dialogue
    assert 3.5e9 < hour < 4.5e9 and hour == 2 * 32 * 4096 * (2 * 3600 + 7000) * 34 // 32


# -- plans and memory: a film is read alike by every process; a state that does not fit now is kept --
PLENTY = 10**12  # what a process sees free when memory is no object


def _free_memory(monkeypatch, free: int) -> None:
    """What every backend reads as the memory free now (transformers and llama.cpp)."""
    monkeypatch.setattr("llamavid.runtime.memory.available_memory", lambda device: free)
    monkeypatch.setattr("llamavid.runtime.llamacpp.available_memory", lambda device: free)


def test_the_service_and_the_indexer_make_the_same_key_whatever_memory_each_sees_free(data_dir, checkpoint, lv,
                                                                                     monkeypatch):
    data = str(data_dir)
    assert cli.main(["--data-dir", data, "index", "prepare", "Boat.mkv", "--model", str(checkpoint),
                     "--language", "en"]) == 0
    _free_memory(monkeypatch, 0)  # the indexer runs while the machine is busy: nothing free
    assert cli.main(["--data-dir", data, "index", "run", "--vision", str(checkpoint / "eva_vit_g.pth"),
                     "--speech", "never", "--quiet"]) == 0
    with LibraryStore.open(data_dir / "library.db") as store:
        boat = library.find_movie(store, "Boat.mkv")
        made = json.loads(next(r["prepared_key"] for r in store.prepared() if r["id"] == boat.id))
    assert (made["stride"], made["n_ctx"]) == (1, 4096)  # the model's trained context, every frame
    _free_memory(monkeypatch, PLENTY)  # the server, later, with memory to spare
    with LibraryStore.open(data_dir / "library.db") as store:
        chat, track = film_chat(lv, store, boat, "en")
        assert prepared_key(chat, boat, track) == made
        assert store.film_plan(boat.id, engine_id(lv), track) == {"film": film_identity(boat), "budget": ANY,
                                                                  "stride": 1, "n_ctx": 4096}
    service = ChatService(data_dir, model=str(checkpoint), language="en", lv=lv)
    try:
        conv = service.new_conversation("Boat.mkv", fast=True)
        answer, phases = _answer(service.ask(conv.id, "What is in the boat?", GREEDY))
        assert "visual" not in phases  # the indexer's state was the one the service looked for
        assert service.conversation(conv.id).n_ctx == 4096 and service.conversation(conv.id).stride == 1
        with LibraryStore.open(data_dir / "library.db") as store:  # not made again: the same file, the same key
            assert json.loads(next(r["prepared_key"] for r in store.prepared() if r["id"] == boat.id)) == made
    finally:
        service.close()


def test_a_film_is_planned_from_the_budget_the_user_sets_not_from_the_memory_free(data_dir, checkpoint, lv,
                                                                                   monkeypatch, capsys):
    per_token = lv.backend.kv_bytes_per_token()
    data = str(data_dir)
    capsys.readouterr()
    assert cli.main(["--data-dir", data, "index", "prepare", "Boat.mkv", "--model", str(checkpoint),
                     "--memory-gb", str(3000 * per_token / 1e9)]) == 0
    assert "film memory budget" in capsys.readouterr().out
    with LibraryStore.open(data_dir / "library.db") as store:
        boat = library.find_movie(store, "Boat.mkv")
        plans = set()
        for free in (0, PLENTY):
            _free_memory(monkeypatch, free)
            chat, _ = film_chat(lv, store, boat, "en")
            plans.add(chat.film_plan)
        (plan,) = plans
        assert plan.n_ctx == 2816 and plan.stride == 1  # 3000 tokens' worth, in steps of 256
        assert plan.describe() == f"every frame, a 2816-token context (film memory budget {human_size(plan.budget)})"


def _conversation_with_a_saved_state(service: ChatService, name: str, question: str) -> tuple[int, Path]:
    conv = service.new_conversation(name)
    _answer(service.ask(conv.id, question, GREEDY))
    service.close()  # saves the state
    return conv.id, service.data.root / "states" / f"conversation-{conv.id}.state"


def test_a_state_that_does_not_fit_the_memory_free_now_is_kept_and_the_question_refused_saying_what_to_free(
        data_dir, checkpoint, lv, monkeypatch):
    db = library.open_library(data_dir)
    reference = Chat(lv, library.film_visual(db, library.find_movie(db, "Quay.mkv"), language="en"))
    expected = ["".join(reference.ask(q, GREEDY)) for q in ("What is here?", "And the boat?")]
    conv_id, state = _conversation_with_a_saved_state(
        ChatService(data_dir, model=str(checkpoint), language="en", lv=lv), "Quay.mkv", "What is here?")
    saved = state.read_bytes()
    needed = read_header(state)["payload_bytes"]
    free = needed // 2
    _free_memory(monkeypatch, free)  # after a restart, other programs hold the memory
    service = ChatService(data_dir, model=str(checkpoint), language="en", lv=lv)
    try:
        refused = list(service.ask(conv_id, "And the boat?", GREEDY))[-1]
        assert (refused.type, refused.kind) == ("error", "memory_in_use")
        assert f"needs {human_size(needed)}, {human_size(free)} free: close other programs" in refused.text
        assert from_kind(refused.kind, refused.text).status == 503
        assert state.read_bytes() == saved  # kept as it was, for when memory is free
        assert [t.question for t in service.conversation(conv_id).turns] == ["What is here?"]
        _free_memory(monkeypatch, PLENTY)  # the other programs closed
        answer, phases = _answer(service.ask(conv_id, "And the boat?", GREEDY))
        assert answer == expected[1] and "visual" not in phases  # the kept state was read, not rebuilt
    finally:
        service.close()


def test_a_damaged_state_is_dropped_even_while_memory_is_short(data_dir, checkpoint, lv, monkeypatch):
    db = library.open_library(data_dir)
    reference = Chat(lv, library.film_visual(db, library.find_movie(db, "Quay.mkv"), language="en"))
    expected = ["".join(reference.ask(q, GREEDY)) for q in ("What is here?", "And the boat?")]
    conv_id, state = _conversation_with_a_saved_state(
        ChatService(data_dir, model=str(checkpoint), language="en", lv=lv), "Quay.mkv", "What is here?")
    state.write_bytes(state.read_bytes()[:-64])  # truncated: wrong whatever the memory
    _free_memory(monkeypatch, 0)
    service = ChatService(data_dir, model=str(checkpoint), language="en", lv=lv)
    try:
        refused = list(service.ask(conv_id, "And the boat?", GREEDY))[-1]
        assert (refused.type, refused.kind) == ("error", "memory_in_use")  # this question, not the state
        assert "this question needs" in refused.text and "close other programs" in refused.text
        assert not state.exists()
        _free_memory(monkeypatch, PLENTY)
        answer, _ = _answer(service.ask(conv_id, "And the boat?", GREEDY))
        assert answer == expected[1]  # rebuilt from the kept turns
    finally:
        service.close()


def test_a_kept_llama_cpp_conversation_reopens_in_its_own_context_after_a_restart_with_less_memory(
        data_dir, tiny_gguf_2heads, monkeypatch):
    """Before plans, the context was sized from the memory free at each load: after a restart with less
    free memory the kept state no longer fit the smaller context and was deleted as damaged."""
    question = " ".join(f"word{i} and the boat number {i}" for i in range(85)) + "?"  # about 2,500 tokens

    def load() -> LlamaVid:
        return LlamaVid.load(tiny_gguf_2heads, device="cpu", backend="llama.cpp", gguf_type="f32", kv_type="f32",
                             load_vision=False)

    _free_memory(monkeypatch, PLENTY)
    first = load()
    reference = Chat(first, Visual("none"))
    expected = ["".join(reference.ask(q, GREEDY)) for q in (question, "And then?")]
    assert reference.state.length > 2048
    service = ChatService(data_dir, model=str(tiny_gguf_2heads), language="en", lv=first)
    conv = service.new_conversation()
    assert _answer(service.ask(conv.id, question, GREEDY))[0] == expected[0]
    assert service.conversation(conv.id).n_ctx == 4096  # kept with it
    service.close()
    first.backend.close()
    state = data_dir / "states" / f"conversation-{conv.id}.state"
    assert state.is_file()
    _free_memory(monkeypatch, 0)  # the restart: little free, so a context sized from it is the 2048 floor
    second = load()
    assert second.backend.context_length() == 2048
    service = ChatService(data_dir, model=str(tiny_gguf_2heads), language="en", lv=second)
    try:
        refused = list(service.ask(conv.id, "And then?", GREEDY))[-1]
        assert (refused.type, refused.kind) == ("error", "memory_in_use")
        assert "4096-token context needs" in refused.text and "close other programs" in refused.text
        assert state.is_file() and second.backend.context_length() == 2048  # kept; the old context serves on
        _free_memory(monkeypatch, PLENTY)
        answer, phases = _answer(service.ask(conv.id, "And then?", GREEDY))
        assert answer == expected[1] and "prefill" in phases
        assert second.backend.context_length() == 4096
    finally:
        service.close()
        second.backend.close()
