"""Saved conversation state: a restored chat continues exactly, in both backends; a state made for
another model, film or stride is refused; a truncated or damaged file is detected."""
from __future__ import annotations

import mmap

import pytest
import torch

from llamavid.runtime.api import LlamaVid
from llamavid.runtime.chat import Chat
from llamavid.runtime.generate import SamplingOptions
from llamavid.runtime.inputs import Visual
from llamavid.runtime.state import StateCorrupt, StateMismatch, load_chat, read_header, save_chat, state_key

GREEDY = SamplingOptions(max_new_tokens=6, temperature=0, stop_ids=())
QUESTIONS = ("What happens in the film?", "And then?", "Why?")


@pytest.fixture(scope="module")
def engines(tiny_checkpoint_2heads, tiny_gguf_2heads) -> dict[str, LlamaVid]:
    return {"transformers": LlamaVid.load(tiny_checkpoint_2heads, device="cpu", dtype="fp32", load_vision=False),
            "llama.cpp": LlamaVid.load(tiny_gguf_2heads, device="cpu", backend="llama.cpp", gguf_type="f32",
                                       kv_type="f32", load_vision=False)}


@pytest.fixture(scope="module")
def film() -> Visual:
    feats = torch.randn(50, 256, 176, generator=torch.Generator().manual_seed(5))
    return Visual("film", feats, [float(t) for t in range(50)], [])


@pytest.mark.parametrize("backend", ["transformers", "llama.cpp"])
def test_a_restored_chat_gives_the_next_answer_an_uninterrupted_one_gives(engines, film, backend, tmp_path):
    lv = engines[backend]
    uninterrupted = Chat(lv, film)
    answers = ["".join(uninterrupted.ask(q, GREEDY)) for q in QUESTIONS]
    first = Chat(lv, film)
    for q in QUESTIONS[:2]:
        "".join(first.ask(q, GREEDY))
    key = state_key(first, film="f1")
    size = save_chat(first, tmp_path / "conv.state", key)
    assert size > 1000 and read_header(tmp_path / "conv.state")["key"] == key
    restored = Chat(lv, film)
    load_chat(restored, tmp_path / "conv.state", state_key(restored, film="f1"))
    assert [t.answer for t in restored.turns] == answers[:2] and restored.state.length == first.state.length
    assert restored.relevance is not None and torch.allclose(restored.relevance, first.relevance)
    assert "".join(restored.ask(QUESTIONS[2], GREEDY)) == answers[2]


def test_llama_cpp_writes_and_reads_its_cache_through_the_file_mapping_never_a_copy(engines, film, tmp_path,
                                                                                   monkeypatch):
    """An hour's cache is about 2 GB: copied into bytes beside the one llama.cpp holds, a state was held
    twice while it was saved or read (the 7B rehearsal's 11 GB). llama.cpp now writes it into a mapping
    of the file and reads it from a private mapping in place, and the chat continues exactly."""
    lv = engines["llama.cpp"]
    backend = type(lv.backend)
    uninterrupted = Chat(lv, film)
    answers = ["".join(uninterrupted.ask(q, GREEDY)) for q in QUESTIONS[:2]]
    seen: list[tuple[str, type, bool]] = []
    write_into, read_from = backend.export_cache_into, backend.import_cache

    def spy_write(self, state, dst):
        seen.append(("write", type(dst.obj), dst.readonly))
        return write_into(self, state, dst)

    def spy_read(self, state, data, length):
        view = memoryview(data)
        seen.append(("read", type(view.obj), view.readonly))
        return read_from(self, state, data, length)

    def no_copy(self, state):
        raise AssertionError("the cache was copied into bytes")

    monkeypatch.setattr(backend, "export_cache_into", spy_write)
    monkeypatch.setattr(backend, "import_cache", spy_read)
    monkeypatch.setattr(backend, "export_cache", no_copy)
    first = Chat(lv, film)
    "".join(first.ask(QUESTIONS[0], GREEDY))
    size = save_chat(first, tmp_path / "conv.state", state_key(first, film="f1"))
    header = read_header(tmp_path / "conv.state")
    assert size == (tmp_path / "conv.state").stat().st_size and header["payload_bytes"] > 1000
    assert header["payload_bytes"] == lv.backend.cache_size(first.state)  # the room made was the room used
    restored = Chat(lv, film)
    load_chat(restored, tmp_path / "conv.state", state_key(restored, film="f1"))
    assert seen == [("write", mmap.mmap, False), ("read", mmap.mmap, False)]  # in place: writable, not copied
    assert "".join(restored.ask(QUESTIONS[1], GREEDY)) == answers[1]


def test_a_state_for_another_film_stride_or_model_is_refused(engines, film, tmp_path):
    lv = engines["transformers"]
    chat = Chat(lv, film)
    "".join(chat.ask(QUESTIONS[0], GREEDY))
    save_chat(chat, tmp_path / "s.state", state_key(chat, film="f1", track=3))
    for other in ({"film": "f2", "track": 3}, {"film": "f1", "track": 4}):
        with pytest.raises(StateMismatch, match="made with another (film|track)"):
            load_chat(Chat(lv, film), tmp_path / "s.state", state_key(Chat(lv, film), **other))
    strided = Chat(lv, film, stride=2)
    with pytest.raises(StateMismatch, match="stride"):
        load_chat(strided, tmp_path / "s.state", state_key(strided, film="f1", track=3))
    with pytest.raises(StateMismatch, match="backend"):  # the same film, the llama.cpp engine
        load_chat(Chat(engines["llama.cpp"], film), tmp_path / "s.state",
                  state_key(Chat(engines["llama.cpp"], film), film="f1", track=3))
    fresh = Chat(lv, film)
    key = state_key(fresh, film="f1", track=3)
    key["version"] = "0.0.1"
    with pytest.raises(StateMismatch, match="version"):
        load_chat(fresh, tmp_path / "s.state", key)
    assert fresh.turns == [] and fresh.state.length == 0  # nothing was half-loaded


def test_a_truncated_or_damaged_state_is_detected(engines, film, tmp_path):
    lv = engines["transformers"]
    chat = Chat(lv, film)
    "".join(chat.ask(QUESTIONS[0], GREEDY))
    path = tmp_path / "s.state"
    save_chat(chat, path, state_key(chat, film="f1"))
    data = path.read_bytes()
    path.write_bytes(data[:-100])
    with pytest.raises(StateCorrupt, match="truncated"):
        load_chat(Chat(lv, film), path, state_key(chat, film="f1"))
    damaged = bytearray(data)
    damaged[-50] ^= 0xFF
    path.write_bytes(bytes(damaged))
    with pytest.raises(StateCorrupt, match="digest"):
        load_chat(Chat(lv, film), path, state_key(chat, film="f1"))
    path.write_bytes(b"not a state")
    with pytest.raises(StateCorrupt, match="not a llamavid state file"):
        load_chat(Chat(lv, film), path, state_key(chat, film="f1"))
