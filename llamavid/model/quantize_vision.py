"""Faster vision inference on CPU: int8 dynamic quantization of EVA's (and the Q-Former's) Linear layers.

Why: on a CPU without AVX-512 / AMX, EVA-ViT-g is nothing but fp32 matrix products (about
500 GFLOP per 224-px frame), already near the cores' fp32 peak; bf16 is 4x *slower* there
(no bf16 hardware). fbgemm's int8 kernels do about twice the multiply-adds per cycle on AVX2,
so int8 is the one large CPU win left: measured ~2x on EVA, with features within cosine ~0.999
of fp32 (see ``llamavid bench``). It loses a little accuracy, so it is an option, never the default.

How: weights are quantized once, per output channel (as accurate as per-tensor here and no
slower); activations are quantized on the fly per call ("dynamic"), so no calibration data is
needed. The patch-embedding convolution, LayerNorms, attention products and softmax stay fp32.

Caveats:

* CPU and float32 only (the quantized kernels are CPU kernels); on a GPU use fp16 / bf16.
* It modifies the model in place and cannot be undone; load the model again for fp32.
* Do not save a quantized model as a checkpoint: the state dict no longer matches the released layout.
* ``torch.ao.quantization`` is deprecated in torch 2.13 ("will be removed" warning, silenced here).
  It is the only dynamic int8 Linear that ships with torch itself today; when it goes, port this
  module to ``torchao`` (``Int8DynamicActivationInt8WeightConfig``) - the callers need not change.
"""
from __future__ import annotations

import copy
import warnings
from collections.abc import Iterator

import torch
from torch import nn
from torch.ao.nn.quantized import dynamic as nnqd
from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

from llamavid.model.eva import EvaVisionTower, EvaViT

__all__ = ["MODES", "QFORMER_PARTS", "int8_copy", "quantize_vision", "quantized_linears"]

#: ``mode`` values of :func:`quantize_vision`; "none" makes option plumbing simple.
MODES = ("none", "int8")

# "torch.ao.quantization is deprecated ..." and "torch.quantize_per_tensor, ... are deprecated ..."
_DEPRECATION_MESSAGES = r"(torch\.ao\.quantization is deprecated|torch\.quantize_per_tensor)"

#: The Q-Former-side modules of ``LlamaVidModel`` worth quantizing: the ones that run on every
#: patch or query row. ``vlm_att_val_projector`` and ``mm_projector`` see one pooled row per
#: frame (no measurable time) and write the LLM's input directly, so they stay fp32.
QFORMER_PARTS = ("vlm_att_encoder", "vlm_att_projector", "vlm_att_key_projector")


def _container(model: nn.Module) -> nn.Module:
    """The module that holds ``vision_tower`` and the Q-Former parts (``LlamaVidModel``), or ``model`` itself."""
    inner = getattr(model, "model", None)
    if isinstance(inner, nn.Module) and hasattr(inner, "vlm_att_encoder"):
        return inner
    return model


def _vision_root(model: nn.Module) -> nn.Module | None:
    """EVA inside a full model, a LlamaVidModel, an ``EvaVisionTower`` or a bare ``EvaViT``."""
    if isinstance(model, (EvaVisionTower, EvaViT)):
        return model
    return getattr(_container(model), "vision_tower", None)


def _check_float32_cpu(module: nn.Module, what: str) -> None:
    """Refuse early with advice instead of failing deep inside torch's quantized kernels."""
    for name, p in module.named_parameters():
        if p.device.type != "cpu":
            raise ValueError(f"int8 quantization of {what} runs on CPU only, but {name} is on {p.device}; "
                             "on a GPU use --dtype fp16 or bf16 instead")
        if p.dtype != torch.float32:
            raise ValueError(f"int8 quantization of {what} needs float32 weights, but {name} is {p.dtype}; "
                             "load the model with dtype fp32 first")


def _fuse_eva_biases(eva: nn.Module) -> None:
    """EVA's attention feeds ``qkv.weight`` to F.linear itself; give it a plain biased Linear first."""
    for module in eva.modules():
        fuse = getattr(module, "fuse_qkv_bias", None)
        if callable(fuse):
            fuse()


def _quantize_dynamic_int8(root: nn.Module, names: list[str] | None) -> None:
    """Swap every nn.Linear under ``root`` (or under its children ``names``) for a dynamic int8 Linear."""
    spec: dict = ({name: per_channel_dynamic_qconfig for name in names} if names is not None
                  else {nn.Linear: per_channel_dynamic_qconfig})
    with warnings.catch_warnings():
        # torch 2.13 marks torch.ao.quantization and quantized tensors deprecated; both still work
        # (see the module docstring). Only these two messages are silenced, only here.
        warnings.filterwarnings("ignore", message=_DEPRECATION_MESSAGES)
        quantize_dynamic(root, spec, dtype=torch.qint8, mapping={nn.Linear: nnqd.Linear}, inplace=True)


def quantize_vision(model: nn.Module, mode: str = "int8", *, vision: bool = True,
                    qformer: bool = False) -> nn.Module:
    """Quantize the vision side of ``model`` in place for faster CPU inference; returns ``model``.

    Args:
        model: a ``LlamaVidForCausalLM``, its ``LlamaVidModel``, an ``EvaVisionTower`` or an ``EvaViT``,
            in float32 on the CPU.
        mode: "int8" (dynamic int8 Linear layers) or "none" (do nothing).
        vision: quantize EVA's Linear layers (about 2x faster EVA; cosine ~0.999 to fp32).
        qformer: also quantize the Q-Former and the projectors that run per patch or query row
            (:data:`QFORMER_PARTS`, the per-question work; about 1.4x on 2 CPU cores).
    """
    if mode not in MODES:
        raise ValueError(f"unknown quantization mode {mode!r}: use one of {', '.join(MODES)}")
    if mode == "none" or not (vision or qformer):
        return model
    if vision:
        eva = _vision_root(model)
        if eva is None:
            raise ValueError("this model has no vision tower to quantize (was it loaded without vision?); "
                             "pass vision=False to quantize only the Q-Former")
        _check_float32_cpu(eva, "the vision tower")
        _fuse_eva_biases(eva)
        _quantize_dynamic_int8(eva, None)
    if qformer:
        holder = _container(model)
        names = [n for n in QFORMER_PARTS if isinstance(getattr(holder, n, None), nn.Module)]
        if not names:
            raise ValueError(f"{type(model).__name__} has no Q-Former to quantize; pass a LlamaVidForCausalLM "
                             "or its .model, or qformer=False")
        for name in names:
            _check_float32_cpu(getattr(holder, name), name)
        _quantize_dynamic_int8(holder, names)
    return model


def int8_copy(module: nn.Module) -> nn.Module:
    """A copy of ``module`` (an EVA tower or a Q-Former, float32 on the CPU) whose Linear layers are
    dynamic int8; ``module`` itself is left as it was. Only the Linear weights are new (a quarter of
    their float32 bytes); every other tensor is shared with ``module``."""
    _check_float32_cpu(module, type(module).__name__)
    memo = {id(t): t for t in (*module.parameters(), *module.buffers())}
    twin = copy.deepcopy(module, memo)  # new module objects, same tensors
    _fuse_eva_biases(twin)
    _quantize_dynamic_int8(twin, None)
    return twin.eval()


def quantized_linears(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """(name, module) of every dynamic int8 Linear in ``model``: for tests and ``doctor``-style reports."""
    for name, module in model.named_modules():
        if isinstance(module, nnqd.Linear):
            yield name, module
