"""Random LLaMA-VID weights at full size in the released layout, written shard by shard.

:func:`llamavid.model.saving.save_released` holds the whole state dict in memory (16 GB in bf16 for
the 7B long-video model); this writes the same files (``pytorch_model-0000k-of-0000n.bin`` + index,
``config.json`` as released, ``eva_vit_g.pth`` with its spare 40th block, the Q-Former vocabulary
and a SentencePiece tokenizer) holding one shard at a time: the model is built on the meta device
for its names and shapes, and each tensor is drawn as the reference initialises it
(:func:`cli.bench.harness.init_reference_`: N(0, 0.02) matrices, zero biases, unit norms) just
before its shard is written. Speed does not depend on the values, so these stand in for a
download in ``llamavid bench rehearse``.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from cli.bench.plan import INIT_STD
from llamavid.files import CONFIG, EVA_FILE, INDEX_FILES, QFORMER_CONFIG, VOCAB_FILE
from llamavid.model.config import LlamaVidConfig
from llamavid.model.eva import EvaConfig, EvaViT
from llamavid.model.modeling import LlamaVidForCausalLM, eva_config
from llamavid.model.tiny import bert_vocab, write_llama_tokenizer
from llamavid.storage import atomic_write

#: ``config.json`` of the released ``llama-vid-7b-full-224-long-video`` (llamavid-spec section 1.2).
LONG_VIDEO_7B: dict = {
    "_name_or_path": "./work_dirs/llava-v1.5-7b-full-224-video-att-after-eva-lavispt-pro-freeze-compress-meancat"
                     "-imgsp-v1-b4-g4",
    "architectures": ["LlavaLlamaAttForCausalLM"], "model_type": "llava", "bert_type": "qformer_pretrain_freeze",
    "compress_type": "mean_concat", "cross_att_freq": 2, "debug_use": False, "freeze_mm_mlp_adapter": False,
    "fusion_type": "attention_concat_all_query", "hidden_act": "silu", "hidden_size": 4096,
    "image_aspect_ratio": "pad", "image_grid_pinpoints": None,
    "image_processor": "./model_zoo/OpenAI/clip-vit-large-patch14", "initializer_range": 0.02,
    "intermediate_size": 11008, "max_position_embeddings": 4096, "max_token": 65536, "mm_hidden_size": 1408,
    "mm_projector_type": "mlp2x_gelu", "mm_use_im_patch_token": False, "mm_use_im_start_end": False,
    "mm_vision_select_feature": "patch", "mm_vision_select_layer": -2,
    "mm_vision_tower": "./model_zoo/LAVIS/eva_vit_g.pth", "num_attention_heads": 32, "num_hidden_layers": 32,
    "num_key_value_heads": 32, "num_qformer": 32, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2,
    "position_type": None, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
    "rope_scaling": {"factor": 16.0, "type": "linear"}, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "transformers_version": "4.31.0", "tune_mm_mlp_adapter": False, "use_cache": True, "use_mm_proj": True,
    "use_raw_query_trans": False, "vocab_size": 32000,
}
#: The same config shrunk for ``--size tiny`` (every LLM row a multiple of 256, llama.cpp's K-quant
#: block; EVA one block, at EVA's width so the film's features are full-size; a small Q-Former in
#: ``qformer_config.json``).
TINY_CHANGES: dict = {"hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2, "num_attention_heads": 4,
                      "num_key_value_heads": 4, "vocab_size": 320, "vision_depth": 1, "vision_mlp_hidden": 256}
TINY_QFORMER = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128,
                "vocab_size": len(bert_vocab()) + 1}
SIZES = ("7b", "tiny")
MARKER = ".rehearsal-weights.json"  # written last: the folder is complete


def released_values(size: str) -> dict:
    """The ``config.json`` written for ``size`` (``7b``: exactly the released long-video one)."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {', '.join(SIZES)}, got {size!r}")
    return {**LONG_VIDEO_7B, **(TINY_CHANGES if size == "tiny" else {})}


def model_config(size: str) -> LlamaVidConfig:
    return LlamaVidConfig.from_released(released_values(size),
                                        **({"qformer": TINY_QFORMER} if size == "tiny" else {}))


def draw(name: str, shape: torch.Size, gen: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """One tensor as :func:`cli.bench.harness.init_reference_` draws it, in ``dtype``."""
    if name.endswith("bias"):
        return torch.zeros(shape, dtype=dtype)
    if len(shape) == 1:
        return torch.ones(shape, dtype=dtype)
    return torch.empty(shape, dtype=torch.float32).normal_(0.0, INIT_STD, generator=gen).to(dtype)


def checkpoint_entries(config: LlamaVidConfig) -> list[tuple[str, torch.Size]]:
    """Names and shapes of what a released checkpoint stores: every parameter (the EVA copy
    included) and the Q-Former's ``position_ids``; the model itself stays on the meta device."""
    with torch.device("meta"):
        model = LlamaVidForCausalLM(config)
    params = dict(model.named_parameters())
    return [(k, v.shape) for k, v in model.state_dict().items() if k in params or k.endswith("position_ids")]


def _shards(entries: list[tuple[str, torch.Size]], max_bytes: int, itemsize: int) -> list[list[tuple[str, torch.Size]]]:
    shards: list[list] = [[]]
    size = 0
    for name, shape in entries:
        nbytes = shape.numel() * itemsize
        if shards[-1] and size + nbytes > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append((name, shape))
        size += nbytes
    return shards


def _tensors(part: list[tuple[str, torch.Size]], gen: torch.Generator, dtype: torch.dtype) -> Iterator[tuple]:
    for name, shape in part:
        if name.endswith("position_ids"):
            yield name, torch.arange(shape[-1]).expand(shape).contiguous()
        else:
            yield name, draw(name, shape, gen, dtype)


def write_eva(path: Path, config: LlamaVidConfig, seed: int) -> Path:
    """``eva_vit_g.pth`` as BLIP-2 ships it: fp16, one spare block past the 39 the model uses."""
    used = eva_config(config)
    file_cfg = EvaConfig(224, used.patch_size, used.width, used.depth + 1, used.mlp_hidden)
    with torch.device("meta"):
        shapes = [(k, v.shape) for k, v in EvaViT(file_cfg).state_dict().items()]
    gen = torch.Generator().manual_seed(seed)
    state = {k: draw(k, s, gen, torch.float32).to(torch.float16) for k, s in shapes}
    with atomic_write(path) as fh:
        torch.save(state, fh)
    return path


def is_written(folder: Path, size: str) -> bool:
    marker = Path(folder) / MARKER
    try:
        return json.loads(marker.read_text())["size"] == size
    except (OSError, ValueError, KeyError):
        return False


def write_random_checkpoint(folder: str | Path, size: str = "7b", shard_bytes: int = 4 * 2**30, seed: int = 0,
                            say: Callable[[str], None] = lambda _: None) -> Path:
    """Write the random checkpoint folder (a complete one for ``size`` is kept as it is)."""
    folder = Path(folder)
    if is_written(folder, size):
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MARKER).unlink(missing_ok=True)
    values, config = released_values(size), model_config(size)
    dtype = torch.bfloat16
    entries = checkpoint_entries(config)
    shards = _shards(entries, shard_bytes, dtype.itemsize)
    weight_map: dict[str, str] = {}
    total = 0
    for i, part in enumerate(shards, 1):
        name = f"pytorch_model-{i:05d}-of-{len(shards):05d}.bin"
        say(f"writing {name} ({len(part)} tensors)")
        shard = dict(_tensors(part, torch.Generator().manual_seed(seed + i), dtype))
        total += sum(t.numel() * t.element_size() for t in shard.values())
        with atomic_write(folder / name) as fh:
            torch.save(shard, fh)
        weight_map.update({k: name for k in shard})
        del shard
    (folder / INDEX_FILES[1]).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map},
                                                    indent=2))
    (folder / CONFIG).write_text(json.dumps(values, indent=2))
    if size == "tiny":
        (folder / QFORMER_CONFIG).write_text(json.dumps(TINY_QFORMER, indent=2))
    say(f"writing {EVA_FILE}")
    write_eva(folder / EVA_FILE, config, seed + 1000)
    (folder / VOCAB_FILE).write_text("\n".join(bert_vocab()) + "\n")
    write_llama_tokenizer(folder)  # 320 real pieces; the GGUF pads the rest of the 32,000 rows
    (folder / MARKER).write_text(json.dumps({"size": size, "seed": seed, "shards": len(shards),
                                             "bytes": total}))
    return folder
