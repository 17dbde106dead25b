"""The training loop: a plain PyTorch loop that runs the same on one CPU, one GPU or many under torchrun.

Per optimizer step: ``grad_accum`` micro-batches (gradients synchronised on the last one only),
gradient clipping, AdamW, the cosine schedule. Every ``save_steps`` and at the end a resumable
checkpoint; at the end the model in the released layout. SIGTERM / SIGINT (a cluster pre-empting
the job, Ctrl-C) finish the current step, save a checkpoint and stop; ``--resume auto`` (the
default) continues from it. A run killed without warning continues from its last checkpoint.
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import math
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from llamavid.errors import UserError
from llamavid.files import CONFIG, VOCAB_FILE
from llamavid.model.qformer import load_qformer_tokenizer
from llamavid.runtime.api import load_llm_tokenizer
from train.checkpoint import RUN_FILE, STATE_FILE, full_state, latest, load_state, model_sources, save_model, save_state
from train.config import LLM, TrainArgs, trainable_prefixes
from train.dataset import DataOptions, LlavaDataset, collate
from train.distributed import Runtime, all_reduce_sum, any_rank, barrier, gradient_sync, init_runtime, shutdown, wrap
from train.init import build_model, checkpoint_shape
from train.lora import add_lora, estimate_gib, is_lora
from train.params import cast_frozen, count, param_groups, set_trainable
from train.progress import Progress
from train.records import read_records
from train.sampler import epoch_order, micro_batches_per_epoch, rank_batches
from train.step import TrainStep
from train.validate import CheckOptions, validate

# Settings that may change when a run is resumed; anything else must match the first start.
RESUMABLE_CHANGES = {"output", "num_workers", "log_every", "tensorboard", "resume", "device", "validate",
                     "save_total_limit", "skip_bad_samples", "save_steps"}


@dataclass
class TrainResult:
    output: Path
    step: int
    total_steps: int
    losses: list[float] = field(default_factory=list)
    stopped_early: bool = False
    model: nn.Module | None = None
    rank: int = 0


# ------------------------------------------------------------------------------------ the plan
@dataclass
class Plan:
    """Which samples every optimizer step of the run sees on this rank (a pure function of the seed)."""

    lengths: list[int]
    batch_size: int
    world_size: int
    rank: int
    accum: int
    seed: int
    group_by_modality: bool
    epochs: float
    max_steps: int | None

    def __post_init__(self) -> None:
        self._orders: dict[int, list[list[int]]] = {}
        self.micro_per_epoch = micro_batches_per_epoch(len(self.lengths), self.batch_size, self.world_size)
        self.steps_per_epoch = math.ceil(self.micro_per_epoch / self.accum)
        self.total_steps = self.max_steps or math.ceil(self.epochs * self.steps_per_epoch)

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        if epoch not in self._orders:
            order = epoch_order(self.lengths, self.batch_size, self.world_size, self.seed, epoch,
                                self.group_by_modality)
            self._orders = {epoch: rank_batches(order, self.batch_size, self.world_size, self.rank)}
        return self._orders[epoch]

    def step_batches(self, step: int) -> list[list[tuple[int, int]]]:
        """Micro-batches of optimizer step ``step`` (0-based), as lists of (epoch, index)."""
        epoch, k = divmod(step, self.steps_per_epoch)
        batches = self.epoch_batches(epoch)[k * self.accum:(k + 1) * self.accum]
        return [[(epoch, i) for i in batch] for batch in batches]

    def micro_batches(self, start: int) -> Iterator[list[tuple[int, int]]]:
        for step in range(start, self.total_steps):
            yield from self.step_batches(step)


# ------------------------------------------------------------------------------------ set-up
def prepare_args(args: TrainArgs, world_size: int) -> TrainArgs:
    """Fill presets, take the model's shape from ``--init``, check options that cannot work together."""
    args = dataclasses.replace(args)  # the caller's object stays as given
    if args.init is not None and not (Path(args.init) / CONFIG).is_file():
        raise UserError(f"--init {args.init}: not a checkpoint folder (no {CONFIG})")
    # the token layout and image size continue those of the previous stage
    previous = args.init or (Path(args.projector).parent if args.projector else None)
    shape = checkpoint_shape(previous) if previous and (Path(previous) / CONFIG).is_file() else None
    if shape is not None:
        args.compress_type, args.image_size = shape["compress_type"], shape["image_size"]
    args = args.resolved()
    if args.lora_r and not args.preset.train_llm:
        raise UserError("LoRA adapts the LLM, which stage 1 does not train; use it in stage 2 or 3")
    if args.bits != 16 and not args.lora_r:
        raise UserError("--bits 4 (QLoRA) needs LoRA adapters: add --lora-r 64 (or another rank)")
    if args.lora_r and args.fsdp:
        raise UserError("LoRA with --fsdp is not supported; LoRA runs on one GPU or with DDP (torchrun without --fsdp)")
    if args.grad_accum is None:
        per_step = args.batch_size * world_size
        if args.global_batch % per_step:
            raise UserError(f"global batch {args.global_batch} is not a multiple of batch size {args.batch_size} x "
                            f"{world_size} processes; set --grad-accum or --global-batch")
        args.grad_accum = args.global_batch // per_step
    args.global_batch = args.batch_size * world_size * args.grad_accum
    args.image_folder = Path(args.image_folder or Path(args.data).parent)
    args.video_folder = Path(args.video_folder or Path(args.data).parent)
    return args


def check_resume(args: TrainArgs, output: Path) -> Path | None:
    """The checkpoint to continue from (or None), refusing settings that differ from the first start."""
    found = latest(output)
    if args.resume == "never":
        if found:
            raise UserError(f"{output} already holds a run ({found.name}); continue it with --resume auto "
                            "or choose another --output")
        return None
    if args.resume not in ("auto", "never"):
        found = Path(args.resume)
        if not (found / STATE_FILE).is_file():
            raise UserError(f"--resume {found}: not a complete checkpoint folder (no {STATE_FILE})")
    run_file = output / RUN_FILE
    if found and run_file.is_file():
        before = json.loads(run_file.read_text())
        now = args.to_json()
        changed = sorted(k for k in now if k not in RESUMABLE_CHANGES and before.get(k) != now[k])
        if changed:
            raise UserError(f"cannot resume {found}: these settings differ from the run's first start: "
                            + ", ".join(f"{k} ({before.get(k)!r} -> {now[k]!r})" for k in changed))
    return found


def tokenizers(args: TrainArgs) -> tuple[Any, Any, Path]:
    source = Path(args.init or args.llm)
    tok = load_llm_tokenizer(source)
    if tok is None:
        raise UserError(f"{source}: no LLaMA tokenizer (tokenizer.model / tokenizer.json) in this folder")
    vocab = Path(args.qformer_vocab) if args.qformer_vocab else source / VOCAB_FILE
    if not vocab.is_file():
        raise UserError(f"no Q-Former vocabulary at {vocab}: pass --qformer-vocab (bert-base-uncased vocab.txt)")
    return tok, load_qformer_tokenizer(vocab), vocab


def attention_implementation(choice: str, device: torch.device) -> str:
    """flash-attn 2 when installed and on a GPU, otherwise PyTorch's SDPA."""
    if choice != "auto":
        return choice
    return "flash_attention_2" if device.type == "cuda" and importlib.util.find_spec("flash_attn") else "sdpa"


def enable_checkpointing(model: nn.Module) -> None:
    """Recompute each decoder layer in the backward pass (non-reentrant: works with frozen inputs and FSDP)."""
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def setup_model(args: TrainArgs, rt: Runtime, bf16: bool) -> nn.Module:
    """Starting weights, frozen / trainable parts, LoRA, precision and checkpointing, on the device."""
    model = build_model(args)
    try:
        model.set_attn_implementation(attention_implementation(args.attn, rt.device))
    except (ImportError, ValueError) as exc:
        raise UserError(f"--attn {args.attn}: {exc}") from None
    prefixes = trainable_prefixes(args.preset.train_llm, args.bert_type)
    if args.lora_r:
        compute = torch.bfloat16 if bf16 else torch.float32
        add_lora(model, args.lora_r, args.lora_alpha, args.lora_dropout, args.bits, compute, rt.device)
        multimodal = tuple(p for p in prefixes if p not in LLM) if args.lora_train_multimodal else ()
        set_trainable(model, multimodal)
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.requires_grad_(True)
    else:
        set_trainable(model, prefixes)
    if bf16 and not args.fsdp:
        cast_frozen(model, torch.bfloat16)  # before moving: a frozen 7B LLM then never needs 27 GB on the GPU
    model.to(rt.device)
    if args.gradient_checkpointing:
        enable_checkpointing(model)
    model.train()
    model.model.vision_tower.eval()
    return model


def data(args: TrainArgs, tokenizer, qformer_tokenizer, say) -> LlavaDataset:
    if args.validate:
        report = validate(args.data, CheckOptions(args.stage, args.image_folder, args.video_folder,
                                                  compress_type=args.compress_type, image_size=args.image_size,
                                                  video_fps=args.video_fps, video_token=args.video_token,
                                                  trust_pickle=args.trust_pickle))
        if not report.ok and not args.skip_bad_samples:
            raise UserError(f"the data has problems; fix them or pass --skip-bad-samples:\n{report.text(10)}")
        if report.errors or report.warnings:
            say(report.text(10))
    options = DataOptions(args.image_folder, args.video_folder, args.preset.template, args.image_size,
                          args.preset.image_aspect_ratio, args.video_fps, args.video_token, args.max_frames,
                          args.trust_pickle, args.skip_bad_samples, args.seed)
    records = read_records(args.data)
    if not records:
        raise UserError(f"{args.data}: no records")
    return LlavaDataset(records, tokenizer, qformer_tokenizer, options)


def cosine_with_warmup(optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up, then cosine decay to 0: transformers' ``get_cosine_schedule_with_warmup``.

    Written out here because importing transformers' optimization module pulls in peft and
    bitsandbytes (seconds of start-up, and compilation on some machines).
    """
    def factor(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        progress = (step - warmup) / max(1, total - warmup)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def optimizer_and_schedule(wrapped: nn.Module, args: TrainArgs, total: int):
    groups = param_groups(wrapped, args.weight_decay)
    if not groups:
        raise UserError("nothing to train: every parameter is frozen")
    optimizer = torch.optim.AdamW(groups, lr=args.learning_rate, betas=(0.9, 0.999), eps=1e-8)
    warmup = math.ceil(args.warmup_ratio * total)
    return optimizer, cosine_with_warmup(optimizer, warmup, total)


# ------------------------------------------------------------------------------------ the loop
class StopFlag:
    """Set by SIGTERM / SIGINT; the loop saves and stops at the next step boundary."""

    def __init__(self) -> None:
        self.raised = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopFlag:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.raised and signum == signal.SIGINT:  # a second Ctrl-C: stop now, without saving
            raise KeyboardInterrupt
        self.raised = True

    def __exit__(self, *exc) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


def run(args: TrainArgs) -> TrainResult:
    """Train one stage; see :class:`train.config.TrainArgs` for the options."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    rt = init_runtime(args.device)
    try:
        return _run(args, rt)
    finally:
        shutdown(rt)


def _run(args: TrainArgs, rt: Runtime) -> TrainResult:
    args = prepare_args(args, rt.world_size)
    output = Path(args.output)
    resume_from = check_resume(args, output)
    bf16 = args.bf16 if args.bf16 is not None else (rt.device.type == "cuda" and torch.cuda.is_bf16_supported())
    tokenizer, qformer_tokenizer, vocab = tokenizers(args)
    dataset = data(args, tokenizer, qformer_tokenizer, print if rt.is_main else (lambda text: None))  # fail early
    torch.manual_seed(args.seed)
    model = setup_model(args, rt, bf16)
    torch.manual_seed(args.seed + rt.rank)  # same starting weights everywhere, own dropout masks per rank
    if rt.is_main:
        output.mkdir(parents=True, exist_ok=True)
        if resume_from is None:
            (output / RUN_FILE).write_text(json.dumps(args.to_json(), indent=2))
    barrier(rt)
    wrapped = wrap(TrainStep(model, args.max_length), rt, args.fsdp, bf16)
    plan = Plan(dataset.modality_lengths, args.batch_size, rt.world_size, rt.rank, args.grad_accum, args.seed,
                args.group_by_modality, args.epochs, args.max_steps)
    optimizer, scheduler = optimizer_and_schedule(wrapped, args, plan.total_steps)
    start = 0
    if resume_from is not None:
        info = load_state(resume_from, wrapped, optimizer, scheduler, rt)
        if info.get("world_size", rt.world_size) != rt.world_size:
            raise UserError(f"{resume_from} was written by {info['world_size']} processes; resume with the same number")
        start = int(info["step"])
    progress = Progress(output, plan.total_steps, start, rt.is_main, args.log_every, args.tensorboard)
    progress.message(_banner(args, rt, model, plan, resume_from, bf16))
    if rt.device.type == "cuda" and rt.is_main:
        progress.message(_memory_note(args, model, rt))
    result = TrainResult(output, start, plan.total_steps)
    try:
        with StopFlag() as stop:
            result = _loop(args, rt, wrapped, optimizer, scheduler, dataset, plan, start, progress, stop, bf16)
        _finish(args, rt, wrapped, model, optimizer, scheduler, result, vocab)
    finally:
        progress.close()
    result.model, result.rank = model, rt.rank
    return result


def _autocast(device: torch.device, bf16: bool, fsdp: str | None):
    if bf16 and not fsdp:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _loader(dataset, plan: Plan, start: int, args: TrainArgs):
    return iter(DataLoader(dataset, batch_sampler=list(plan.micro_batches(start)), collate_fn=collate,
                           num_workers=args.num_workers, generator=torch.Generator().manual_seed(args.seed),
                           prefetch_factor=2 if args.num_workers else None))


def _loop(args: TrainArgs, rt: Runtime, wrapped: nn.Module, optimizer, scheduler, dataset, plan: Plan, start: int,
          progress, stop: StopFlag, bf16: bool) -> TrainResult:
    result = TrainResult(Path(args.output), start, plan.total_steps)
    batches = _loader(dataset, plan, start, args)
    trainable = [p for p in wrapped.parameters() if p.requires_grad]
    for step in range(start, plan.total_steps):
        started = time.monotonic()
        micro = plan.step_batches(step)
        totals = torch.zeros(3)  # loss sum over micro-batches, supervised tokens, micro-batches
        for k in range(len(micro)):
            batch = next(batches)
            _report_skipped(batch, progress)
            with gradient_sync(wrapped, k == len(micro) - 1), _autocast(rt.device, bf16, args.fsdp):
                loss, tokens = wrapped(batch)
                (loss / len(micro)).backward()
            totals += torch.tensor([float(loss.detach()), float(tokens), 1.0])
        grad_norm = torch.nn.utils.clip_grad_norm_(trainable, args.max_grad_norm)
        lr = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        totals = all_reduce_sum(totals, rt).cpu()
        loss_value = float(totals[0] / totals[2])
        result.losses.append(loss_value)
        result.step = step + 1
        progress.step(step + 1, {"loss": loss_value, "lr": lr, "grad_norm": float(_full(grad_norm)),
                                 "tokens": int(totals[1]), "step_s": round(time.monotonic() - started, 3)})
        if any_rank(stop.raised, rt) and step + 1 < plan.total_steps:
            progress.message(f"stopping at step {step + 1}: saving a checkpoint to resume from")
            _save(args, rt, wrapped, optimizer, scheduler, step + 1, plan)
            result.stopped_early = True
            break
        if (step + 1) % args.save_steps == 0 and step + 1 < plan.total_steps:
            _save(args, rt, wrapped, optimizer, scheduler, step + 1, plan)
    return result


def _full(value: torch.Tensor) -> torch.Tensor:
    return value.full_tensor() if hasattr(value, "full_tensor") else value


def _report_skipped(batch, progress) -> None:
    for sample in batch:
        if sample.problem:
            progress.message(f"skipped: {sample.problem}")


def _save(args, rt, wrapped, optimizer, scheduler, step: int, plan: Plan) -> None:
    info = {"world_size": rt.world_size, "total_steps": plan.total_steps, "stage": args.stage,
            "finished": step >= plan.total_steps}
    save_state(Path(args.output), step, wrapped, optimizer, scheduler, info, rt, args.save_total_limit)


def _finish(args, rt, wrapped, model, optimizer, scheduler, result: TrainResult, vocab: Path) -> None:
    """At the end: a last resumable checkpoint and the model in the released layout."""
    if result.stopped_early:
        return
    plan_total = result.total_steps
    if not (Path(args.output) / f"checkpoint-{result.step}").is_dir():
        info = {"world_size": rt.world_size, "total_steps": plan_total, "stage": args.stage, "finished": True}
        save_state(Path(args.output), result.step, wrapped, optimizer, scheduler, info, rt, args.save_total_limit)
    state = full_state(wrapped, model, is_lora(model))
    if rt.is_main:
        save_model(Path(args.output), state, model.config, args.stage, model_sources(args, vocab))
    barrier(rt)


def _memory_note(args: TrainArgs, model: nn.Module, rt: Runtime) -> str:
    """The rough per-GPU memory this run needs, next to what the GPU has (before the first step fails)."""
    estimate = estimate_gib(model.config, lora_r=args.lora_r, bits=args.bits, train_llm=args.preset.train_llm,
                            train_multimodal=args.lora_train_multimodal or not args.lora_r,
                            seq_len=args.max_length, batch=args.batch_size)
    have = torch.cuda.get_device_properties(rt.device).total_memory / 2**30
    note = f"memory estimate without sharding: {estimate.describe()}; this GPU has {have:.0f} GiB"
    if estimate.total > have and not args.fsdp:
        note += " - probably too little: use --fsdp across GPUs, LoRA (--lora-r 64) or QLoRA (--bits 4)"
    return note


def _banner(args: TrainArgs, rt: Runtime, model: nn.Module, plan: Plan, resume_from, bf16: bool) -> str:
    trainable, total = count(model)
    where = f"resuming from {resume_from.name}" if resume_from else "starting"
    return (f"stage {args.stage} ({args.preset.template}), {where}: {plan.total_steps} steps of "
            f"{args.global_batch} samples ({args.batch_size} x {rt.world_size} processes x {args.grad_accum} "
            f"accumulation), lr {args.learning_rate:g}, max length {args.max_length}, "
            f"{'bf16' if bf16 else 'fp32'} on {rt.device}; training {trainable / 1e6:.1f}M of {total / 1e6:.1f}M "
            f"parameters")
