"""Random Qwen3-VL-2B-Instruct weights at full size in the released layout, written shard by shard.

``llamavid bench family`` needs a full-size Qwen3-VL without a download: speed and memory do not
depend on the values. The files are those of ``Qwen/Qwen3-VL-2B-Instruct``: ``config.json`` with
the published sizes (:data:`QWEN3_VL_2B`), bf16 ``model-0000k-of-0000n.safetensors`` shards with
``model.safetensors.index.json`` under the released tensor names (the model is built on the meta
device for its names and shapes; one shard is in memory at a time), ``generation_config.json``, the
processor files and a tokenizer. The tokenizer is the tiny writer's
(:func:`llamavid.model.qwen_vl_tiny.write_qwen_tokenizer`: Qwen2's pre-tokenizer, Qwen3-VL's added
tokens in their order) and the config's vocabulary is the released 151,936, so the embedding and
the output matrix have their full size; llama.cpp's converter pads the vocabulary to it.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from cli.bench.random_weights import _shards, draw
from llamavid.model.qwen_vl_tiny import _processor_files, token_id, write_qwen_tokenizer, write_tiny_qwen_vl
from llamavid.storage import atomic_write

__all__ = ["QWEN3_VL_2B", "is_written", "write_qwen_weights"]

#: ``config.json`` of ``Qwen/Qwen3-VL-2B-Instruct`` as published (sizes; the token ids are set from
#: the stand-in tokenizer by :func:`config_for`): a 28-layer Qwen3 text model of width 2048 (16 heads,
#: 8 KV heads of 128, MLP 6144, tied embeddings) and a 24-block vision tower of width 1024 with
#: DeepStack taps after blocks 5, 11 and 17.
QWEN3_VL_2B: dict = {
    "architectures": ["Qwen3VLForConditionalGeneration"], "model_type": "qwen3_vl", "tie_word_embeddings": True,
    "text_config": {
        "model_type": "qwen3_vl_text", "vocab_size": 151936, "hidden_size": 2048, "intermediate_size": 6144,
        "num_hidden_layers": 28, "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 128,
        "hidden_act": "silu", "max_position_embeddings": 262144, "rms_norm_eps": 1e-6, "attention_bias": False,
        "attention_dropout": 0.0, "initializer_range": 0.02,
        "rope_scaling": {"rope_type": "default", "mrope_section": [24, 20, 20], "mrope_interleaved": True},
        "rope_theta": 5000000, "tie_word_embeddings": True, "use_cache": True, "dtype": "bfloat16",
    },
    "vision_config": {
        "model_type": "qwen3_vl", "depth": 24, "hidden_size": 1024, "intermediate_size": 4096, "num_heads": 16,
        "hidden_act": "gelu_pytorch_tanh", "in_channels": 3, "patch_size": 16, "spatial_merge_size": 2,
        "temporal_patch_size": 2, "out_hidden_size": 2048, "num_position_embeddings": 2304,
        "deepstack_visual_indexes": [5, 11, 17], "initializer_range": 0.02,
    },
    "dtype": "bfloat16", "transformers_version": "4.57.0.dev0",
}
MARKER = ".family-weights.json"  # written last: the folder is complete


def config_for() -> dict:
    """:data:`QWEN3_VL_2B` with the stand-in tokenizer's ids for the special tokens."""
    raw = json.loads(json.dumps(QWEN3_VL_2B))
    raw.update(image_token_id=token_id("<|image_pad|>"), video_token_id=token_id("<|video_pad|>"),
               vision_start_token_id=token_id("<|vision_start|>"), vision_end_token_id=token_id("<|vision_end|>"))
    raw["text_config"].update(bos_token_id=token_id("<|endoftext|>"), eos_token_id=token_id("<|im_end|>"))
    return raw


def is_written(folder: Path, size: str) -> bool:
    return (Path(folder) / MARKER).is_file() and json.loads((Path(folder) / MARKER).read_text()).get("size") == size


def write_qwen_weights(folder: str | Path, size: str = "2b", shard_bytes: int = 2 * 2**30, seed: int = 0) -> Path:
    """Write the checkpoint of ``size`` (``2b``: full size, bf16 shards; ``tiny``: the tests' tiny model)."""
    folder = Path(folder)
    (folder / MARKER).unlink(missing_ok=True)
    if size == "tiny":
        write_tiny_qwen_vl(folder, seed=seed)
    elif size == "2b":
        _write_full(folder, shard_bytes, seed)
    else:
        raise ValueError(f"size must be 2b or tiny, got {size!r}")
    with atomic_write(folder / MARKER, "w") as fh:
        fh.write(json.dumps({"size": size}))
    return folder


def _write_full(folder: Path, shard_bytes: int, seed: int) -> None:
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    folder.mkdir(parents=True, exist_ok=True)
    write_qwen_tokenizer(folder)
    raw = config_for()
    (folder / "config.json").write_text(json.dumps(raw, indent=2), encoding="utf-8")
    _processor_files(folder)  # the released preprocessor files, as the tiny writer writes them
    eos = [token_id("<|im_end|>"), token_id("<|endoftext|>")]
    (folder / "generation_config.json").write_text(json.dumps({
        "bos_token_id": token_id("<|endoftext|>"), "pad_token_id": token_id("<|endoftext|>"), "eos_token_id": eos,
        "do_sample": True, "top_k": 20, "top_p": 0.8, "temperature": 0.7}, indent=2), encoding="utf-8")
    config = Qwen3VLConfig(**{k: v for k, v in raw.items() if k not in ("architectures", "transformers_version")})
    with torch.device("meta"):
        model = Qwen3VLForConditionalGeneration(config)
    entries = [(k, v.shape) for k, v in model.state_dict().items() if k != "lm_head.weight"]  # tied: stored once
    shards = _shards(entries, shard_bytes, 2)
    gen = torch.Generator().manual_seed(seed)
    weight_map, total = {}, 0
    for i, part in enumerate(shards, start=1):
        name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        tensors = {k: draw(k, shape, gen, torch.bfloat16) for k, shape in part}
        total += sum(t.numel() * 2 for t in tensors.values())
        save_file(tensors, str(folder / (name + ".part")), metadata={"format": "pt"})
        (folder / (name + ".part")).replace(folder / name)
        weight_map.update({k: name for k in tensors})
        del tensors
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2), encoding="utf-8")
