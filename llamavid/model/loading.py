"""Load LLaMA-VID checkpoints in their released layout, without the reference's traps.

A released folder holds ``config.json``, sharded ``pytorch_model-*.bin`` (bf16) with an index
(or safetensors), the LLaMA tokenizer and, inside the shards, a bf16 copy of EVA. The reference
re-read EVA from a separate ``eva_vit_g.pth`` found by a path relative to the working directory,
and the Q-Former vocabulary from a hub download. Here every file is looked up in the checkpoint
folder first, then in the places the caller names; a missing or corrupt file is named in the error.
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

from llamavid.errors import CheckpointError
from llamavid.files import (
    CONFIG,
    EVA_FILE,
    INDEX_FILES,
    PROJECTOR_FILE,
    QFORMER_CONFIG,
    SINGLE_FILES,
    VOCAB_FILE,
    find_part,
    weight_index,
)
from llamavid.model.config import LlamaVidConfig
from llamavid.model.eva import EvaConfig, load_eva_file, prepare_eva_state
from llamavid.model.modeling import LlamaVidForCausalLM

VISION_PREFIX = "model.vision_tower.vision_tower."
# Buffers some transformers versions saved; they are recomputed, never read.
OPTIONAL_KEYS = re.compile(r"(rotary_emb\.inv_freq|embeddings\.position_ids)$")


def read_tensor_file(path: Path) -> dict[str, torch.Tensor]:
    """One shard, memory-mapped so a 10 GB shard does not need 10 GB of RAM to open."""
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint shard is missing; download the checkpoint again")
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # truncated zip, bad pickle, wrong format: all mean "replace the file"
        raise CheckpointError(f"{path}: cannot read this checkpoint file ({exc.__class__.__name__}: "
                              f"{str(exc)[:200]}); it is corrupt or incomplete, download it again") from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: holds a {type(state).__name__}, not a state dict")
    return state


def checkpoint_files(folder: Path) -> list[Path]:
    """The torch weight files of a folder, from its index when there is one (the GGUF files of a
    converted folder are llama.cpp's; torch reads its vision side)."""
    names = [n for n in weight_index(folder)[2] if not n.endswith(".gguf")]
    if names:
        return [folder / n for n in names]
    raise CheckpointError(f"{folder}: no weights found (expected {INDEX_FILES[1]} with its shards, "
                          f"{SINGLE_FILES[0]} or {SINGLE_FILES[1]})")


def read_checkpoint(folder: Path, base: Path | None = None) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint; a stage-1 (``*-pretrain-*``) folder takes its LLM from ``base``.

    Those folders hold only ``mm_projector.bin`` (projectors and Q-Former); the reference could
    not load them for inference at all.
    """
    files = checkpoint_files(folder)
    state: dict[str, torch.Tensor] = {}
    if [f.name for f in files] == [PROJECTOR_FILE]:
        if base is None:
            raise CheckpointError(f"{folder}: holds only the stage-1 projector (mm_projector.bin); give its base "
                                  "LLM (--base, e.g. vicuna-7b-v1.5 from `llamavid models pull`)")
        base_state = read_checkpoint(Path(base))
        state.update({k: v for k, v in base_state.items() if k.startswith(LLM_PREFIXES)})
    for path in files:
        state.update(read_tensor_file(path))
    return state


def vision_state(ckpt: Mapping[str, torch.Tensor], eva_path: Path | None) -> tuple[dict, int | None]:
    """EVA weights (prefer the fp16 ``eva_vit_g.pth`` as the reference does) and the depth to build."""
    copy = {k[len(VISION_PREFIX):]: v for k, v in ckpt.items() if k.startswith(VISION_PREFIX)}
    depth = len({k.split(".")[1] for k in copy if k.startswith("blocks.")}) or None
    if eva_path is not None:
        return load_eva_file(eva_path), depth
    return copy, depth


@dataclass
class LoadReport:
    """What loading found, for ``doctor``-style output and tests."""

    folder: Path
    eva_file: Path | None
    vocab_file: Path | None
    ignored_keys: list[str] = field(default_factory=list)
    ignored_config_fields: list[str] = field(default_factory=list)


LLM_PREFIXES = ("model.embed_tokens.", "model.layers.", "model.norm.", "lm_head.")


def drop_llm(model: LlamaVidForCausalLM) -> None:
    """Remove the LLM's modules when another engine (llama.cpp) runs the LLM: no memory for them."""
    model.model.layers = nn.ModuleList()
    model.model.embed_tokens = nn.Identity()
    model.model.norm = nn.Identity()
    model.lm_head = nn.Identity()
    model.config.llm_in_torch = False


def build_state(config: LlamaVidConfig, ckpt: dict[str, torch.Tensor], eva: dict,
                expected: Iterable[str]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Match checkpoint tensors to the model's names; refuse anything missing or unexpected."""
    state = {k: v for k, v in ckpt.items() if not k.startswith(VISION_PREFIX) and not OPTIONAL_KEYS.search(k)}
    ignored = sorted(k for k in ckpt if OPTIONAL_KEYS.search(k))
    if config.mm_vision_tower:
        cfg = EvaConfig.from_state_dict(eva, config.image_size, config.vision_depth)
        try:
            state.update({VISION_PREFIX + k: v for k, v in prepare_eva_state(eva, cfg).items()})
        except ValueError as exc:
            raise CheckpointError(f"vision weights: {exc}") from exc
    expected = [k for k in expected if not OPTIONAL_KEYS.search(k)]
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint does not fit the model: {len(missing)} missing ({', '.join(missing[:4])}) and "
            f"{len(unexpected)} unexpected ({', '.join(unexpected[:4])}) tensors")
    for key, value in state.items():
        if not value.is_floating_point() and not key.endswith("position_ids"):
            raise CheckpointError(f"tensor {key} has dtype {value.dtype}, expected floating point")
    return state, ignored


def fill_buffers(model: LlamaVidForCausalLM) -> None:
    """Give the buffers no checkpoint holds their computed values (they are meta after loading)."""
    emb = model.model.vlm_att_encoder.bert.embeddings
    emb.position_ids = torch.arange(emb.position_embeddings.num_embeddings).unsqueeze(0)
    model.model.rotary_emb = LlamaRotaryEmbedding(config=model.config)
    meta = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if meta:
        raise CheckpointError(f"no value for {len(meta)} tensors, e.g. {meta[:3]}")


def place(model: LlamaVidForCausalLM, device: torch.device | str,
          dtype: torch.dtype | None = None) -> LlamaVidForCausalLM:
    """Move and cast, keeping RoPE's inverse frequencies in float32 as the reference computed them.

    ``dtype`` None only moves (quantized layers must not be cast).
    """
    model = model.to(device=device, dtype=dtype) if dtype is not None else model.to(device)
    model.model.rotary_emb = LlamaRotaryEmbedding(config=model.config).to(device)
    return model


def load_llamavid(folder: str | Path, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                  eva_file: str | Path | None = None, vocab_file: str | Path | None = None,
                  search_dirs: Iterable[Path] = (), load_vision: bool = True,
                  attn_implementation: str = "sdpa", config_overrides: Mapping | None = None,
                  image_size: int | None = None, llm: bool = True,
                  base: str | Path | None = None) -> tuple[LlamaVidForCausalLM, LoadReport]:
    """Build the model from a checkpoint folder in the released layout.

    ``llm=False`` loads only the vision side (for a GGUF LLM run by llama.cpp, or feature work).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: not a folder; give a LLaMA-VID checkpoint folder or an installed model name")
    search_dirs = list(search_dirs)
    overrides = dict(config_overrides or {})
    if image_size:
        overrides["image_size"] = image_size
    config = LlamaVidConfig.from_file(folder / CONFIG, **overrides)
    qcfg_file = folder / QFORMER_CONFIG
    if qcfg_file.is_file():
        config.qformer = {**json.loads(qcfg_file.read_text()), **config.qformer}
    ckpt = read_checkpoint(folder, Path(base) if base else None)
    eva_path = find_part(EVA_FILE, folder, eva_file, search_dirs) if load_vision else None
    eva, depth = vision_state(ckpt, eva_path) if load_vision else ({}, None)
    if load_vision and not eva:
        raise CheckpointError(f"{folder}: no vision weights: put {EVA_FILE} in the folder, in a shared models "
                              "folder, or pass its path (--vision PATH)")
    config.mm_vision_tower = EVA_FILE if load_vision else None
    if load_vision:
        probe = EvaConfig.from_state_dict(eva, config.image_size, depth or config.vision_depth)
        config.vision_depth, config.vision_mlp_hidden = probe.depth, probe.mlp_hidden
    config.qformer.setdefault("num_hidden_layers", qformer_layers(ckpt))
    word = ckpt.get("model.vlm_att_encoder.bert.embeddings.word_embeddings.weight")
    if word is not None:
        config.qformer["vocab_size"] = int(word.shape[0])
    config._attn_implementation = attn_implementation
    with torch.device("meta"):
        model = LlamaVidForCausalLM(config)
    if not llm:
        drop_llm(model)
        ckpt = {k: v for k, v in ckpt.items() if not k.startswith(LLM_PREFIXES)}
    state, ignored = build_state(config, ckpt, eva, model.state_dict().keys())
    model.load_state_dict(state, strict=False, assign=True)
    fill_buffers(model)
    model = place(model, device, dtype)
    model.eval().requires_grad_(False)
    vocab = find_part(VOCAB_FILE, folder, vocab_file, search_dirs)
    return model, LoadReport(folder, eva_path, vocab, ignored, getattr(config, "ignored_fields", []))


def qformer_layers(ckpt: Mapping[str, torch.Tensor]) -> int:
    found = {int(m.group(1)) for k in ckpt if (m := re.search(r"vlm_att_encoder\.bert\.encoder\.layer\.(\d+)\.", k))}
    return max(found) + 1 if found else 12
