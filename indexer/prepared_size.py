"""The size a film's prepared state ("fast answers") will take, known before it is made, with no
torch and no model loaded: the front ends show it before a person asks for a film to be prepared,
and a listing of the whole library computes it for every film.

A prepared state is a KV cache: K and V for every layer over the film's prompt, two rows per frame
plus the text (the template, the subtitles, the neutral turn). The LLM's shape comes from the
checkpoint's config.json, else from its GGUF file's header (:func:`llm_shape`); the bytes per cached
value from the backend (:func:`kv_bytes_per_value`: llama.cpp's KV type, q8_0 being 34 bytes per
32 values and the default, chosen by :func:`llamavid.runtime.kv_size.llamacpp_kv_type` as the
cache itself is; the transformers dtype). About 2.6 GB per hour of film (:func:`hour_bytes`) for a 7B
model with a q8_0 cache, 4.8 GB with f16.
:func:`indexer.prepare.prepared_size_estimate` says the same for a loaded model.
"""
from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf

from indexer.library import LibraryDb, Movie, choose_track
from indexer.store import LibraryStore
from llamavid.files import gguf_files
from llamavid.hub.installed import config_of
from llamavid.runtime.kv_size import BYTES_PER_VALUE, QUANT_BLOCK, kv_cache_bytes, llamacpp_kv_type
from llamavid.runtime.llm_choice import prefers_llamacpp, weights_bytes

DEFAULT_TEXT_TOKENS = 2000  # a film prompt's text when its subtitles are not counted
PROMPT_TOKENS = 128  # the template, the film's intro and outro, the neutral question and its answer
CHARS_PER_TOKEN = 3.5  # dialogue in LLaMA's tokenizer, rounded down: an estimate should not fall short
FALLBACK_FPS = 1.0  # the indexer's frame rate, for a film whose features have not started


@dataclass(frozen=True)
class LlmShape:
    """The LLM sizes its KV cache depends on, named as in config.json (what
    :func:`llamavid.runtime.kv_size.kv_cache_bytes` reads)."""

    num_hidden_layers: int
    num_attention_heads: int
    hidden_size: int
    num_key_value_heads: int
    head_dim: int


def llm_shape(model: str | os.PathLike[str] | Mapping[str, Any] | Any) -> LlmShape:
    """The shape of a checkpoint folder's LLM (its config.json, else its GGUF file's header), of a
    config.json's dict, or of a loaded config; ValueError if neither says it."""
    if isinstance(model, (str, os.PathLike)):
        folder = Path(model)
        config = config_of(folder)
        if config:
            return _shape_from(config, folder / "config.json")
        try:
            return gguf_shape(gguf_files(folder)[0])
        except IndexError:
            raise ValueError(f"{folder}: no config.json and no GGUF file, so the model's size is unknown") from None
    if isinstance(model, Mapping):
        return _shape_from(model, "the model's config")
    return _shape_from({f: getattr(model, f, None) for f in LlmShape.__dataclass_fields__}, "the model's config")


def _shape_from(config: Mapping[str, Any], where: Any) -> LlmShape:
    """Every size filled in as the model reads them (KV heads default to the attention heads, the
    head size to the width over the heads), so two descriptions of one model compare equal."""
    try:
        layers, heads, width = int(config["num_hidden_layers"]), int(config["num_attention_heads"]), \
            int(config["hidden_size"])
        return LlmShape(layers, heads, width, int(config.get("num_key_value_heads") or heads),
                        int(config.get("head_dim") or width // heads))
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
        raise ValueError(f"{where} does not give the LLM's layers, heads and width ({exc})") from None


def gguf_shape(path: str | os.PathLike[str]) -> LlmShape:
    """The shape from a GGUF file's metadata (``<arch>.block_count``, ``.attention.head_count``...),
    read from its header: the weights are mapped, never loaded."""
    reader = gguf.GGUFReader(path)

    def value(key: str) -> Any:
        field = reader.fields.get(key)
        if field is None or not field.data:
            return None
        part = field.parts[field.data[0]]
        return bytes(part).decode("utf-8") if field.types[0] == gguf.GGUFValueType.STRING else part[0].item()

    arch = value("general.architecture") or "llama"
    shape = {"num_hidden_layers": value(f"{arch}.block_count"), "hidden_size": value(f"{arch}.embedding_length"),
             "num_attention_heads": value(f"{arch}.attention.head_count"),
             "num_key_value_heads": value(f"{arch}.attention.head_count_kv"),
             "head_dim": value(f"{arch}.attention.key_length")}
    return _shape_from(shape, path)


def kv_bytes_per_value(backend: str, kv_type: str | None = None, dtype_bytes: int = 4,
                       head_dim: int | None = None) -> float:
    """Bytes one cached K or V value takes: llama.cpp's KV type (``auto`` or None: the type
    :func:`~llamavid.runtime.kv_size.llamacpp_kv_type` gives a model of ``head_dim``, q8_0 when it
    is not known), else the transformers backend's compute dtype (fp32 on a CPU, fp16 on a GPU)."""
    if backend == "llama.cpp":
        return BYTES_PER_VALUE[llamacpp_kv_type(kv_type, QUANT_BLOCK if head_dim is None else head_dim)]
    return float(dtype_bytes)


def default_backend(folder: Path) -> str:
    """The backend a folder runs on by default on a CPU: llama.cpp for a GGUF folder, and for a
    checkpoint the CPU default converts (:func:`~llamavid.runtime.llm_choice.prefers_llamacpp`),
    else transformers."""
    return "llama.cpp" if gguf_files(folder) or prefers_llamacpp(weights_bytes(folder), None) else "transformers"


def estimate_prepared_bytes(model: str | os.PathLike[str] | Mapping[str, Any] | Any, frames: int,
                            text_tokens: int = DEFAULT_TEXT_TOKENS, kv_bytes: float | None = None) -> int:
    """Bytes a film's prepared state will take, before it is made, without torch work or weights:
    its KV cache, K and V for every layer over two rows per frame plus the text tokens.

    ``model``: a checkpoint folder, a config.json dict or a loaded config (see :func:`llm_shape`).
    ``kv_bytes``: bytes per cached value (:func:`kv_bytes_per_value`); None: what a folder runs
    with by default on a CPU (:func:`default_backend`: llama.cpp's default cache, else fp32).
    """
    shape = llm_shape(model)
    if kv_bytes is None:
        folder = Path(model) if isinstance(model, (str, os.PathLike)) else None
        backend = default_backend(folder) if folder is not None else "transformers"
        kv_bytes = kv_bytes_per_value(backend, head_dim=shape.head_dim)
    return kv_cache_bytes(shape, 2 * max(0, frames) + max(0, text_tokens), kv_bytes)


def hour_bytes(model: str | os.PathLike[str] | Mapping[str, Any] | Any, kv_bytes: float | None = None) -> int:
    """A prepared hour of film (its frames at the indexer's rate and :data:`DEFAULT_TEXT_TOKENS`):
    the figure the front ends quote per hour, from the same rule as each film's own estimate."""
    return estimate_prepared_bytes(model, int(3600 * FALLBACK_FPS), DEFAULT_TEXT_TOKENS, kv_bytes)


def film_tokens(db: LibraryDb, movie: Movie, language: str | None = None,
                track_id: int | None = None) -> tuple[int, int]:
    """(frames, text tokens) a film's prepared prompt will hold, counted before it is read: the
    frames stored (or, while indexing, expected from its length), and the subtitle track a chat
    chooses (:func:`choose_track`) at :data:`CHARS_PER_TOKEN`, plus the template and the neutral turn."""
    frames = movie.frames
    if not movie.features_complete:
        frames = max(frames, round((movie.duration or 0) * (movie.fps or FALLBACK_FPS)))
    track = choose_track(movie, language, track_id)
    store = db if isinstance(db, LibraryStore) else LibraryStore(db)
    chars = store.cue_chars(movie.id, track["id"]) if track else 0
    return frames, PROMPT_TOKENS + math.ceil(chars / CHARS_PER_TOKEN)
