"""LLM backends: what the chat engine needs of an LLM, and the transformers implementation.

An LLM backend only has to take token ids with visual rows at the ``<image>`` placeholders and
stream tokens; the vision side (EVA, Q-Former, projectors) always runs in torch. That split is
what lets llama.cpp (:mod:`llamavid.runtime.llamacpp`) serve the LLM on a laptop while the chat
engine stays the same.

A conversation's state can be cut back (:meth:`Backend.rollback` to a :meth:`Backend.snapshot`):
a turn that fails or is cancelled half-way leaves the KV cache exactly as before it, so the next
question is answered as if the failed turn never happened.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from safetensors.torch import load, save
from transformers import DynamicCache, StaticCache

from llamavid.runtime import memory
from llamavid.runtime.generate import SamplingOptions, Session, Step, forward_step, stream, with_pending
from llamavid.runtime.kv_size import kv_cache_bytes
from llamavid.runtime.memory import Estimate, estimate

#: (done, total) after each prefill chunk; raising (a cancel) stops the prefill there.
PrefillHook = Callable[[int, int], None]


@dataclass(frozen=True)
class Snapshot:
    """Where a conversation stood before a turn: enough to put it back."""

    length: int
    seen: int
    pending: tuple[int, ...]


class Backend(Protocol):
    """What an LLM engine provides (transformers here, llama.cpp elsewhere)."""

    name: str

    def context_length(self) -> int: ...

    def trained_context(self) -> int:
        """The context the model was trained with (what a film's plan starts from)."""
        ...

    def kv_bytes_per_token(self) -> float:
        """Bytes of KV cache one token takes (K and V, every layer)."""
        ...

    def weights_bytes(self) -> int: ...

    def total_memory(self) -> int:
        """All the memory of the device the KV cache lives on."""
        ...

    def free_memory(self) -> int:
        """The memory free on that device now."""
        ...

    def use_context(self, n_ctx: int) -> None:
        """Run an ``n_ctx``-token context from now on (a film's plan); MemoryInUse when it cannot be
        made with the memory free now."""
        ...

    def new_state(self) -> Any: ...

    def generate(self, state: Any, input_ids: Sequence[int], slots: Sequence[torch.Tensor],
                 options: SamplingOptions, on_prefill: PrefillHook | None = None) -> Iterator[Step]: ...

    def feed(self, state: Any, input_ids: Sequence[int], slots: Sequence[torch.Tensor] = (),
             on_prefill: PrefillHook | None = None) -> None: ...

    def preflight(self, state: Any, new_tokens: int, answer_tokens: int = 0) -> Estimate: ...

    def snapshot(self, state: Any) -> Snapshot: ...

    def rollback(self, state: Any, snapshot: Snapshot) -> None: ...

    def export_cache(self, state: Any) -> bytes: ...

    def import_cache(self, state: Any, data: bytes, length: int) -> None: ...


def take_snapshot(state: Session) -> Snapshot:
    return Snapshot(state.length, len(state.seen_ids), tuple(state.pending))


def restore_session(state: Session, snap: Snapshot) -> None:
    """The session's own bookkeeping; each backend cuts its cache back before calling this."""
    state.length = snap.length
    del state.seen_ids[snap.seen:]
    state.pending = list(snap.pending)


class TransformersBackend:
    """The LLM of a loaded :class:`LlamaVidForCausalLM` with a KV cache per conversation.

    On CUDA the cache is static (preallocated, fixed shapes) and the one-token decode step is
    compiled with CUDA graphs (``torch.compile(mode="reduce-overhead")``): at batch 1 decode is
    bound by kernel launches otherwise. The static cache is sized to the conversation when its
    first turn arrives (at least ``static_cache_tokens``); a conversation that outgrows it, or one
    larger than ``static_max_tokens`` from the start (a film), continues in a growing
    ``DynamicCache`` without the compiled step instead of failing. Elsewhere the cache grows and
    the model runs eagerly.
    """

    name = "transformers"

    def __init__(self, model, static_cache: bool | None = None, compile_decode: bool | None = None,
                 static_cache_tokens: int = 8192, static_max_tokens: int = 32768):
        self.model = model
        cuda = model.lm_head.weight.device.type == "cuda"
        self.static_cache = cuda if static_cache is None else static_cache
        self.static_tokens = min(static_cache_tokens, self.context_length())
        self.static_max = min(max(static_max_tokens, self.static_tokens), self.context_length())
        self.decode_step = None
        if (cuda if compile_decode is None else compile_decode) and self.static_cache:
            self.decode_step = torch.compile(model.forward, mode="reduce-overhead", dynamic=False)

    def context_length(self) -> int:
        return self.model.config.context_length

    def trained_context(self) -> int:
        return self.model.config.context_length

    def kv_bytes_per_token(self) -> float:
        return float(kv_cache_bytes(self.model.config, 1, self.model.lm_head.weight.element_size()))

    def weights_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.model.parameters())

    def total_memory(self) -> int:
        return memory.total_memory(self.model.lm_head.weight.device)

    def free_memory(self) -> int:
        return memory.available_memory(self.model.lm_head.weight.device)

    def use_context(self, n_ctx: int) -> None:
        """Nothing to make: the cache grows with the conversation (the chat keeps to ``n_ctx`` tokens,
        and each turn's pre-flight checks the memory it adds)."""

    def new_state(self) -> Session:
        return Session(cache=None) if self.static_cache else Session()

    def _embeds(self, input_ids: Sequence[int], slots: Sequence[torch.Tensor]) -> torch.Tensor:
        with torch.inference_mode():
            return self.model.embed_inputs(list(input_ids), list(slots))

    def _make_room(self, state: Session, needed: int) -> None:
        """Give the session a cache that holds ``needed`` tokens (see the class docstring)."""
        if state.cache is None:  # static mode, first turn
            if needed <= self.static_max:
                size = min(self.static_max, max(self.static_tokens, -(-needed // 1024) * 1024))
                state.cache, state.static_limit = StaticCache(config=self.model.config, max_cache_len=size), size
            else:
                state.cache = DynamicCache()
        elif state.static_limit and needed > state.static_limit:
            state.cache, state.static_limit = _to_dynamic(state.cache, state.length), 0

    def generate(self, state: Session, input_ids: Sequence[int], slots: Sequence[torch.Tensor],
                 options: SamplingOptions, on_prefill: PrefillHook | None = None) -> Iterator[Step]:
        embeds = self._embeds(input_ids, slots)
        self._make_room(state, state.length + embeds.shape[1] + options.max_new_tokens + len(state.pending))
        step = self.decode_step if state.static_limit else None
        return stream(self.model, embeds, options, state, input_ids, step=step, on_prefill=on_prefill)

    def feed(self, state: Session, input_ids: Sequence[int], slots: Sequence[torch.Tensor] = (),
             on_prefill: PrefillHook | None = None) -> None:
        """Read tokens into the cache without answering (a kept conversation rebuilt after a restart)."""
        embeds = self._embeds(input_ids, slots)
        self._make_room(state, state.length + embeds.shape[1] + len(state.pending))
        state.seen_ids.extend(i for i in input_ids if i >= 0)
        embeds = with_pending(self.model.get_input_embeddings(), state, embeds)
        forward_step(self.model, state, embeds, on_chunk=on_prefill)

    def preflight(self, state: Session, new_tokens: int, answer_tokens: int = 0) -> Estimate:
        """The memory this turn adds: its tokens' KV and the answer budget (the live cache is
        already in use, so it is not counted again), and one prefill chunk's activations."""
        w = self.model.lm_head.weight
        return estimate(self.model.config, 0, new_tokens + answer_tokens, w.device, w.element_size(),
                        context_tokens=state.length + new_tokens + answer_tokens)

    def snapshot(self, state: Session) -> Snapshot:
        return take_snapshot(state)

    def rollback(self, state: Session, snap: Snapshot) -> None:
        extra = state.length - snap.length
        if extra > 0 and isinstance(state.cache, DynamicCache):
            state.cache.crop(-extra)
        elif extra > 0 and isinstance(state.cache, StaticCache):
            for layer in state.cache.layers:  # the cache counts non-zero rows as filled
                if getattr(layer, "keys", None) is not None:
                    layer.keys[:, :, snap.length:].zero_()
                    layer.values[:, :, snap.length:].zero_()
        restore_session(state, snap)


    def export_cache(self, state: Session) -> bytes:
        """The cache's first ``length`` positions, layer by layer, as safetensors bytes."""
        if state.cache is None or state.length == 0:
            return save({})
        tensors = {}
        for i, layer in enumerate(state.cache.layers):
            tensors[f"k.{i}"] = layer.keys[:, :, :state.length].contiguous().cpu()
            tensors[f"v.{i}"] = layer.values[:, :, :state.length].contiguous().cpu()
        return save(tensors)

    def import_cache(self, state: Session, data: bytes, length: int) -> None:
        """Fill a new session's cache from :meth:`export_cache`'s bytes (into a growing cache)."""
        try:
            tensors = load(data)
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
            raise ValueError(f"not a saved cache ({exc})") from exc
        w = self.model.lm_head.weight
        cache = DynamicCache()
        for i in range(len(tensors) // 2):
            cache.update(tensors[f"k.{i}"].to(w.device, w.dtype), tensors[f"v.{i}"].to(w.device, w.dtype), i)
        if tensors and cache.get_seq_length() != length:
            raise ValueError(f"the saved cache holds {cache.get_seq_length()} positions, its header says {length}")
        state.cache, state.static_limit, state.length = cache, 0, length


def _to_dynamic(static: StaticCache, length: int) -> DynamicCache:
    """The first ``length`` positions of a static cache as a growing one."""
    dynamic = DynamicCache()
    for i, layer in enumerate(static.layers):
        dynamic.update(layer.keys[:, :, :length].clone(), layer.values[:, :, :length].clone(), i)
    return dynamic
