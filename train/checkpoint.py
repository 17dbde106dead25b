"""Two kinds of saves: resumable training state, and the finished model in the released layout.

``OUTPUT/checkpoint-N/`` (every ``--save-steps`` and at the end) holds what an exact resume needs:
the trained weights in float32 and the AdamW state (torch.distributed.checkpoint, written by every
rank in parallel and re-shardable), the scheduler, the step and each rank's random-number state.
It is written under a temporary name and renamed when complete, so a run killed while saving
resumes from the previous checkpoint. Frozen weights are not stored: they come from the same
starting files again.

``OUTPUT/`` itself receives the model as the released checkpoints are laid out (sharded bf16
``pytorch_model-*.bin`` + index + ``config.json``), with the LLaMA tokenizer and the Q-Former
vocabulary, so ``LlamaVid.load(OUTPUT)`` / ``llamavid chat --model OUTPUT`` use it directly.
Stage 1 also writes the reference's ``mm_projector.bin``.
"""
from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)

from llamavid.files import EVA_FILE, PROJECTOR_FILE, TOKENIZER_FILES, VOCAB_FILE, find_part
from llamavid.model.saving import save_released
from train.config import PROJECTOR_PARTS, TrainArgs, matches
from train.distributed import Runtime, barrier
from train.lora import merged_state_dict

STATE_FILE = "trainer_state.json"
RUN_FILE = "run.json"  # the run's settings, in OUTPUT next to its checkpoints
CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def checkpoints(output: Path) -> list[tuple[int, Path]]:
    """Complete resumable checkpoints of a run folder, oldest first."""
    found = []
    for path in Path(output).glob("checkpoint-*"):
        m = CHECKPOINT.match(path.name)
        if m and (path / STATE_FILE).is_file():
            found.append((int(m.group(1)), path))
    return sorted(found)


def latest(output: Path) -> Path | None:
    found = checkpoints(output)
    return found[-1][1] if found else None


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextlib.contextmanager
def _quiet(rt: Runtime):
    """torch.distributed.checkpoint warns that it runs in one process; that is intended here."""
    with warnings.catch_warnings():
        if not rt.distributed:
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def _options():
    """Trained weights only (frozen ones come from the starting files again); ``strict=False``
    because the frozen ones are then absent - every trained one is still required by ``dcp.load``."""
    return StateDictOptions(ignore_frozen_params=True, strict=False)


def save_state(output: Path, step: int, wrapped: nn.Module, optimizer, scheduler, info: dict[str, Any],
               rt: Runtime, keep: int) -> Path:
    """Write ``checkpoint-<step>`` (all ranks take part) and drop older ones beyond ``keep``."""
    final = Path(output) / f"checkpoint-{step}"
    tmp = Path(output) / f".checkpoint-{step}.partial"
    if rt.is_main and tmp.exists():
        shutil.rmtree(tmp)
    barrier(rt)
    model_state, optim_state = get_state_dict(wrapped, optimizer, options=_options())
    with _quiet(rt):
        dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=str(tmp))
    torch.save(rng_state(), tmp / f"rng-{rt.rank}.pt")
    barrier(rt)
    if rt.is_main:
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        (tmp / STATE_FILE).write_text(json.dumps({**info, "step": step}, indent=2))
        if final.exists():
            shutil.rmtree(final)
        tmp.replace(final)
        for _, old in checkpoints(output)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    barrier(rt)
    return final


def load_state(folder: Path, wrapped: nn.Module, optimizer, scheduler, rt: Runtime,
               optimizer_too: bool = True) -> dict[str, Any]:
    """Restore what :func:`save_state` wrote; returns its info (``step`` etc.)."""
    model_state, optim_state = get_state_dict(wrapped, optimizer, options=_options())
    state = {"model": model_state, "optim": optim_state} if optimizer_too else {"model": model_state}
    with _quiet(rt):
        dcp.load(state, checkpoint_id=str(folder))
    set_state_dict(wrapped, optimizer, model_state_dict=state["model"],
                   optim_state_dict=state.get("optim", optim_state), options=_options())
    if scheduler is not None:
        scheduler.load_state_dict(torch.load(folder / "scheduler.pt", weights_only=True))
    rng = folder / f"rng-{rt.rank}.pt"
    if rng.is_file():
        set_rng_state(torch.load(rng, weights_only=False))
    return json.loads((folder / STATE_FILE).read_text())


# --------------------------------------------------------------------------------- finished model
class _StateView:
    """What ``save_released`` needs from a model (``state_dict()`` and ``config``), from a plain dict."""

    def __init__(self, state: dict[str, torch.Tensor], config):
        self._state, self.config = state, config

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self._state


def full_state(wrapped: nn.Module, model: nn.Module, lora: bool) -> dict[str, torch.Tensor]:
    """The whole model's weights under released names (FSDP shards gathered; LoRA merged)."""
    if lora:
        return merged_state_dict(model)
    state = get_model_state_dict(wrapped, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return {k[len("model."):] if k.startswith("model.") else k: v for k, v in state.items()}


def save_model(output: Path, state: dict[str, torch.Tensor], config, stage: int,
               sources: dict[str, Path | None]) -> Path:
    """Write the released layout (+ ``mm_projector.bin`` after stage 1) and the files chat needs."""
    output = Path(output)
    save_released(_StateView(state, config), output, dtype=torch.bfloat16)
    if stage == 1:
        projector = {k: v.detach().to("cpu", torch.bfloat16) for k, v in state.items()
                     if matches(k, PROJECTOR_PARTS) and v.is_floating_point()}  # parameters only, as the reference
        torch.save(projector, output / PROJECTOR_FILE)
    copy_support_files(output, sources)
    return output


def model_sources(args: TrainArgs, vocab: Path) -> dict[str, Path | None]:
    """Where the files besides the weights come from: the LLaMA tokenizer's folder, the Q-Former
    vocabulary the run used, and EVA (``--vision``, else the ``--init`` folder's)."""
    return {"tokenizer": Path(args.init or args.llm), "vocab": vocab,
            "eva": find_part(EVA_FILE, args.init, args.vision)}


def copy_support_files(output: Path, sources: dict[str, Path | None]) -> None:
    """LLaMA tokenizer files, the Q-Former vocabulary and (hard-linked when possible) eva_vit_g.pth."""
    tokenizer_dir = sources.get("tokenizer")
    for name in TOKENIZER_FILES:
        src = tokenizer_dir / name if tokenizer_dir else None
        if src is not None and src.is_file() and src.resolve() != (output / name).resolve():
            shutil.copyfile(src, output / name)
    vocab = sources.get("vocab")
    if vocab is not None and Path(vocab).is_file():
        shutil.copyfile(vocab, output / VOCAB_FILE)
    eva = sources.get("eva")
    target = output / EVA_FILE
    if eva is not None and Path(eva).is_file() and not target.exists():
        try:
            os.link(eva, target)
        except OSError:  # another file system: the bf16 copy inside the shards is used instead
            pass
