"""The size of an LLM's KV cache, without torch: one rule for the memory pre-flight
(:mod:`llamavid.runtime.memory`), llama.cpp's cache types (:mod:`llamavid.runtime.llamacpp`) and the
size a prepared film will take, shown before it is made (:mod:`indexer.prepared_size`), which must
not need torch or a loaded model.

It also holds the one rule for the type of a llama.cpp cache nobody chose (:func:`llamacpp_kv_type`):
a film's cache is most of the memory a chat about it takes, so it is q8_0 (half of f16, answers
within noise of it) wherever llama.cpp can run one, and every size shown before a film is read
comes from the same choice as the cache then made.
"""
from __future__ import annotations

#: Bytes per cached value of llama.cpp's KV cache types (ggml's block sizes: q8_0 stores 32 values
#: in 34 bytes, q4_0 in 18).
BYTES_PER_VALUE = {"f32": 4.0, "f16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}
#: What ``kv_type="auto"`` (the default of :class:`~llamavid.runtime.options.LoadOptions`) becomes on llama.cpp.
DEFAULT_LLAMACPP_KV = "q8_0"
#: llama.cpp quantizes a cache row in blocks of 32 values: a head size it does not divide keeps f16.
QUANT_BLOCK = 32
KV_TYPES = ("auto", *BYTES_PER_VALUE)
#: How each choice is offered to a person (the desktop's settings, ``--kv-type``'s help).
KV_TYPE_LABELS = {
    "auto": f"auto ({DEFAULT_LLAMACPP_KV} where the model allows it)",
    "q8_0": "q8_0 (half of f16, answers within noise of it)",
    "f16": "f16 (twice q8_0's memory and disk)",
    "q4_0": "q4_0 (a quarter of f16; answers drift a little)",
    "f32": "f32 (four times q8_0; for checks)",
}
#: What a llama.cpp cache's saved state holds beside K and V (``llama_kv_cache::state_write``): each
#: cached token's position and sequence (12 bytes: 0.004 % of a 7B's q8_0 cache), and 24 bytes of
#: header a layer and once more. The sizes shown before a film is read leave them out.
LLAMACPP_CELL_BYTES = 12
LLAMACPP_HEADER_BYTES = 24


def llamacpp_kv_type(kv_type: str | None, head_dim: int) -> str:
    """The KV cache type a llama.cpp context gets: the one asked for, else (``auto`` or None)
    :data:`DEFAULT_LLAMACPP_KV` where the model's head size is a whole number of quantization
    blocks, else f16 (a quantized cache of such a model cannot be made)."""
    if kv_type not in (None, "auto"):
        if kv_type not in BYTES_PER_VALUE:
            raise ValueError(f"KV cache type must be one of {', '.join(KV_TYPES)}, got {kv_type!r}")
        return kv_type
    return DEFAULT_LLAMACPP_KV if head_dim % QUANT_BLOCK == 0 else "f16"


def kv_bytes_per_token(config, bytes_per_value: float) -> float:
    """K and V of one token for every layer: 2 x layers x kv_heads x head_dim values (``config``
    names its sizes as config.json does)."""
    heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return 2 * config.num_hidden_layers * heads * head_dim * bytes_per_value


def kv_cache_bytes(config, tokens: int, bytes_per_value: float) -> int:
    """K and V for every layer over ``tokens`` tokens (:func:`kv_bytes_per_token` times the tokens)."""
    return int(kv_bytes_per_token(config, bytes_per_value) * tokens)


def llamacpp_state_extra(config, tokens: int) -> int:
    """Bytes a llama.cpp state of ``tokens`` cached tokens holds beyond :func:`kv_cache_bytes`."""
    return LLAMACPP_CELL_BYTES * tokens + LLAMACPP_HEADER_BYTES * (config.num_hidden_layers + 1)
