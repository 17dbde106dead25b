"""LoRA and QLoRA in stage 2: only adapters train, the save is a plain merged checkpoint that loads and chats."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from llamavid.model.config import LlamaVidConfig
from llamavid.model.loading import load_llamavid
from llamavid.runtime.api import LlamaVid
from llamavid.runtime.generate import SamplingOptions
from train.config import TrainArgs
from train.lora import estimate_gib, merged_state_dict
from train.trainer import run

LORA = dict(stage=2, max_steps=12, batch_size=2, grad_accum=1, learning_rate=5e-3, num_workers=0, save_steps=100,
            lora_r=4, lora_alpha=8, lora_dropout=0.0)


def plain_name(name: str) -> str:
    return name.replace(".base_layer.", ".")


def test_lora_trains_only_adapters_and_saves_a_merged_model(tiny_init, dataset, tmp_path):
    base, _ = load_llamavid(tiny_init)
    base_state = base.state_dict()
    result = run(TrainArgs(data=dataset["stage2"], output=tmp_path / "lora", init=tiny_init,
                           lora_train_multimodal=False, **LORA))
    assert np.mean(result.losses[-3:]) < np.mean(result.losses[:3]) - 0.1, result.losses
    trainable = [n for n, p in result.model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert all(n.startswith("model.layers.") for n in trainable), "adapters must sit on the LLM only"
    for name, param in result.model.named_parameters():
        if "lora_" not in name:  # every base weight, LLM and multimodal, is bit-identical
            assert torch.equal(param.detach(), base_state[plain_name(name)]), name
    merged = merged_state_dict(result.model)
    saved, _ = load_llamavid(result.output)
    q_proj = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(merged[q_proj], base_state[q_proj])  # the adapter learned something
    delta = merged[q_proj] - base_state[q_proj]
    assert torch.linalg.matrix_rank(delta) <= 4  # ... of rank r
    for name, tensor in saved.state_dict().items():
        if tensor.is_floating_point() and not name.startswith("model.vision_tower."):
            assert torch.equal(tensor, merged[name].to(torch.bfloat16).float()), name
    lv = LlamaVid.load(result.output, device="cpu", dtype="fp32")
    assert lv.ask("Where is the ship going?", SamplingOptions(max_new_tokens=4, temperature=0)).strip()


def test_lora_keeps_training_the_stage_multimodal_parts_by_default(tiny_init, dataset, tmp_path):
    result = run(TrainArgs(data=dataset["stage2"], output=tmp_path / "lora-mm", init=tiny_init,
                           **{**LORA, "max_steps": 2}))
    trainable = {n for n, p in result.model.named_parameters() if p.requires_grad}
    assert any("lora_" in n for n in trainable) and "model.vlm_att_query" in trainable
    assert "model.mm_projector.0.weight" in trainable
    assert not any(n.startswith(("lm_head", "model.embed_tokens", "model.vision_tower")) for n in trainable)


def test_qlora_trains_on_nf4_weights_and_saves_dequantized_merged_weights(tiny_init, dataset, tmp_path):
    pytest.importorskip("bitsandbytes")
    import bitsandbytes.functional as bnbf

    result = run(TrainArgs(data=dataset["stage2"], output=tmp_path / "qlora", init=tiny_init, bits=4,
                           **{**LORA, "max_steps": 6}))
    assert all(np.isfinite(result.losses)) and result.losses[-1] < result.losses[0]
    saved = load_llamavid(result.output)[0].state_dict()
    scale = LORA["lora_alpha"] / LORA["lora_r"]
    adapted = [(n, m) for n, m in result.model.named_modules() if hasattr(m, "lora_A")]
    assert len(adapted) == 2 * 7  # q, k, v, o, gate, up, down in both layers
    for name, layer in adapted:
        weight = layer.base_layer.weight
        assert type(weight).__name__ == "Params4bit", name
        dense = bnbf.dequantize_4bit(weight.data, weight.quant_state).float()  # the NF4 base
        a, b = (m["default"].weight.detach().float() for m in (layer.lora_A, layer.lora_B))
        delta = scale * b @ a
        want = dense + delta
        got = saved[name + ".weight"]
        # saved in bf16 (8 significant bits): within one bf16 step of dequantized base + alpha/r B A
        step = 2.0 ** -8 * want.abs() + 1e-30
        assert ((got - want).abs() <= step).all(), name
        # negative control: the base without the adapter is further than that from the save
        assert ((got - dense).abs() > 2.0 ** -8 * dense.abs() + 1e-30).any(), f"{name}: the adapter learned nothing"


def test_memory_estimate_puts_7b_stage2_qlora_under_24_gib():
    seven_b = LlamaVidConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                             num_key_value_heads=32, vocab_size=32000, vision_depth=39, compress_type="mean")
    qlora = estimate_gib(seven_b, lora_r=64, bits=4, seq_len=2048)
    lora_frozen_mm = estimate_gib(seven_b, lora_r=64, bits=16, train_multimodal=False, seq_len=2048)
    full = estimate_gib(seven_b, seq_len=2048)
    assert qlora.total < 20 < 24 and lora_frozen_mm.total < 24 < full.total, (qlora.describe(), full.describe())
    assert 100 < full.total  # full fine-tuning of 7B needs sharding over GPUs (FSDP)
