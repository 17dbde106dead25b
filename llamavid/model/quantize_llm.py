"""4-bit and 8-bit LLM weights through bitsandbytes (``--load-4bit`` / ``--load-8bit``).

Only the decoder layers' linears are quantized. The reference also quantized ``mm_projector``
(everything built before its vision parts were attached); here the projectors, EVA and the
Q-Former keep 16-bit weights, since they are small and their errors reach every visual token,
and ``lm_head`` stays as transformers leaves it under bitsandbytes.
"""
from __future__ import annotations

import torch
from torch import nn

BITS = (4, 8)


def _quantized(linear: nn.Linear, bits: int, compute_dtype: torch.dtype, device: torch.device) -> nn.Module:
    import bitsandbytes as bnb  # 8 s to import: only when 4/8-bit is asked for (see quantize_llm)

    bias = linear.bias is not None
    if bits == 4:
        q = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=bias, compute_dtype=compute_dtype,
                              compress_statistics=True, quant_type="nf4")
    else:
        q = bnb.nn.Linear8bitLt(linear.in_features, linear.out_features, bias=bias, has_fp16_weights=False,
                                threshold=6.0)
    q.load_state_dict({k: v.to("cpu", torch.float16 if bits == 8 else v.dtype) for k, v in linear.state_dict().items()})
    return q.to(device)  # bitsandbytes quantizes when the weight moves to its device


def quantize_llm(model, bits: int, compute_dtype: torch.dtype = torch.float16,
                 device: torch.device | str | None = None) -> int:
    """Replace the decoder's ``nn.Linear`` layers in place, layer by layer (peak memory: one layer).

    Returns the number of layers replaced. NF4 with double quantization, as the reference used.
    The quantized layers land on ``device``: a model loaded on the CPU goes to the GPU already
    quantized, so a 7B model never needs its 16-bit size in GPU memory.
    """
    if bits not in BITS:
        raise ValueError(f"bits must be 4 or 8, got {bits}")
    try:  # bitsandbytes takes ~8 s to import and is needed only here, so not at the top
        import bitsandbytes  # noqa: F401
    except ImportError as exc:
        raise RuntimeError("--load-4bit/--load-8bit need bitsandbytes: pip install bitsandbytes") from exc
    device = torch.device(device) if device is not None else model.lm_head.weight.device
    count = 0
    for layer in model.model.layers:
        for parent in layer.modules():
            for name, child in list(parent.named_children()):
                if isinstance(child, nn.Linear):
                    setattr(parent, name, _quantized(child, bits, compute_dtype, device))
                    count += 1
    model.config.quantization = f"bnb-{bits}bit"
    return count
