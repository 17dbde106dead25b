"""LoRA and QLoRA (peft) on the LLM's linear layers, merged into plain weights when saved.

Adapters go on the decoder layers' seven projections only (``q/k/v/o_proj``, ``gate/up/down_proj``),
never on EVA, the Q-Former, the projectors or ``lm_head`` - the reference's ``find_all_linear_names``
rule. With ``bits=4`` (QLoRA) those layers are first quantized to NF4 with double quantization by
bitsandbytes. Saving merges ``W + B A x alpha / r`` (into the dequantized weight under QLoRA), so
the result is an ordinary checkpoint that ``LlamaVid.load`` reads; no peft needed to chat.

Memory (7B, stage 2, see :func:`estimate_gib`): LoRA on a bf16 LLM is about 20 GiB with the
multimodal modules frozen (``--lora-freeze-multimodal``); QLoRA about 14 GiB while also training
the Q-Former and projectors, so QLoRA is the recipe for one 24 GB GPU.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from llamavid.errors import UserError, require
from llamavid.model.modeling import eva_config
from llamavid.model.quantize_llm import quantize_llm

LLM_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def lora_targets(model: nn.Module) -> list[str]:
    """Full names of the decoder layers' linear projections."""
    return [name for name, _ in model.named_modules()
            if name.startswith("model.layers.") and name.rsplit(".", 1)[-1] in LLM_LINEARS]


def add_lora(model: nn.Module, r: int, alpha: int, dropout: float, bits: int = 16,
             compute_dtype: torch.dtype = torch.bfloat16, device: torch.device | str = "cpu") -> list[str]:
    """Quantize (``bits=4``) and wrap the LLM linears with adapters, in place; returns the targets.

    peft marks only adapter weights trainable; the caller re-enables the multimodal modules it trains.
    """
    if bits not in (4, 16):
        raise UserError(f"--bits must be 16 (LoRA) or 4 (QLoRA), got {bits}")
    peft = require("peft", purpose="LoRA / QLoRA training")
    targets = lora_targets(model)
    if not targets:
        raise UserError("the model has no decoder-layer linears to put LoRA adapters on")
    if bits == 4:
        require("bitsandbytes", purpose="QLoRA (--bits 4)")
        quantize_llm(model, 4, compute_dtype=compute_dtype, device=device)
    config = peft.LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, bias="none", target_modules=targets)
    peft.inject_adapter_in_model(config, model)
    return targets


def is_lora(model: nn.Module) -> bool:
    return any("lora_" in name for name, _ in model.named_parameters())


def dense_weight(layer: nn.Module) -> torch.Tensor:
    """A linear layer's weight as float32, dequantizing a bitsandbytes 4-bit weight."""
    weight = layer.weight
    if type(weight).__name__ == "Params4bit":
        # lazy: bitsandbytes is optional (QLoRA only) and already loaded when a weight is Params4bit
        import bitsandbytes.functional as bnbf

        return bnbf.dequantize_4bit(weight.data, weight.quant_state).float()
    return weight.detach().float()


def merged_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict with every adapter merged into its base weight, under plain names."""
    # lazy: importing peft takes seconds (it loads bitsandbytes); only LoRA runs reach this, and
    # :func:`add_lora` has loaded it by then
    from peft.tuners.lora import LoraLayer

    state: dict[str, torch.Tensor] = {}
    for name, module in model.named_modules():
        if not isinstance(module, LoraLayer):
            continue
        base = module.get_base_layer()
        weight = dense_weight(base)
        for adapter in module.active_adapters:
            weight = weight + module.get_delta_weight(adapter).float().to(weight.device)
        state[f"{name}.weight"] = weight
        if getattr(base, "bias", None) is not None:
            state[f"{name}.bias"] = base.bias.detach().float()
    for key, value in model.state_dict().items():
        if ".base_layer." not in key and ".lora_" not in key:
            state[key] = value
    return state


@dataclass
class MemoryEstimate:
    """GPU memory of a run by part, in GiB (weights, optimizer state, activations, overhead)."""

    parts: dict[str, float]

    @property
    def total(self) -> float:
        return sum(self.parts.values())

    def describe(self) -> str:
        return ", ".join(f"{k} {v:.1f}" for k, v in self.parts.items()) + f" -> about {self.total:.1f} GiB"


def llm_params(config) -> tuple[int, int]:
    """(decoder-layer linear params, other LLM params: embeddings, lm_head, norms)."""
    h, i, n = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    kv = h * config.num_key_value_heads // config.num_attention_heads
    linears = n * (2 * h * h + 2 * h * kv + 3 * h * i)
    return linears, 2 * config.vocab_size * h + (2 * n + 1) * h


def estimate_gib(config, *, lora_r: int = 0, bits: int = 16, train_llm: bool = True, train_multimodal: bool = True,
                 seq_len: int = 2048, batch: int = 1) -> MemoryEstimate:
    """Rough single-GPU memory of training with bf16 compute, fp32 AdamW state, gradient checkpointing.

    Trainable weights cost 16 bytes each (fp32 weight, gradient, two Adam moments); frozen ones 2
    (bf16) or about 0.52 (NF4 + double-quantized scales).
    """
    gib = 2.0 ** 30
    linears, other = llm_params(config)
    width, depth, mlp = config.mm_hidden_size, config.vision_depth or 39, config.vision_mlp_hidden
    eva = depth * (4 * width * width + 2 * width * mlp) + eva_config(config).num_patches * width
    q = config.qformer or {}
    qh, qi, ql = q.get("hidden_size", 768), q.get("intermediate_size", 3072), q.get("num_hidden_layers", 12)
    multimodal = ql * (4 * qh * qh + 4 * qh * qi) + (ql // 2) * (2 * qh * qh + 2 * qh * width) \
        + q.get("vocab_size", 30523) * qh + width * width + qh * width + width * config.hidden_size \
        + config.hidden_size * (width + config.hidden_size)
    parts = {"EVA (frozen bf16)": eva * 2 / gib}
    if lora_r:
        h, i = config.hidden_size, config.intermediate_size
        per_layer = lora_r * (4 * (h + h) + 3 * (h + i))  # A (r x in) + B (out x r) on the seven projections
        kind = "NF4" if bits == 4 else "bf16"
        parts[f"LLM (frozen {kind})"] = (linears * (0.52 if bits == 4 else 2) + other * 2) / gib
        parts["LoRA (trained)"] = config.num_hidden_layers * per_layer * 16 / gib
    else:
        kind = "trained" if train_llm else "frozen bf16"
        parts[f"LLM ({kind})"] = (linears + other) * (16 if train_llm else 2) / gib
    parts["Q-Former + projectors (" + ("trained" if train_multimodal else "frozen") + ")"] = \
        multimodal * (16 if train_multimodal else 2) / gib
    act_layer = batch * seq_len * config.hidden_size * 2
    parts["activations"] = (config.num_hidden_layers * act_layer + 12 * act_layer
                            + batch * seq_len * config.intermediate_size * 2 * 3) / gib
    parts["CUDA context and allocator"] = 1.5
    return MemoryEstimate(parts)
