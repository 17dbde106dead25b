"""Which engine runs a checkpoint's LLM on this machine: the one rule, and where its llama.cpp copy lives.

A released LLaMA-VID checkpoint is a 7B LLM in bf16: about 13.5 GB of LLM weights. A GPU that
holds it in fp16 with room for a film's KV cache runs it with transformers, as the reference does.
Anywhere else (a smaller GPU, or none) the default is llama.cpp with the LLM in q4_K_M, about
4 GB: transformers would need the weights in fp32 on a CPU (twice the checkpoint in RAM, several
times slower) or bitsandbytes' 8/4 bit (slower still off a GPU). llama.cpp needs the LLM as a GGUF
file, made once from the downloaded checkpoint (:mod:`llamavid.runtime.gguf_export`) into
``<data>/models/<name>-gguf/`` (:func:`converted_folder`); the front ends offer that conversion,
with its disk space first.

Checkpoints under :data:`MIN_LLAMACPP_BYTES` (the tiny test models, toy LLMs) keep transformers:
for them a conversion would cost more than it saves.

Two callers, one rule (:func:`prefers_llamacpp`): the first-run suggestion
(:func:`app.hardware.recommend`) judges a GPU by its memory free now and saves its choice in the
settings; ``load_model``'s ``backend="auto"`` (:func:`llamavid.runtime.load.choose_engine`) judges
it by its total memory, which every process of the machine sees alike (a chat and the indexer
child that prepares films for it must load the model the same way). No torch here.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from llamavid.files import CONFIG, EVA_FILE, VISION_FILE, find_part, gguf_files, weight_index
from llamavid.hub.installed import config_of, data_dir_of, search_dirs
from llamavid.paths import DataDir

#: The GGUF type the CPU default converts to and runs: 4.85 bits a weight, answers close to fp16.
CPU_GGUF_TYPE = "q4_K_M"
#: Checkpoints with fewer bytes of weights than this keep transformers wherever they run.
MIN_LLAMACPP_BYTES = 2 * 10**9
#: Memory kept free beside the weights for a film's context: 40 % of the model (6 GiB for a 7B).
FILM_ROOM = 0.4
#: The marker a finished conversion writes last but one (config.json is last): the files it made.
MARKER = "gguf.json"
#: Bits a weight takes in each GGUF type (q4_K_M mixes q4_K and q6_K blocks: 4.85 on average for a 7B).
BITS_PER_WEIGHT = {"f32": 32.0, "f16": 16.0, "q8_0": 8.5, "q4_K_M": 4.85}
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}

__all__ = ["CPU_GGUF_TYPE", "MIN_LLAMACPP_BYTES", "conversion_disk_bytes", "conversion_files", "conversion_of",
           "converted_folder", "estimate_conversion", "gpu_holds", "headroom", "is_complete_conversion",
           "prefers_llamacpp", "weights_bytes"]


def headroom(model_bytes: int) -> int:
    """Memory left for a film's context beside the weights: 40 % of the model, at least 512 MiB."""
    return max(2**29, int(model_bytes * FILM_ROOM))


def gpu_holds(model_bytes: int, gpu_bytes: int, bits: int | None = None) -> bool:
    """Whether ``gpu_bytes`` of GPU memory hold the checkpoint's weights (bf16 on disk: fp16's size;
    ``bits`` 8 or 4: a half or a quarter of it) plus the room for a film."""
    need = model_bytes if bits is None else model_bytes * bits // 16
    return gpu_bytes >= need + headroom(model_bytes)


def prefers_llamacpp(model_bytes: int, gpu_bytes: int | None) -> bool:
    """The rule: a checkpoint of ``model_bytes`` of weights chats through llama.cpp in
    :data:`CPU_GGUF_TYPE` unless a GPU with ``gpu_bytes`` of memory holds it in fp16 (None: no CUDA
    GPU). Apple's MPS is not judged here: it runs transformers in fp16."""
    if model_bytes < MIN_LLAMACPP_BYTES:
        return False
    return gpu_bytes is None or not gpu_holds(model_bytes, gpu_bytes)


def weights_bytes(folder: Path) -> int:
    """Bytes of a checkpoint folder's weight files (what the rule weighs; 0 when it has none)."""
    total = 0
    for name in weight_index(Path(folder))[2]:
        try:
            total += (Path(folder) / name).stat().st_size
        except OSError:
            continue
    return total


# -- the llama.cpp copy of a checkpoint ------------------------------------------------------------
def converted_folder(data_dir: DataDir | str | os.PathLike[str], model: str | os.PathLike[str]) -> Path:
    """Where ``llamavid models convert-gguf MODEL`` writes: ``<data>/models/<name>-gguf`` (a folder
    given by its path is named by its last part)."""
    return data_dir_of(data_dir).models / f"{Path(os.fspath(model)).name}-gguf"


def read_marker(folder: Path) -> dict[str, Any] | None:
    """A finished conversion's :data:`MARKER` (None: none, or unreadable)."""
    try:
        marker = json.loads((Path(folder) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def is_complete_conversion(folder: Path, source: Path | None = None) -> bool:
    """A conversion whose every file is in place (its marker lists them; config.json and the vision
    side too), made from ``source`` when one is given: an interrupted one is never taken for it."""
    marker = read_marker(folder)
    if marker is None or not gguf_files(folder):
        return False
    files = [*marker.get("files", []), CONFIG, VISION_FILE]
    if not all((Path(folder) / name).is_file() for name in files):
        return False
    return source is None or Path(marker.get("source", "")).resolve() == Path(source).resolve()


def conversion_of(data_dir: DataDir | str | os.PathLike[str], model: str | os.PathLike[str],
                  folder: Path) -> Path | None:
    """The finished llama.cpp conversion of checkpoint ``folder`` (named ``model``), or None: the
    folder :func:`converted_folder` names for the name or for the folder itself."""
    for candidate in dict.fromkeys((converted_folder(data_dir, model), converted_folder(data_dir, folder))):
        if is_complete_conversion(candidate, folder):
            return candidate
    return None


# -- the disk space a conversion takes, before it is made ---------------------------------------------
def llm_weights(config: Mapping[str, Any]) -> tuple[int, int]:
    """(matrix weights, vector weights) of a LLaMA LLM described by config.json: the embedding and
    output matrices, per layer q/k/v/o and the three MLP matrices, and the norms."""
    width, layers = int(config["hidden_size"]), int(config["num_hidden_layers"])
    heads = int(config["num_attention_heads"])
    kv_width = int(config.get("num_key_value_heads") or heads) * (int(config.get("head_dim") or width // heads))
    vocab, inner = int(config["vocab_size"]), int(config["intermediate_size"])
    per_layer = 2 * width * width + 2 * width * kv_width + 3 * width * inner
    untied = 1 if config.get("tie_word_embeddings") else 2
    return untied * vocab * width + layers * per_layer, (2 * layers + 1) * width


def gguf_bytes(config: Mapping[str, Any], gguf_type: str) -> int:
    """A GGUF file of the LLM: its matrices at the type's bits a weight, its norms in f32, and the
    vocabulary in the header (about 32 bytes a token)."""
    matrices, vectors = llm_weights(config)
    return int(matrices * BITS_PER_WEIGHT[gguf_type] / 8) + 4 * vectors + 32 * int(config["vocab_size"]) + 2**16


def vision_bytes(folder: Path, config: Mapping[str, Any], eva_bytes: int) -> int:
    """The vision side in fp16: EVA (its file, fp16 as released) and what the checkpoint holds beside
    the LLM (the Q-Former and the projectors), at two bytes a weight."""
    per_weight = DTYPE_BYTES.get(str(config.get("torch_dtype") or "bfloat16"), 2)
    matrices, vectors = llm_weights(config)
    beside_llm = max(0, weights_bytes(folder) - (matrices + vectors) * per_weight)
    return eva_bytes + beside_llm * 2 // per_weight


def conversion_files(types: tuple[str, ...]) -> list[tuple[str, bool]]:
    """The files a conversion to ``types`` writes, in order, as (GGUF type or ``vision``, kept): the
    f32 or f16 file the quantizer reads first (an intermediate, deleted at the end, unless asked
    for), then the other types, then the vision side."""
    base = "f32" if "f32" in types else "f16"
    files = [(base, base in types)]
    if "f16" in types and base == "f32":
        files.append(("f16", True))
    return [*files, *((t, True) for t in types if t.startswith("q")), ("vision", True)]


def estimate_conversion(folder: Path, types: tuple[str, ...], eva_bytes: int) -> dict[str, int]:
    """Bytes each file of :func:`conversion_files` will take, from config.json and file sizes alone;
    their sum is the disk a conversion needs at its peak. ValueError when config.json does not
    describe the LLM."""
    config = config_of(Path(folder))
    try:
        return {kind: vision_bytes(Path(folder), config, eva_bytes) if kind == "vision" else gguf_bytes(config, kind)
                for kind, _ in conversion_files(types)}
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
        raise ValueError(f"{folder}: config.json does not give the LLM's sizes ({exc})") from None


def conversion_disk_bytes(folder: Path, data_dir: DataDir | str | os.PathLike[str],
                          types: tuple[str, ...] = (CPU_GGUF_TYPE,)) -> int:
    """The disk a conversion of ``folder`` needs at its peak (its EVA found as loading finds it)."""
    eva = find_part(EVA_FILE, Path(folder), search_dirs=search_dirs(data_dir))
    return sum(estimate_conversion(Path(folder), types, eva.stat().st_size if eva else 0).values())
