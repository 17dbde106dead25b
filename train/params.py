"""Which weights a run trains, how they are grouped for AdamW, and what frozen weights are stored in."""
from __future__ import annotations

import re

import torch
from torch import nn

from train.config import matches


def set_trainable(model: nn.Module, prefixes: tuple[str, ...]) -> list[str]:
    """Train exactly the parameters under ``prefixes``; returns their names.

    The last Q-Former layer's text feed-forward is left frozen: only the query rows leave the
    Q-Former, so those weights never receive a gradient (nor did they in the reference). Frozen,
    they cannot leave DDP or FSDP waiting for a gradient that never comes.
    """
    unused = unused_qformer_params(model)
    names = []
    for name, param in model.named_parameters():
        train = matches(name, prefixes) and name not in unused
        param.requires_grad_(train)
        if train:
            names.append(name)
    return names


def unused_qformer_params(model: nn.Module) -> set[str]:
    layers = [int(m.group(1)) for n, _ in model.named_parameters()
              if (m := re.search(r"vlm_att_encoder\.bert\.encoder\.layer\.(\d+)\.", n))]
    if not layers:
        return set()
    last = f"model.vlm_att_encoder.bert.encoder.layer.{max(layers)}."
    return {n for n, _ in model.named_parameters() if n.startswith((last + "intermediate.", last + "output."))}


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups as transformers' Trainer makes them: no decay for biases and norms."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        lowered = name.lower()
        (no_decay if name.endswith(".bias") or "norm" in lowered or "vlm_att_ln" in name else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def cast_frozen(model: nn.Module, dtype: torch.dtype) -> None:
    """Store frozen floating weights in ``dtype`` (bf16 on GPU): a frozen 7B LLM then needs 13 GB, not 27.

    Trainable weights stay float32: AdamW updates of size lr x ~1 are below bf16's resolution.
    """
    for param in model.parameters():
        if not param.requires_grad and param.is_floating_point() and param.dtype != dtype:
            param.data = param.data.to(dtype)


def count(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    return sum(p.numel() for p in model.parameters() if p.requires_grad), total
