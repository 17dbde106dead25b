"""The size of an LLM's KV cache, without torch: one rule for the memory pre-flight
(:mod:`llamavid.runtime.memory`), llama.cpp's cache types (:mod:`llamavid.runtime.llamacpp`) and the
size a prepared film will take, shown before it is made (:mod:`indexer.prepared_size`), which must
not need torch or a loaded model.
"""
from __future__ import annotations

#: Bytes per cached value of llama.cpp's KV cache types (ggml's block sizes: q8_0 stores 32 values
#: in 34 bytes, q4_0 in 18).
BYTES_PER_VALUE = {"f32": 4.0, "f16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}


def kv_cache_bytes(config, tokens: int, bytes_per_value: float) -> int:
    """K and V for every layer: 2 x layers x kv_heads x head_dim x tokens (``config`` names its
    sizes as config.json does)."""
    heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return int(2 * config.num_hidden_layers * heads * head_dim * tokens * bytes_per_value)
