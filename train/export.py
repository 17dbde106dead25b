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
from train.checkpoint import RUN_FILE, STATE_FILE, full_state, load_state, model_sources, save_model
from train.config import TrainArgs
from train.distributed import Runtime
from train.lora import is_lora
from train.step import TrainStep
from train.trainer import prepare_args, setup_model, tokenizers


def export(checkpoint: Path, output: Path) -> Path:
    checkpoint, output = Path(checkpoint), Path(output)
    run_file = checkpoint.parent / RUN_FILE
    if not (checkpoint / STATE_FILE).is_file() or not run_file.is_file():
        raise UserError(f"{checkpoint}: not a complete checkpoint of a run (needs {STATE_FILE} here and "
                        f"{RUN_FILE} next to it)")
    args = TrainArgs.from_json(json.loads(run_file.read_text()))
    args.device, args.gradient_checkpointing, args.fsdp = "cpu", False, None
    args = prepare_args(args, 1)
    rt = Runtime()
    model = setup_model(args, rt, bf16=False)
    step = TrainStep(model, args.max_length)
    optimizer = torch.optim.AdamW([p for p in step.parameters() if p.requires_grad])
    load_state(checkpoint, step, optimizer, None, rt, optimizer_too=False)
    _, _, vocab = tokenizers(args)
    return save_model(output, full_state(step, model, is_lora(model)), model.config, args.stage,
                      model_sources(args, vocab))
