"""Tiny LLaMA-VID checkpoints in the exact released layout, made offline in a second.

Tests of every part (loader, engines, indexer, training, GGUF export) and ``llamavid bench``'s
smoke mode need real files without downloading 15 GB: a random model with small sizes, saved
the way the released checkpoints are (sharded bf16 ``.bin`` + index, ``eva_vit_g.pth`` with its
spare block, the Q-Former vocabulary and a SentencePiece LLaMA tokenizer).
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import sentencepiece as spm
import torch

from llamavid.model.config import LlamaVidConfig
from llamavid.model.eva import EvaConfig, random_eva_state
from llamavid.model.modeling import LlamaVidForCausalLM
from llamavid.model.saving import save_released

CORPUS = """A chat between a curious user and an artificial intelligence assistant.
The assistant gives helpful, detailed, and polite answers to the user's questions.
USER: What is the man doing in this video? ASSISTANT: He is riding a skateboard down the street.
Below is a movie. Memorize the content and answer my question after watching this movie. Now the movie end.
The captain looks at the sea. The ship sails into the harbor at night. Where are they going?
Describe the scene in detail. Who is the woman in the red coat? Why does the dog run away?
0 1 2 3 4 5 6 7 8 9 . , ! ? ' " : ; ( ) - the a an of to in on at by for with from and or but not
"""
BERT_WORDS = ("the a an of to in on at by for with from and is are was what who where why how man woman "
              "dog ship sea captain movie video scene describe doing detail red coat night street").split()


def bert_vocab() -> list[str]:
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789")
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    return specials + list("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~") + chars + ["##" + c for c in chars] + BERT_WORDS


def write_llama_tokenizer(folder: Path, vocab_size: int = 320) -> None:
    """A SentencePiece BPE model with LLaMA's special ids (unk 0, bos 1, eos 2) and byte fallback."""
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS.splitlines() * 4), model_writer=buf, vocab_size=vocab_size,
        model_type="bpe", byte_fallback=True, character_coverage=1.0, unk_id=0, bos_id=1, eos_id=2,
        pad_id=-1, add_dummy_prefix=True, normalization_rule_name="identity", minloglevel=2)
    (folder / "tokenizer.model").write_bytes(buf.getvalue())
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "add_eos_token": False, "legacy": False,
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": None,
        "model_max_length": 2048, "padding_side": "right"}, indent=2))


def tiny_config(image_size: int = 224, compress_type: str | None = "mean", vocab_size: int = 320,
                rope_factor: float | None = None, eva_width: int = 176, heads: int = 4,
                hidden_size: int = 64, intermediate_size: int = 128) -> LlamaVidConfig:
    """Tiny sizes. ``hidden_size=256, intermediate_size=512`` makes every LLM weight row a multiple of
    256, the super-block of llama.cpp's K-quants (Q4_K, Q6_K): narrower rows fall back to other types."""
    rope = {"rope_type": "linear", "factor": rope_factor, "rope_theta": 10000.0} if rope_factor else None
    return LlamaVidConfig(
        hidden_size=hidden_size, intermediate_size=intermediate_size, num_hidden_layers=2, num_attention_heads=heads,
        num_key_value_heads=heads, vocab_size=vocab_size, max_position_embeddings=4096, rms_norm_eps=1e-5,
        bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False,
        rope_parameters=rope, mm_hidden_size=eva_width, image_size=image_size, vision_depth=1,
        vision_mlp_hidden=256, compress_type=compress_type, image_aspect_ratio="pad",
        qformer={"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                 "intermediate_size": 128, "vocab_size": len(bert_vocab()) + 1},
    )


def random_model(config: LlamaVidConfig, seed: int = 0, std: float = 0.05) -> LlamaVidForCausalLM:
    torch.manual_seed(seed)
    model = LlamaVidForCausalLM(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or "LayerNorm.weight" in name or "layernorm.weight" in name \
                    or name.endswith("vlm_att_ln.weight") or ".norm1." in name or ".norm2." in name:
                p.copy_(1 + std * torch.randn_like(p) if name.endswith("weight") else std * torch.randn_like(p))
            else:
                p.normal_(0, std)
    return model.eval()


def write_tiny_checkpoint(folder: str | Path, image_size: int = 224, compress_type: str | None = "mean",
                          rope_factor: float | None = None, seed: int = 0, shards: int = 2,
                          with_eva: bool = True, with_vocab: bool = True, heads: int = 4,
                          hidden_size: int = 64, intermediate_size: int = 128) -> Path:
    """A complete tiny checkpoint folder, loadable by :func:`llamavid.model.loading.load_llamavid`.

    ``hidden_size`` / ``intermediate_size``: the LLM's widths (see :func:`tiny_config`).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_llama_tokenizer(folder)
    config = tiny_config(image_size, compress_type, rope_factor=rope_factor, heads=heads, hidden_size=hidden_size,
                         intermediate_size=intermediate_size)
    model = random_model(config, seed)
    eva = random_eva_state(EvaConfig(224, 14, config.mm_hidden_size, 1, 256), seed=seed + 1)
    # the checkpoint's EVA copy equals the .pth (as in released files, up to bf16 rounding)
    tower = model.model.vision_tower.vision_tower
    with torch.no_grad():
        for key, value in tower.state_dict().items():
            if key == "pos_embed" and value.shape != eva[key].shape:
                continue
            value.copy_(eva[key])
    total = sum(p.numel() * p.element_size() for p in model.state_dict().values()) // 2
    save_released(model, folder, torch.bfloat16, max_shard_bytes=max(1, total // shards + 1))
    if with_eva:
        torch.save({k: v.half() for k, v in eva.items()}, folder / "eva_vit_g.pth")
    if with_vocab:
        (folder / "bert_vocab.txt").write_text("\n".join(bert_vocab()) + "\n")
    return folder
