"""LLM backends: what the chat engine needs of an LLM, and the transformers implementation.

An LLM backend only has to take token ids with visual rows at the ``<image>`` placeholders and
stream tokens; the vision side (EVA, Q-Former, projectors) always runs in torch. That split is
what lets llama.cpp (:mod:`llamavid.runtime.llamacpp`) serve the LLM on a laptop while the chat
engine stays the same.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import torch
from transformers import StaticCache

from llamavid.runtime.generate import SamplingOptions, Session, Step, stream
from llamavid.runtime.memory import Estimate, estimate


class Backend(Protocol):
    """What an LLM engine provides (transformers here, llama.cpp elsewhere)."""

    name: str

    def context_length(self) -> int: ...

    def new_state(self) -> Any: ...

    def generate(self, state: Any, input_ids: Sequence[int], slots: Sequence[torch.Tensor],
                 options: SamplingOptions) -> Iterator[Step]: ...

    def preflight(self, state: Any, new_tokens: int) -> Estimate: ...


class TransformersBackend:
    """The LLM of a loaded :class:`LlamaVidForCausalLM` with a KV cache per conversation.

    On CUDA the cache is static (preallocated, fixed shapes) and the one-token decode step is
    compiled with CUDA graphs (``torch.compile(mode="reduce-overhead")``): at batch 1 decode is
    bound by kernel launches otherwise. Elsewhere the cache grows (``DynamicCache``) and the
    model runs eagerly. ``static_cache_tokens`` caps the preallocation; longer conversations
    (a film) fall back to the growing cache.
    """

    name = "transformers"

    def __init__(self, model, static_cache: bool | None = None, compile_decode: bool | None = None,
                 static_cache_tokens: int = 8192):
        self.model = model
        cuda = model.lm_head.weight.device.type == "cuda"
        self.static_cache = cuda if static_cache is None else static_cache
        self.static_tokens = min(static_cache_tokens, self.context_length())
        self.decode_step = None
        if (cuda if compile_decode is None else compile_decode) and self.static_cache:
            self.decode_step = torch.compile(model.forward, mode="reduce-overhead", dynamic=False)

    def context_length(self) -> int:
        return self.model.config.context_length

    def new_state(self) -> Session:
        if not self.static_cache:
            return Session()
        cache = StaticCache(config=self.model.config, max_cache_len=self.static_tokens)
        return Session(cache=cache, static_limit=self.static_tokens)

    def generate(self, state: Session, input_ids: Sequence[int], slots: Sequence[torch.Tensor],
                 options: SamplingOptions) -> Iterator[Step]:
        with torch.inference_mode():
            embeds = self.model.embed_inputs(list(input_ids), list(slots))
        needed = state.length + embeds.shape[1] + options.max_new_tokens + len(state.pending)
        if state.static_limit and needed > state.static_limit:
            raise ValueError(f"this conversation needs {needed} tokens, more than the {state.static_limit} "
                             "preallocated; start it with a larger static_cache_tokens or static_cache=False")
        return stream(self.model, embeds, options, state, input_ids, step=self.decode_step)

    def preflight(self, state: Session, new_tokens: int) -> Estimate:
        w = self.model.lm_head.weight
        return estimate(self.model.config, 0, state.length + new_tokens, w.device, w.element_size())
