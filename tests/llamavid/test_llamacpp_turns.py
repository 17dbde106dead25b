"""Transactional turns on the llama.cpp backend: a cancelled prefill or answer is removed from the
KV cache (``llama_memory_seq_rm``), a kept conversation is rebuilt exactly, and the context is sized
to what fits in memory when none is asked for."""
from __future__ import annotations

import pytest
import torch

from llamavid.errors import Cancelled
from llamavid.runtime.api import LlamaVid
from llamavid.runtime.chat import Chat
from llamavid.runtime.control import Control
from llamavid.runtime.generate import SamplingOptions
from llamavid.runtime.inputs import Visual

GREEDY = SamplingOptions(max_new_tokens=6, temperature=0, stop_ids=())


@pytest.fixture(scope="module")
def cpp(tiny_gguf_2heads) -> LlamaVid:
    return LlamaVid.load(tiny_gguf_2heads, device="cpu", backend="llama.cpp", gguf_type="f32", kv_type="f32")


@pytest.fixture(scope="module")
def film() -> Visual:
    feats = torch.randn(40, 256, 176, generator=torch.Generator().manual_seed(3))
    return Visual("film", feats, [float(t) for t in range(40)], [])


def answers(lv: LlamaVid, visual: Visual, questions: list[str]) -> list[str]:
    chat = Chat(lv, visual)
    return ["".join(chat.ask(q, GREEDY)) for q in questions]


@pytest.mark.parametrize("phase", ["prefill", "answer"])
def test_a_cancelled_turn_is_cut_out_of_the_llama_cpp_cache(cpp, film, phase):
    expected = answers(cpp, film, ["What happens?", "And then?"])
    chat = Chat(cpp, film)
    assert "".join(chat.ask("What happens?", GREEDY)) == expected[0]
    length = chat.state.length
    control = Control()
    control.on_progress = lambda p: control.cancel() if p.phase == phase and p.done > 0 else None
    with pytest.raises(Cancelled):
        "".join(chat.ask("Something else entirely?", GREEDY, control=control))
    assert chat.state.length == length and len(chat.turns) == 1
    assert "".join(chat.ask("And then?", GREEDY)) == expected[1]


def test_a_kept_conversation_is_rebuilt_exactly(cpp, film):
    expected = answers(cpp, film, ["What happens?", "And then?", "Why?"])
    first = Chat(cpp, film)
    for question in ("What happens?", "And then?"):
        "".join(first.ask(question, GREEDY))
    rebuilt = Chat(cpp, film)
    rebuilt.restore(first.turns)
    assert rebuilt.state.length == first.state.length and rebuilt.state.pending == first.state.pending
    assert "".join(rebuilt.ask("Why?", GREEDY)) == expected[2]


def test_the_default_context_is_the_trained_one_when_it_fits(cpp, monkeypatch):
    backend = cpp.backend
    trained = 4096  # the tiny checkpoint's max_position_embeddings
    assert backend.fitting_context() == trained and backend.context_length() == trained
    per_token = backend.kv_bytes_per_token()
    weights = backend.path.stat().st_size
    monkeypatch.setattr("llamavid.runtime.llamacpp.available_memory",
                        lambda device: weights + int(2 * 2600 * per_token))  # half of that: 2600 tokens
    assert backend.fitting_context() == 2560  # in steps of 256
    monkeypatch.setattr("llamavid.runtime.llamacpp.available_memory", lambda device: 0)
    assert backend.fitting_context() == 2048  # never under the floor
