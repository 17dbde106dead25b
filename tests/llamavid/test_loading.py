"""Loading released-layout checkpoints: configs, shards, shared files, and clear errors."""
from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

from llamavid.errors import CheckpointError
from llamavid.model.config import LlamaVidConfig
from llamavid.model.loading import load_llamavid, read_checkpoint
from llamavid.runtime.api import LlamaVid

LONG_VIDEO_CONFIG = {  # fields of the released long-video config.json, sizes shrunk
    "_name_or_path": "./work_dirs/llava-v1.5-7b-full-224-video-att-after-eva",
    "architectures": ["LlavaLlamaAttForCausalLM"], "model_type": "llava", "bert_type": "qformer_pretrain_freeze",
    "compress_type": "mean_concat", "cross_att_freq": 2, "debug_use": False,
    "fusion_type": "attention_concat_all_query", "hidden_size": 64, "intermediate_size": 128,
    "image_processor": "./model_zoo/OpenAI/clip-vit-large-patch14", "max_token": 65536,
    "max_position_embeddings": 4096, "mm_hidden_size": 1408, "mm_projector_type": "mlp2x_gelu",
    "mm_vision_tower": "./model_zoo/LAVIS/eva_vit_g.pth", "num_attention_heads": 4, "num_hidden_layers": 2,
    "num_qformer": 32, "position_type": None, "rope_scaling": {"factor": 16.0, "type": "linear"},
    "torch_dtype": "bfloat16", "transformers_version": "4.31.0", "use_raw_query_trans": False, "vocab_size": 320,
}


def test_released_long_video_config_is_read_as_published():
    config = LlamaVidConfig.from_released(LONG_VIDEO_CONFIG)
    assert config.model_type == "llamavid"
    assert config.rope_parameters["rope_type"] == "linear" and config.rope_parameters["factor"] == 16.0
    assert config.num_query == 32 and config.compress_type == "mean_concat" and config.image_size == 224
    assert {"fusion_type", "num_qformer", "debug_use"} <= set(config.ignored_fields)
    assert config.released_dtype == "bfloat16"


def test_processor_path_sets_image_size():
    processor = "./llamavid/processor/clip-patch14-336"
    assert LlamaVidConfig.from_released({**LONG_VIDEO_CONFIG, "image_processor": processor}).image_size == 336


@pytest.mark.parametrize("bad", ["grid:1", "grid:x", "pool"])
def test_bad_compress_type_is_refused(bad):
    with pytest.raises(ValueError, match="compress_type"):
        LlamaVidConfig.from_released({**LONG_VIDEO_CONFIG, "compress_type": bad})


def test_linear_rope_scaling_divides_positions(tiny_checkpoint, tmp_path):
    from llamavid.model.tiny import write_tiny_checkpoint

    folder = write_tiny_checkpoint(tmp_path / "long", rope_factor=16.0)
    assert json.loads((folder / "config.json").read_text())["rope_scaling"] == {"type": "linear", "factor": 16.0}
    scaled, _ = load_llamavid(folder)
    plain, _ = load_llamavid(tiny_checkpoint)
    x = torch.zeros(1, 1, 64)
    cos_scaled, _ = scaled.model.rotary_emb(x, torch.tensor([[16]]))
    cos_plain, _ = plain.model.rotary_emb(x, torch.tensor([[1]]))
    assert torch.allclose(cos_scaled, cos_plain, atol=1e-6)
    assert scaled.model.rotary_emb.inv_freq.dtype == torch.float32


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_every_tensor_is_loaded_from_the_shards(tiny_checkpoint, dtype):
    model, report = load_llamavid(tiny_checkpoint, dtype=dtype)
    saved = read_checkpoint(tiny_checkpoint)
    state = model.state_dict()
    for key, value in saved.items():
        if key.startswith("model.vision_tower.") or key.endswith("position_ids"):
            continue
        assert torch.equal(state[key].to(torch.float32), value.to(dtype).to(torch.float32)), key
    assert state["lm_head.weight"].dtype == dtype
    assert report.eva_file == tiny_checkpoint / "eva_vit_g.pth"


def test_vision_weights_come_from_the_pth_file_as_in_the_reference(tiny_checkpoint):
    model, _ = load_llamavid(tiny_checkpoint)
    pth = torch.load(tiny_checkpoint / "eva_vit_g.pth")
    tower = model.model.vision_tower.vision_tower
    assert torch.equal(tower.blocks[0].attn.qkv.weight, pth["blocks.0.attn.qkv.weight"].float())
    assert len(tower.blocks) == 1  # the file holds one spare block, as the 40-block original does


def test_safetensors_layout_loads_the_same(tiny_checkpoint, tmp_path):
    from safetensors.torch import save_file

    folder = tmp_path / "st"
    shutil.copytree(tiny_checkpoint, folder)
    index = json.loads((folder / "pytorch_model.bin.index.json").read_text())
    new_map = {}
    for shard in sorted(set(index["weight_map"].values())):
        tensors = torch.load(folder / shard)
        name = shard.replace("pytorch_model", "model").replace(".bin", ".safetensors")
        save_file({k: v.contiguous() for k, v in tensors.items()}, folder / name)
        new_map.update({k: name for k in tensors})
        (folder / shard).unlink()
    (folder / "pytorch_model.bin.index.json").unlink()
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": new_map}))
    a, _ = load_llamavid(tiny_checkpoint)
    b, _ = load_llamavid(folder)
    assert all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())


def test_checkpoint_copy_of_eva_is_used_when_no_pth_exists(tiny_checkpoint, tmp_path):
    folder = tmp_path / "nopth"
    shutil.copytree(tiny_checkpoint, folder)
    (folder / "eva_vit_g.pth").unlink()
    model, report = load_llamavid(folder)
    assert report.eva_file is None
    ref, _ = load_llamavid(tiny_checkpoint)
    pixels = torch.randn(1, 3, 224, 224)
    assert torch.allclose(model.encode_images(pixels), ref.encode_images(pixels), atol=0.05)


def test_shared_folder_supplies_vision_and_vocab(tiny_checkpoint, tmp_path):
    folder, shared = tmp_path / "ckpt", tmp_path / "shared"
    shutil.copytree(tiny_checkpoint, folder)
    shared.mkdir()
    shutil.move(folder / "eva_vit_g.pth", shared / "eva_vit_g.pth")
    shutil.move(folder / "bert_vocab.txt", shared / "bert_vocab.txt")
    lv = LlamaVid.load(folder, device="cpu", search_dirs=[shared])
    assert lv.report.eva_file == shared / "eva_vit_g.pth" and lv.report.vocab_file == shared / "bert_vocab.txt"


def test_missing_vocab_names_what_to_do(tiny_checkpoint, tmp_path):
    folder = tmp_path / "novocab"
    shutil.copytree(tiny_checkpoint, folder)
    (folder / "bert_vocab.txt").unlink()
    with pytest.raises(CheckpointError, match="bert_vocab.txt"):
        LlamaVid.load(folder, device="cpu")


def test_truncated_shard_is_named(tiny_checkpoint, tmp_path):
    folder = tmp_path / "broken"
    shutil.copytree(tiny_checkpoint, folder)
    shard = sorted(folder.glob("pytorch_model-*.bin"))[0]
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=shard.name):
        load_llamavid(folder)


def test_missing_shard_is_named(tiny_checkpoint, tmp_path):
    folder = tmp_path / "missing"
    shutil.copytree(tiny_checkpoint, folder)
    shard = sorted(folder.glob("pytorch_model-*.bin"))[-1]
    shard.unlink()
    with pytest.raises(CheckpointError, match=f"{shard.name}.*missing"):
        load_llamavid(folder)


def test_unexpected_tensor_is_refused(tiny_checkpoint, tmp_path):
    folder = tmp_path / "extra"
    shutil.copytree(tiny_checkpoint, folder)
    shard = sorted(folder.glob("pytorch_model-*.bin"))[0]
    tensors = torch.load(shard)
    tensors["model.surprise.weight"] = torch.zeros(2)
    torch.save(tensors, shard)
    with pytest.raises(CheckpointError, match="1 unexpected.*model.surprise.weight"):
        load_llamavid(folder)


def test_not_a_checkpoint_folder(tmp_path):
    with pytest.raises(CheckpointError, match="not a folder"):
        load_llamavid(tmp_path / "nope")
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json.*not valid JSON"):
        load_llamavid(tmp_path)


def test_336_position_table_is_interpolated_bicubically(tiny_checkpoint):
    model, _ = load_llamavid(tiny_checkpoint, image_size=336)
    table = torch.load(tiny_checkpoint / "eva_vit_g.pth")["pos_embed"].float()
    side = int(math.isqrt(table.shape[1] - 1))
    grid = table[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
    want = torch.nn.functional.interpolate(grid, size=(24, 24), mode="bicubic", align_corners=False)
    got = model.model.vision_tower.vision_tower.pos_embed[:, 1:].reshape(1, 24, 24, -1).permute(0, 3, 1, 2)
    assert torch.allclose(got, want, atol=1e-6)
    assert model.encode_images(torch.randn(1, 3, 336, 336)).shape == (1, 577, 176)


def test_stage1_projector_checkpoint_loads_on_its_base_llm(tiny_checkpoint, tmp_path):
    """``*-pretrain-*`` repos: config.json + mm_projector.bin, the LLM from Vicuna, EVA from the .pth."""
    full = read_checkpoint(tiny_checkpoint)
    base, pretrain = tmp_path / "vicuna", tmp_path / "llama-vid-tiny-pretrain"
    base.mkdir()
    pretrain.mkdir()
    llm_parts = ("model.embed_tokens", "model.layers", "model.norm", "lm_head")
    llm = {k: v for k, v in full.items() if k.startswith(llm_parts)}
    torch.save(llm, base / "pytorch_model.bin")
    for name in ("tokenizer.model", "tokenizer_config.json"):
        shutil.copy(tiny_checkpoint / name, base / name)
    projector = {k: v for k, v in full.items() if k.startswith(("model.mm_projector", "model.vlm_att"))
                 and not k.endswith("position_ids")}
    torch.save(projector, pretrain / "mm_projector.bin")
    for name in ("config.json", "qformer_config.json", "eva_vit_g.pth", "bert_vocab.txt"):
        shutil.copy(tiny_checkpoint / name, pretrain / name)
    with pytest.raises(CheckpointError, match="--base"):
        load_llamavid(pretrain)
    lv = LlamaVid.load(pretrain, device="cpu", base=base)
    ref = LlamaVid.load(tiny_checkpoint, device="cpu")
    assert all(torch.equal(ref.model.state_dict()[k], v) for k, v in lv.model.state_dict().items())
    assert lv.tokenizer is not None
