"""Where a stage's starting weights come from (spec 3.3, 10.3).

* Stage 1: a Vicuna-style Hugging Face LLaMA folder + ``eva_vit_g.pth`` + the InstructBLIP Q-Former
  file (``instruct_blip_vicuna7b_trimmed.pth``); the four projectors start fresh.
* Stage 2: the stage-1 output folder (``--init``), or, as the reference did, the LLaMA folder +
  ``eva_vit_g.pth`` + the stage-1 ``mm_projector.bin`` (``--projector``).
* Stage 3: the stage-2 output folder; RoPE gets linear scaling when the length needs it.

The result is always a float32 :class:`LlamaVidForCausalLM` on the CPU with every tensor matched
by name: a file that lacks a tensor, or has one the model does not know, is an error that names it.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

from llamavid.errors import CheckpointError, UserError
from llamavid.files import CONFIG, EVA_FILE, PROJECTOR_FILE
from llamavid.model.config import LlamaVidConfig
from llamavid.model.eva import EvaConfig, load_eva_file
from llamavid.model.loading import build_state, fill_buffers, load_llamavid, read_checkpoint
from llamavid.model.modeling import LlamaVidForCausalLM
from llamavid.model.visual_tokens import build_projector
from train.config import PROJECTOR_PARTS, VISION, TrainArgs, matches, rope_factor_for


def read_torch_file(path: Path, trust_pickle: bool) -> dict[str, Any]:
    """A ``torch.save`` file; LAVIS checkpoints may hold more than tensors, which needs trust."""
    if not Path(path).is_file():
        raise UserError(f"{path}: file not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust_pickle, mmap=True)
    except Exception as exc:  # a pickle that needs more than tensors, or a broken file
        hint = "" if trust_pickle else "; if it holds Python objects and you trust it, pass --trust-pickle"
        raise UserError(f"{path}: cannot read it ({exc.__class__.__name__}: {str(exc)[:160]}){hint}") from None


def instructblip_state(path: Path, trust_pickle: bool) -> dict[str, torch.Tensor]:
    """Q-Former, query tokens and ``ln_vision`` from an InstructBLIP file, under LLaMA-VID's names."""
    raw = read_torch_file(path, trust_pickle)
    state = raw.get("model", raw) if isinstance(raw, dict) else None
    if not isinstance(state, dict):
        raise UserError(f"{path}: not an InstructBLIP checkpoint (expected a dict with 'model')")
    out = {"model.vlm_att_encoder." + k[len("Qformer."):]: v for k, v in state.items() if k.startswith("Qformer.bert.")}
    out.update({"model.vlm_att_ln." + k[len("ln_vision."):]: v for k, v in state.items() if k.startswith("ln_vision.")})
    if "query_tokens" in state:
        out["model.vlm_att_query"] = state["query_tokens"]
    missing = [n for n in ("Qformer.bert.*", "ln_vision.*", "query_tokens")
               if not any(k.startswith(n.rstrip("*")) for k in state)]
    if missing:
        raise UserError(f"{path}: not an InstructBLIP Q-Former file, it lacks {', '.join(missing)}")
    return out


def projector_state(path: Path) -> dict[str, torch.Tensor]:
    """A stage-1 ``mm_projector.bin``: ``model.mm_projector.*`` and ``model.vlm_att_*``."""
    state = read_torch_file(path, False)
    bad = [k for k in state if not matches(k, PROJECTOR_PARTS)]
    if bad or not state:
        raise UserError(f"{path}: not a stage-1 {PROJECTOR_FILE} (unexpected keys such as {bad[:3]})")
    return dict(state)


def qformer_sizes(state: Mapping[str, torch.Tensor], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Q-Former sizes read off the weights; heads cannot be, so they default to width / 64 (BERT)."""
    prefix = "model.vlm_att_encoder.bert."
    words = state[prefix + "embeddings.word_embeddings.weight"]
    layer_prefix = prefix + "encoder.layer."
    layers = {int(k[len(layer_prefix):].split(".")[0]) for k in state if k.startswith(layer_prefix)}
    sizes = {"vocab_size": int(words.shape[0]), "hidden_size": int(words.shape[1]), "num_hidden_layers": len(layers),
             "intermediate_size": int(state[prefix + "encoder.layer.0.intermediate.dense.weight"].shape[0]),
             "num_attention_heads": max(1, int(words.shape[1]) // 64)}
    return {**sizes, **overrides}


def fresh_projectors(config: LlamaVidConfig, seed: int) -> dict[str, torch.Tensor]:
    """The four projectors of stage 1 with PyTorch's default init, reproducible from the seed."""
    torch.manual_seed(seed)
    width, hidden, q_width = config.mm_hidden_size, config.hidden_size, config.qformer["hidden_size"]
    modules = {"mm_projector": build_projector(config.mm_projector_type, width, hidden),
               "vlm_att_projector": torch.nn.Linear(q_width, width),
               "vlm_att_key_projector": torch.nn.Linear(width, width),
               "vlm_att_val_projector": torch.nn.Linear(width, hidden)}
    return {f"model.{name}.{k}": v for name, m in modules.items() for k, v in m.state_dict().items()}


def llm_config(folder: Path) -> dict[str, Any]:
    try:
        values = json.loads((folder / CONFIG).read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{folder}: no readable {CONFIG} ({exc}); --llm takes a Hugging Face LLaMA folder") from None
    if "hidden_size" not in values:
        raise UserError(f"{folder / CONFIG}: not a LLaMA config (no hidden_size)")
    return values


def from_components(args: TrainArgs) -> LlamaVidForCausalLM:
    """Stage 1 (``--qformer``) or reference-style stage 2 (``--projector``) from separate files."""
    if not (args.llm and args.vision and (args.qformer or args.projector)):
        raise UserError("give --init FOLDER (a previous stage's output), or --llm, --vision and --qformer "
                        f"(stage 1) / --projector (stage 2 from a stage-1 {PROJECTOR_FILE})")
    eva = load_eva_file(args.vision)
    eva_cfg = EvaConfig.from_state_dict(eva, args.image_size)
    parts = projector_state(args.projector) if args.projector else instructblip_state(args.qformer, args.trust_pickle)
    overrides = json.loads(Path(args.qformer_config).read_text()) if args.qformer_config else {}
    config = LlamaVidConfig.from_released(
        llm_config(args.llm), mm_hidden_size=eva_cfg.width, image_size=args.image_size, vision_depth=eva_cfg.depth,
        vision_mlp_hidden=eva_cfg.mlp_hidden, bert_type=args.bert_type, compress_type=args.compress_type,
        num_query=int(parts["model.vlm_att_query"].shape[1]), max_token=args.max_length,
        image_aspect_ratio=args.preset.image_aspect_ratio, mm_projector_type="mlp2x_gelu",
        qformer=qformer_sizes(parts, overrides), mm_vision_tower=EVA_FILE, use_cache=False)
    ckpt = {k: v for k, v in read_checkpoint(Path(args.llm)).items() if not k.startswith(VISION)}
    ckpt.update(parts)
    if not args.projector:
        ckpt.update(fresh_projectors(config, args.seed))
    return assemble(config, ckpt, eva)


def assemble(config: LlamaVidConfig, ckpt: dict[str, torch.Tensor], eva: dict) -> LlamaVidForCausalLM:
    with torch.device("meta"):
        model = LlamaVidForCausalLM(config)
    try:
        state, _ = build_state(config, ckpt, eva, model.state_dict().keys())
    except CheckpointError as exc:
        raise UserError(f"the given files do not make a LLaMA-VID model: {exc}") from None
    model.load_state_dict(state, strict=False, assign=True)
    fill_buffers(model)
    return model.float()


def from_checkpoint(args: TrainArgs) -> LlamaVidForCausalLM:
    """A previous stage's output (released layout), with this stage's bert_type and length."""
    overrides = {"bert_type": args.bert_type, "max_token": args.max_length, "use_cache": False,
                 "image_aspect_ratio": args.preset.image_aspect_ratio}
    try:
        model, _ = load_llamavid(args.init, dtype=torch.float32, eva_file=args.vision, config_overrides=overrides)
    except CheckpointError as exc:
        raise UserError(str(exc)) from None
    return model


def apply_rope_scaling(model: LlamaVidForCausalLM, max_length: int) -> float | None:
    """Linear RoPE scaling when ``max_length`` exceeds what the model reaches (stage 3: x16 for 64K)."""
    config = model.config
    factor = rope_factor_for(max_length, config.context_length, config.rope_factor)
    if factor is None:
        return None
    theta = (config.rope_parameters or {}).get("rope_theta", 10000.0)
    config.rope_parameters = {"rope_type": "linear", "factor": factor, "rope_theta": theta}
    model.model.rotary_emb = LlamaRotaryEmbedding(config=config)
    return factor


def checkpoint_shape(folder: Path) -> dict[str, Any] | None:
    """compress_type and image size of a previous stage's output (None for a plain LLaMA config)."""
    values = json.loads((Path(folder) / CONFIG).read_text())
    if "mm_hidden_size" not in values:
        return None
    config = LlamaVidConfig.from_released(values)
    return {"compress_type": config.compress_type, "image_size": config.image_size}


def build_model(args: TrainArgs) -> LlamaVidForCausalLM:
    """The starting model of this run (float32, CPU), from ``--init`` or the component files."""
    model = from_checkpoint(args) if args.init else from_components(args)
    model.config.use_cache = False
    apply_rope_scaling(model, args.max_length)
    return model
