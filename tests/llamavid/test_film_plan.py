"""A film's plan (frame stride and context) comes from the model's trained context and a memory
budget, never from the memory free at the moment; a chat with a plan runs in the plan's context
(llama.cpp makes one of that size) and, when the memory free now cannot hold it, is refused with
MemoryInUse saying what to free, the current context left as it was."""
from __future__ import annotations

import pytest
import torch

from llamavid.errors import MemoryInUse, NotEnoughMemory, error_kind
from llamavid.runtime.api import LlamaVid
from llamavid.runtime.chat import Chat, plan_film
from llamavid.runtime.generate import SamplingOptions
from llamavid.runtime.inputs import Visual
from llamavid.runtime.memory import FilmPlan, default_budget, plan_context, require_free
from llamavid.storage import human_size

GREEDY = SamplingOptions(max_new_tokens=6, temperature=0, stop_ids=())


@pytest.fixture(scope="module")
def cpp(tiny_gguf_2heads) -> LlamaVid:
    lv = LlamaVid.load(tiny_gguf_2heads, device="cpu", backend="llama.cpp", gguf_type="f32", kv_type="f32",
                       load_vision=False)
    yield lv
    lv.backend.close()


def _free(monkeypatch, free: int) -> None:
    monkeypatch.setattr("llamavid.runtime.memory.available_memory", lambda device: free)
    monkeypatch.setattr("llamavid.runtime.llamacpp.available_memory", lambda device: free)


def test_the_planned_context_is_the_trained_one_within_the_budget_in_steps_never_under_the_floor() -> None:
    assert plan_context(65536, 1000.0, 10**12) == 65536  # the budget holds it all: the trained context
    assert plan_context(65536, 1000.0, 10_000_000) == 9984  # 10,000 tokens' worth, in steps of 256
    assert plan_context(65536, 1000.0, 0) == 2048  # never under the floor
    assert plan_context(1024, 1000.0, 0) == 1024  # nor over the trained context
    assert default_budget(32 * 10**9, 4 * 10**9) == 14 * 10**9  # half of the memory beside the weights
    assert FilmPlan(3, 16384, 8 * 10**9).describe() == "every 3rd frame, a 16384-token context (film memory " \
                                                       "budget 8.0 GB)"


def test_a_film_is_planned_alike_whatever_memory_is_free(cpp, monkeypatch) -> None:
    frames = 3000  # 6,000 rows: more than the 4096-token trained context holds
    film = Visual("film", torch.zeros(frames, 1, 1), [float(t) for t in range(frames)], [])
    plans = set()
    for free in (0, 10**12):
        _free(monkeypatch, free)
        plans.add(plan_film(cpp, film, budget=10**12))
    assert plans == {FilmPlan(2, 4096, 10**12)}
    small = plan_film(cpp, film, budget=int(2600 * cpp.backend.kv_bytes_per_token()))
    assert (small.n_ctx, small.stride) == (2560, 3)  # a smaller budget: a smaller context, fewer frames


def test_a_chat_runs_in_its_plan_s_context_and_is_refused_when_it_does_not_fit_now(cpp, monkeypatch) -> None:
    film = Visual("film", torch.randn(20, 256, 176, generator=torch.Generator().manual_seed(2)),
                  [float(t) for t in range(20)], [])
    _free(monkeypatch, 10**12)
    chat = Chat(cpp, film, plan=FilmPlan(1, 3072, None))
    assert cpp.backend.context_length() == chat.context_length() == 3072
    answer = "".join(chat.ask("What happens?", GREEDY))
    per_token = cpp.backend.kv_bytes_per_token()
    held = int(3072 * per_token)
    _free(monkeypatch, 0)  # other programs took the memory: only the current context's own is there
    with pytest.raises(MemoryInUse) as refused:
        Chat(cpp, film, plan=FilmPlan(1, 4096, None))
    needed = int(4096 * per_token)
    assert str(refused.value).startswith(f"this conversation's 4096-token context needs {human_size(needed)}, "
                                         f"{human_size(held)} free: close other programs")
    assert (refused.value.needed, refused.value.available) == (needed, held)
    assert isinstance(refused.value, NotEnoughMemory) and error_kind(refused.value) == "memory_in_use"
    assert cpp.backend.context_length() == 3072  # the context that served still serves
    again = Chat(cpp, film, plan=FilmPlan(1, 3072, None))  # the same context: nothing to make, nothing refused
    _free(monkeypatch, 10**12)
    assert "".join(again.ask("What happens?", GREEDY)) == answer


def test_require_free_keeps_a_margin_and_says_how_much_to_free() -> None:
    require_free(900, 1000, "x")  # 90 % of what is free may be used
    with pytest.raises(MemoryInUse, match=r"x needs 2.0 kB, 1.0 kB free: close other programs .* at least 1.1 kB"):
        require_free(2000, 1000, "x")
