"""LoRA and QLoRA in stage 2: only adapters train, the save is a plain merged checkpoint that loads and chats."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from llamavid.model.config import LlamaVidConfig
from llamavid.model.loading import load_llamavid
from llamavid.model.tiny import write_tiny_checkpoint
from llamavid.runtime.api import LlamaVid
from llamavid.runtime.generate import SamplingOptions
from train.config import TrainArgs
from train.lora import estimate_gib, merged_state_dict
from train.trainer import run

LORA = dict(stage=2, max_steps=12, batch_size=2, grad_accum=1, learning_rate=5e-3, num_workers=0, save_steps=100,
            lora_r=4, lora_alpha=8, lora_dropout=0.0)


@pytest.fixture(scope="module")
def tiny_init(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("init") / "stage1")


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
    base, _ = load_llamavid(tiny_init)
    result = run(TrainArgs(data=dataset["stage2"], output=tmp_path / "qlora", init=tiny_init, bits=4,
                           **{**LORA, "max_steps": 6}))
    assert all(np.isfinite(result.losses)) and result.losses[-1] < result.losses[0]
    layer = result.model.model.layers[0].self_attn.q_proj
    assert type(layer.base_layer.weight).__name__ == "Params4bit"
    saved, _ = load_llamavid(result.output)
    name = "model.layers.0.self_attn.q_proj.weight"
    w, w0 = saved.state_dict()[name], base.state_dict()[name]
    assert w.shape == w0.shape and (w - w0).abs().max() < 0.1 * w0.abs().max() + 0.05  # NF4 error + small delta


def test_memory_estimate_puts_7b_stage2_qlora_under_24_gib():
    seven_b = LlamaVidConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                             num_key_value_heads=32, vocab_size=32000, vision_depth=39, compress_type="mean")
    qlora = estimate_gib(seven_b, lora_r=64, bits=4, seq_len=2048)
    lora_frozen_mm = estimate_gib(seven_b, lora_r=64, bits=16, train_multimodal=False, seq_len=2048)
    full = estimate_gib(seven_b, seq_len=2048)
    assert qlora.total < 20 < 24 and lora_frozen_mm.total < 24 < full.total, (qlora.describe(), full.describe())
    assert 100 < full.total  # full fine-tuning of 7B needs sharding over GPUs (FSDP)
