"""Turn a resumable checkpoint (``OUTPUT/checkpoint-N``) into a model folder you can chat with.

A run writes the released layout only at its end; this rebuilds the run's starting model from its
``run.json``, loads the checkpoint's trained weights on the CPU and saves the same layout - to try
a model while its training goes on, or to keep an intermediate one.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from llamavid.errors import UserError

from train import checkpoint as ckpt
from train.config import TrainArgs
from train.distributed import Runtime


def export(checkpoint: Path, output: Path) -> Path:
    from train.lora import is_lora
    from train.step import TrainStep
    from train.trainer import prepare_args, setup_model, tokenizers

    checkpoint, output = Path(checkpoint), Path(output)
    run_file = checkpoint.parent / "run.json"
    if not (checkpoint / ckpt.STATE_FILE).is_file() or not run_file.is_file():
        raise UserError(f"{checkpoint}: not a complete checkpoint of a run (needs {ckpt.STATE_FILE} here and "
                        "run.json next to it)")
    args = TrainArgs.from_json(json.loads(run_file.read_text()))
    args.device, args.gradient_checkpointing, args.fsdp = "cpu", False, None
    args = prepare_args(args, 1)
    rt = Runtime()
    model = setup_model(args, rt, bf16=False)
    step = TrainStep(model, args.max_length)
    optimizer = torch.optim.AdamW([p for p in step.parameters() if p.requires_grad])
    ckpt.load_state(checkpoint, step, optimizer, None, rt, optimizer_too=False)
    _, _, vocab = tokenizers(args)
    sources = {"tokenizer": Path(args.init or args.llm), "vocab": vocab,
               "eva": args.vision or (Path(args.init) / "eva_vit_g.pth" if args.init else None)}
    return ckpt.save_model(output, ckpt.full_state(step, model, is_lora(model)), model.config, args.stage, sources)
