"""Write a model in the released layout, so this loader, the reference and other tools all read it:
sharded ``pytorch_model-*.bin`` (bf16, like the released files) with its index and ``config.json``
in the released spelling."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from llamavid.files import CONFIG, INDEX_FILES, QFORMER_CONFIG
from llamavid.model.config import LlamaVidConfig
from llamavid.model.modeling import LlamaVidForCausalLM
from llamavid.storage import atomic_write


def released_config(config: LlamaVidConfig, dtype: torch.dtype = torch.bfloat16) -> dict:
    """``config.json`` as the released checkpoints spell it, so other tools read our saves too."""
    values = {k: v for k, v in config.to_dict().items() if k not in ("rope_parameters", "ignored_fields",
                                                                      "released_dtype", "dtype", "qformer")}
    rope = config.rope_parameters or {}
    values["rope_theta"] = rope.get("rope_theta", 10000.0)
    values["rope_scaling"] = ({"type": "linear", "factor": rope["factor"]}
                              if rope.get("rope_type") == "linear" else None)
    values.update(model_type="llava", architectures=["LlavaLlamaAttForCausalLM"],
                  torch_dtype=str(dtype).replace("torch.", ""), mm_vision_tower="./model_zoo/LAVIS/eva_vit_g.pth",
                  image_processor=f"./llamavid/processor/clip-patch14-{config.image_size}")
    return values


def save_released(model: LlamaVidForCausalLM, folder: str | Path, dtype: torch.dtype = torch.bfloat16,
                  max_shard_bytes: int = 10 * 2**30) -> Path:
    """Write sharded ``pytorch_model-*.bin`` + index + ``config.json``, the layout this loader reads.

    Floating tensors are stored in ``dtype`` (bf16 like the released files); the EVA copy is
    included as in full checkpoints.
    """
    config = model.config
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: (v.detach().to("cpu", dtype) if v.is_floating_point() else v.detach().cpu()).contiguous()
             for k, v in model.state_dict().items()}
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = tensor
        size += nbytes
    weight_map = {}
    for i, shard in enumerate(shards, 1):
        name = f"pytorch_model-{i:05d}-of-{len(shards):05d}.bin"
        with atomic_write(folder / name) as fh:
            torch.save(shard, fh)
        weight_map.update({k: name for k in shard})
    total = sum(t.numel() * t.element_size() for t in state.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / INDEX_FILES[1]).write_text(json.dumps(index, indent=2))
    (folder / CONFIG).write_text(json.dumps(released_config(config, dtype), indent=2))
    if config.qformer:
        (folder / QFORMER_CONFIG).write_text(json.dumps(config.qformer, indent=2))
    return folder
