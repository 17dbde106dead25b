"""Tiny starting files and a tiny dataset for the training tests, made offline in seconds.

The starting files have the same layout and key names as the real ones: a Hugging Face LLaMA
folder (Vicuna), ``eva_vit_g.pth``, an InstructBLIP file (``{"model": {"Qformer.bert.*", "ln_vision.*",
"query_tokens", ...}}``) and the Q-Former vocabulary. The dataset has images, short MP4 clips and
film features (.npy with subtitles, .npz), with captions for stage 1, chats for stage 2 and film
questions for stage 3.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from llamavid.media.synthetic import moving_bar, write_video
from llamavid.model.eva import write_tiny_eva
from llamavid.model.tiny import bert_vocab, random_model, tiny_config, write_llama_tokenizer

QFORMER_HEADS = {"num_attention_heads": 4}
COLORS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "white": (240, 240, 240)}


def write_components(folder: Path, seed: int = 0) -> dict[str, Path]:
    """Vicuna-style LLM folder, eva_vit_g.pth, InstructBLIP file, vocab and Q-Former sizes."""
    folder.mkdir(parents=True, exist_ok=True)
    config = tiny_config(compress_type="mean")
    model = random_model(config, seed)
    llm = folder / "vicuna-tiny"
    llm.mkdir(exist_ok=True)
    write_llama_tokenizer(llm)
    llama_fields = {k: v for k, v in config.to_dict().items()
                    if k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                             "num_key_value_heads", "vocab_size", "max_position_embeddings", "rms_norm_eps",
                             "bos_token_id", "eos_token_id", "pad_token_id", "tie_word_embeddings")}
    (llm / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"],
                                                 "rope_theta": 10000.0, "torch_dtype": "float16", **llama_fields}))
    state = model.state_dict()
    llm_state = {k: v.half() for k, v in state.items() if k.startswith(("model.embed_tokens", "model.layers",
                                                                         "model.norm", "lm_head"))}
    torch.save(llm_state, llm / "pytorch_model.bin")
    blip = {"Qformer.bert." + k[len("model.vlm_att_encoder.bert."):]: v for k, v in state.items()
            if k.startswith("model.vlm_att_encoder.bert.") and not k.endswith("position_ids")}
    blip.update({"ln_vision.weight": state["model.vlm_att_ln.weight"], "ln_vision.bias": state["model.vlm_att_ln.bias"],
                 "query_tokens": state["model.vlm_att_query"], "llm_proj.weight": torch.zeros(4, 64)})
    torch.save({"model": blip}, folder / "instruct_blip_tiny_trimmed.pth")
    (folder / "qformer_config.json").write_text(json.dumps(QFORMER_HEADS))
    write_tiny_eva(folder / "eva_vit_g.pth", width=config.mm_hidden_size, depth=1, mlp=256, seed=seed + 1)
    (folder / "bert_vocab.txt").write_text("\n".join(bert_vocab()) + "\n")
    return {"llm": llm, "vision": folder / "eva_vit_g.pth", "qformer": folder / "instruct_blip_tiny_trimmed.pth",
            "qformer_vocab": folder / "bert_vocab.txt", "qformer_config": folder / "qformer_config.json"}


def write_image(path: Path, color: str, size: tuple[int, int] = (64, 48)) -> Path:
    rgb = np.zeros((size[1], size[0], 3), np.uint8)
    rgb[:] = COLORS[color]
    rgb[size[1] // 4: size[1] // 2, size[0] // 4: size[0] // 2] = 255 - np.array(COLORS[color])
    Image.fromarray(rgb).save(path)
    return path


def write_clip(path: Path, color: str, seconds: int = 3, fps: int = 5) -> Path:
    """A 64x48 clip of one colour with a black bar moving right (libx264 defaults)."""
    return write_video(path, moving_bar(64, 48, COLORS[color]), fps=fps, seconds=seconds)


def write_film(folder: Path, name: str, frames: int, width: int, seed: int, npz: bool = False) -> Path:
    rng = np.random.default_rng(seed)
    feats = rng.standard_normal((frames, 257, width)).astype(np.float16)
    if npz:
        inputs = "".join("<image>" + (f"line {i}." if i % 2 else "") for i in range(frames))
        path = folder / f"{name}.npz"
        np.savez(path, feats=feats, inputs=np.array(inputs))
        return path
    path = folder / f"{name}.npy"
    np.save(path, feats)
    return path


def human(text: str) -> dict:
    return {"from": "human", "value": text}


def gpt(text: str) -> dict:
    return {"from": "gpt", "value": text}


def write_dataset(folder: Path, eva_width: int = 176) -> dict[str, Path]:
    """Media plus stage1.json, stage2.json and stage3.json in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for color in ("red", "green", "blue"):
        write_image(folder / f"{color}.png", color)
    write_clip(folder / "red.mp4", "red")
    write_clip(folder / "blue.mp4", "blue")
    write_film(folder, "film1", 6, eva_width, 1)
    write_film(folder, "film2", 5, eva_width, 2, npz=True)
    (folder / "film1.subtitles.json").write_text(json.dumps([
        {"start_time": 0.5, "end_time": 1.5, "text": "The captain looks at the sea."},
        {"start_time": 3.2, "end_time": 4.0, "text": "The ship sails into the harbor at night."}]))
    stage1 = [{"id": f"cap-{c}", "image": f"{c}.png",
               "conversations": [human("Describe the image concisely.\n<image>"), gpt(f"a {c} scene.")]}
              for c in ("red", "green", "blue")]
    stage1 += [{"id": f"clip-{c}", "video": f"{c}.mp4",
                "conversations": [human("<image>\nDescribe the video."), gpt(f"a {c} video.")]}
               for c in ("red", "blue")]
    stage2 = [
        {"id": "chat-red", "image": "red.png", "conversations": [
            human("<image>\nWhat color is it?"), gpt("It is red."), human("Is it dark?"), gpt("No.")]},
        {"id": "chat-blue", "image": "blue.png", "conversations": [
            human("What color is it?\n<image>"), gpt("It is blue.")]},
        {"id": "clip-red", "video": "red.mp4", "conversations": [
            human("<image>\nWhat is the man doing in this video?"), gpt("He is riding a skateboard.")]},
        {"id": "text-1", "conversations": [human("Where is the ship going?"), gpt("To the harbor.")]},
    ]
    stage3 = [
        {"id": "film1-q1", "video": "film1.npy", "subtitles": "film1.subtitles.json", "conversations": [
            human("<image>\nWhere are they going?"), gpt("They sail into the harbor.")]},
        {"id": "film2-q1", "video": "film2.npz", "conversations": [
            human("<image>\nWho is the woman in the red coat?"), gpt("The captain.")]},
    ]
    paths = {}
    for name, records in (("stage1", stage1), ("stage2", stage2), ("stage3", stage3)):
        paths[name] = folder / f"{name}.json"
        paths[name].write_text(json.dumps(records, indent=1))
    return paths
