"""Memory pre-flight: will this request fit, and if not, what would?

LLaMA-VID users ran out of memory half-way through an answer. Before a request runs we add up
weights, the KV cache for the whole conversation and the largest activations of a prefill chunk,
and compare with what the device has free; a video that does not fit gets a frame stride that
does, or a refusal that says what would fit.

A library film is planned differently (:class:`FilmPlan`): its context and frame stride are a
property of the film and the model, decided once from the model's trained context and a memory
budget the user sees (:func:`default_budget`, the library's ``film_memory_bytes`` setting), never
from the memory free at the moment, so every process (the chat service, the indexer) reads a film
the same way and their saved states match. What is free now only decides whether a question can
run now: :func:`require_free` refuses with :class:`~llamavid.errors.MemoryInUse`, saying what to
free, and drops nothing.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from llamavid.errors import ContextOverflow, MemoryInUse
from llamavid.runtime.kv_size import kv_cache_bytes
from llamavid.storage import human_size
from llamavid.system import ram

PREFILL_CHUNK = 512  # tokens per prefill step: bounds attention scores and MLP activations
SAFETY = 0.9  # keep 10 % of free memory for the allocator, the OS and the app itself
CONTEXT_FLOOR = 2048  # a film's context is never planned under this (or the trained one, if shorter)
CONTEXT_STEP = 256  # a planned context is a multiple of this
BUDGET_SETTING = "film_memory_bytes"  # the library setting that overrides default_budget()


@dataclass
class Estimate:
    weights: int
    kv_cache: int
    activations: int
    available: int
    tokens: int
    weights_loaded: bool = True  # then ``available`` already excludes them

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.activations

    @property
    def needed(self) -> int:
        return self.total - (self.weights if self.weights_loaded else 0)

    @property
    def fits(self) -> bool:
        return self.needed <= self.available * SAFETY

    def describe(self) -> str:
        g = 2**30
        return (f"{self.tokens} tokens need {self.total / g:.1f} GiB (weights {self.weights / g:.1f}, "
                f"KV cache {self.kv_cache / g:.1f}, activations {self.activations / g:.1f}); "
                f"{self.available / g:.1f} GiB free")


@dataclass(frozen=True)
class FilmPlan:
    """How a conversation reads its film: every ``stride``-th frame, in an ``n_ctx``-token context.

    Decided once per film and model (:func:`plan_context`, then the smallest stride whose frames
    and text fit ``n_ctx``), kept in the library with the film and in each conversation, and
    reused as it is: never re-planned from the memory free at the moment. ``budget``: the bytes
    of KV cache it was planned for (None: taken from a kept conversation, which stores no budget).
    """

    stride: int
    n_ctx: int
    budget: int | None = None

    def describe(self) -> str:
        """The plan in words: "every 3rd frame, a 16384-token context (film memory budget 8.6 GB)"."""
        frames = "every frame" if self.stride == 1 else f"every {ordinal(self.stride)} frame"
        budget = f" (film memory budget {human_size(self.budget)})" if self.budget is not None else ""
        return f"{frames}, a {self.n_ctx}-token context{budget}"


def ordinal(n: int) -> str:
    """2nd, 3rd, 4th, 11th, 21st."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def default_budget(total: int, weights: int) -> int:
    """The film memory budget when the user set none: half of the device's memory beside the
    model's weights. It depends on the machine and the model only, never on what is free now."""
    return max(0, total - weights) // 2


def plan_context(trained: int, kv_bytes_per_token: float, budget: int) -> int:
    """The context a film is read in: the model's trained length as far as its KV cache fits
    ``budget`` bytes, in steps of :data:`CONTEXT_STEP`, never under :data:`CONTEXT_FLOOR` (nor
    over the trained length)."""
    fits = int(budget // max(kv_bytes_per_token, 1e-9)) // CONTEXT_STEP * CONTEXT_STEP
    return max(min(trained, CONTEXT_FLOOR), min(trained, fits))


def require_free(needed: int, available: int, what: str) -> None:
    """Refuse, keeping everything, when ``needed`` bytes do not fit in ``available`` now (with
    :data:`SAFETY`'s margin): :class:`MemoryInUse` says how much, what is free and what to free."""
    if needed <= available * SAFETY:
        return
    short = needed - int(available * SAFETY)
    raise MemoryInUse(f"{what} needs {human_size(needed)}, {human_size(available)} free: close other programs "
                      f"(or wait for them to finish) to free at least {human_size(short)} and ask again; "
                      "nothing was lost", needed=needed, available=available)


def total_memory(device: torch.device) -> int:
    """All the memory of the device: the GPU's, else the system's RAM (0 where unknown)."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    mem = ram()
    return mem.total or mem.available or 0


def available_memory(device: torch.device) -> int:
    """Free bytes on the device: CUDA's own count, else the system's available RAM."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    mem = ram()
    # where the system does not say what is free, the total is the best bound there is
    return mem.available if mem.available is not None else (mem.total or 0)


def activation_bytes(config, tokens: int, bytes_per_value: float, chunk: int = PREFILL_CHUNK) -> int:
    """The largest live tensors of one prefill chunk: attention scores (when the kernel
    materialises them, in float32) and the gated MLP's intermediates."""
    step = min(chunk, max(tokens, 1))
    scores = config.num_attention_heads * step * tokens * 4
    mlp = 3 * step * config.intermediate_size * bytes_per_value
    hidden = 4 * step * config.hidden_size * bytes_per_value
    logits = config.vocab_size * 4
    return int(scores + mlp + hidden + logits)


def estimate(config, weights: int, tokens: int, device: torch.device, bytes_per_value: float,
             kv_bytes_per_value: float | None = None, available: int | None = None,
             weights_loaded: bool = True, context_tokens: int | None = None) -> Estimate:
    """Memory for ``tokens`` more cached tokens; attention activations span ``context_tokens``
    (the whole conversation the new chunk attends over; default: ``tokens``)."""
    kv = kv_cache_bytes(config, tokens, kv_bytes_per_value or bytes_per_value)
    act = activation_bytes(config, context_tokens or tokens, bytes_per_value)
    free = available_memory(device) if available is None else available
    return Estimate(weights, kv, act, free, tokens, weights_loaded)


def frame_stride(frames: int, tokens_per_frame: int, text_tokens: int, limit_tokens: int) -> int:
    """Smallest stride so that the sampled frames' tokens plus the text stay within ``limit_tokens``."""
    room = limit_tokens - text_tokens
    if room < tokens_per_frame:
        raise ContextOverflow(f"the text alone (question, subtitles, answer room) takes {text_tokens} of the "
                              f"{limit_tokens}-token context", needed=text_tokens, limit=limit_tokens)
    return max(1, math.ceil(frames / (room // tokens_per_frame)))
