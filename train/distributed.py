"""One process per GPU under ``torchrun`` (one machine or several), or a single process.

``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous address; the process
group uses NCCL on GPUs and gloo on CPUs. The training step is wrapped in DDP (every GPU holds the
whole model) or FSDP2 (``fully_shard``: parameters, gradients and AdamW state sharded across GPUs,
the equivalent of DeepSpeed ZeRO-3, or ZeRO-2 with ``shard_grad_op``).
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.nn.parallel import DistributedDataParallel

from llamavid.errors import UserError

FSDP_MODES = ("full_shard", "shard_grad_op")


@dataclass
class Runtime:
    """Where this process sits: rank, world size and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def pick_device(preference: str, local_rank: int) -> torch.device:
    if preference == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(preference)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {preference}: no CUDA GPU is visible to PyTorch")
    if device.type == "cuda" and device.index is None:
        device = torch.device(f"cuda:{local_rank}")
    return device


def init_runtime(preference: str = "auto") -> Runtime:
    """Join the process group when started by torchrun; otherwise a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(preference, local)
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    return Runtime(rank, world, local, device)


def shutdown(rt: Runtime) -> None:
    if rt.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(rt: Runtime) -> None:
    if rt.distributed:
        dist.barrier()


def all_reduce_sum(values: torch.Tensor, rt: Runtime) -> torch.Tensor:
    """Sum over ranks (a copy, on the process group's device)."""
    if not rt.distributed:
        return values
    out = values.detach().clone().to(rt.device)
    dist.all_reduce(out)
    return out


def any_rank(flag: bool, rt: Runtime) -> bool:
    """True on every rank if it is true on one (all ranks must stop at the same step)."""
    return bool(all_reduce_sum(torch.tensor([float(flag)]), rt).item() > 0)


def wrap(step: nn.Module, rt: Runtime, fsdp: str | None, bf16: bool) -> nn.Module:
    """DDP or FSDP2 around the training step; the step itself when there is one process."""
    if fsdp:
        if fsdp not in FSDP_MODES:
            raise UserError(f"--fsdp must be one of {', '.join(FSDP_MODES)}, got {fsdp!r}")
        return shard(step, rt, reshard=fsdp == "full_shard", bf16=bf16)
    if not rt.distributed:
        return step
    ids = [rt.device.index] if rt.device.type == "cuda" else None
    return DistributedDataParallel(step, device_ids=ids, gradient_as_bucket_view=True)


def shard(step: nn.Module, rt: Runtime, reshard: bool, bf16: bool) -> nn.Module:
    """FSDP2: each decoder layer is a unit; EVA, the Q-Former, projectors and embeddings form the root.

    The root is gathered once per micro-batch, so the vision side may run any number of times in a
    step (ranks see different images) without unbalanced collectives.
    """
    if not rt.distributed:
        raise UserError("--fsdp needs several processes: start the run with torchrun --nproc-per-node N")
    policy = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16
              else MixedPrecisionPolicy())
    for layer in step.model.model.layers:
        fully_shard(layer, mp_policy=policy, reshard_after_forward=reshard)
    fully_shard(step, mp_policy=policy, reshard_after_forward=reshard)
    return step


@contextlib.contextmanager
def gradient_sync(wrapped: nn.Module, enabled: bool) -> Iterator[None]:
    """Skip the gradient all-reduce on micro-batches that are not the last of an optimizer step."""
    if hasattr(wrapped, "no_sync") and not enabled:  # DDP
        with wrapped.no_sync():
            yield
        return
    if hasattr(wrapped, "set_requires_gradient_sync"):  # FSDP2
        wrapped.set_requires_gradient_sync(enabled)
    yield
