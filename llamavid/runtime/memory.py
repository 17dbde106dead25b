"""Memory pre-flight: will this request fit, and if not, what would?

LLaMA-VID users ran out of memory half-way through an answer. Before a request runs we add up
weights, the KV cache for the whole conversation and the largest activations of a prefill chunk,
and compare with what the device has free; a video that does not fit gets a frame stride that
does, or a refusal that says what would fit.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from llamavid.errors import ContextOverflow
from llamavid.runtime.kv_size import kv_cache_bytes
from llamavid.system import ram

PREFILL_CHUNK = 512  # tokens per prefill step: bounds attention scores and MLP activations
SAFETY = 0.9  # keep 10 % of free memory for the allocator, the OS and the app itself


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
