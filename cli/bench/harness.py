"""How the benchmarks measure: round-robin timing, JSON records with the machine they ran on, and
full-size random weights drawn the way the reference initialises them."""
from __future__ import annotations

import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
import transformers

from cli.bench.plan import (
    INIT_STD,
    LLM_SIZES,
    SMOKE_EVA,
    SMOKE_QFORMER,
    BenchPlan,
)
from llamavid.errors import CheckpointError, UserError
from llamavid.model.config import LlamaVidConfig
from llamavid.model.eva import EvaConfig, EvaVisionTower
from llamavid.model.loading import fill_buffers, load_llamavid, place
from llamavid.model.modeling import LlamaVidForCausalLM
from llamavid.runtime.device import DTYPES
from llamavid.system import cpu_info, ram


def dtype_name(dtype: Any) -> str:
    return {"torch.float32": "fp32", "torch.float16": "fp16", "torch.bfloat16": "bf16"}.get(str(dtype), str(dtype))


def synchronizer(device: Any) -> Callable[[], None]:
    """Wait for queued GPU work, so wall-clock time covers it; a no-op on CPU."""

    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    if device.type == "mps":
        return torch.mps.synchronize
    return lambda: None


@dataclass
class Timed:
    """Results of :func:`round_robin` for one variant."""

    warmup_value: Any
    warmup_s: float
    values: list[Any]
    seconds: list[float]

    @property
    def min_s(self) -> float:
        return min(self.seconds)

    @property
    def median_s(self) -> float:
        return statistics.median(self.seconds)


def round_robin(calls: dict[str, Callable[[], Any]], repeats: int,
                sync: Callable[[], None] = lambda: None,
                on_error: Callable[[str, Exception], None] | None = None) -> dict[str, Timed]:
    """One warm-up call per variant, then ``repeats`` rounds calling each variant once, in turn.

    Interleaving matters on a shared machine: a burst of load from another program slows one
    round of every variant instead of all repeats of one variant, so ratios stay fair. With
    ``on_error``, a variant whose warm-up raises (say, torch.compile on an unusual setup) is
    reported through it and dropped, and the others are still measured.
    """
    out: dict[str, Timed] = {}
    for name, call in calls.items():
        start = time.perf_counter()
        try:
            value = call()
            sync()
        except Exception as exc:  # noqa: BLE001 - handed to on_error, or re-raised
            if on_error is None:
                raise
            on_error(name, exc)
            continue
        out[name] = Timed(value, time.perf_counter() - start, [], [])
    calls = {name: call for name, call in calls.items() if name in out}
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            value = call()
            sync()
            out[name].seconds.append(time.perf_counter() - start)
            out[name].values.append(value)
    return out


def cosine(a: Any, b: Any) -> float:
    """Worst per-sample cosine similarity of two (B, ...) feature tensors, computed in float64."""

    a, b = a.detach().flatten(1).double().cpu(), b.detach().flatten(1).double().cpu()
    return float(F.cosine_similarity(a, b, dim=1).min())


def _load_1m() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):  # Windows
        return None


def say(message: str) -> None:
    """Progress on stderr, so stdout stays pure JSON lines."""
    print(f"bench: {message}", file=sys.stderr, flush=True)


class Recorder:
    """Prints each record as one JSON line as soon as it is measured, and keeps them."""

    def __init__(self, plan: BenchPlan, stream: Any = None):

        self.records: list[dict] = []
        self.stream = stream if stream is not None else sys.stdout
        self.common = {"device": plan.device.type, "threads": torch.get_num_threads(),
                       "weights": str(plan.model_folder) if plan.model_folder else "random", **plan.extra}

    def error(self, bench: str, **fields: Any) -> Callable[[str, Exception], None]:
        """An ``on_error`` for :func:`round_robin`: the failure becomes a record, the run goes on."""
        def report(variant: str, exc: Exception) -> None:
            say(f"{bench} {variant} failed: {exc.__class__.__name__}: {str(exc)[:300]}")
            self.emit({"bench": bench, "variant": variant, **fields,
                       "error": f"{exc.__class__.__name__}: {str(exc)[:300]}"})
        return report

    def emit(self, record: dict) -> dict:
        record = {**record, **self.common, "load_1m": _load_1m()}
        self.records.append(record)
        print(json.dumps(record), file=self.stream, flush=True)
        return record


def timing_fields(t: Timed, count: int, unit: str) -> dict:
    """``<unit>_per_s`` from the median, plus median / min / warm-up seconds."""
    return {f"{unit}_per_s": round(count / t.median_s, 4), "median_s": round(t.median_s, 4),
            "min_s": round(t.min_s, 4), "repeats": len(t.seconds), "warmup_s": round(t.warmup_s, 3)}


def environment(plan: BenchPlan) -> dict:

    cpu = cpu_info()
    if plan.device.type == "cuda":
        name = torch.cuda.get_device_name(plan.device)
    else:
        name = cpu.get("model name") or platform.processor() or platform.machine()
    # family / model / MHz: a cloud VM's "AMD EPYC" can be any generation, and the generation
    # decides what int8 and fp32 kernels gain (measured: 2x int8 on Zen 4, 1.3x on Zen 1)
    ids = {field: cpu[key] for key, field in (("cpu family", "cpu_family"), ("model", "cpu_model"),
                                              ("cpu MHz", "cpu_mhz")) if key in cpu}
    return {"bench": "env", "device_name": name, **ids,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cpu_count": os.cpu_count(), "torch": torch.__version__, "transformers": transformers.__version__,
            "dtype": dtype_name(plan.dtype), "smoke": plan.smoke, "repeats": plan.repeats}


def init_reference_(module: Any, seed: int, std: float = INIT_STD) -> None:
    """Random weights as the reference initialises them: N(0, std) matrices, zero biases, unit norms."""

    params = list(module.named_parameters())
    gen = torch.Generator(device=params[0][1].device).manual_seed(seed) if params else None
    with torch.no_grad():
        for name, p in params:
            if name.endswith("bias"):
                p.zero_()  # also EVA's q_bias / v_bias
            elif p.dim() == 1:
                p.fill_(1.0)  # LayerNorm / RMSNorm weights
            else:
                p.normal_(0.0, std, generator=gen)


def random_eva(cfg: Any, device: Any, seed: int = 0) -> Any:
    """Full-size EVA with reference-style random weights, built in place (no second copy in memory).

    Includes EVA's ``fix_init_weight`` (proj / fc2 scaled by 1/sqrt(2 * layer)), which keeps the
    residual stream of 39 random blocks in the range real features have.
    """
    with torch.device("meta"):
        tower = EvaVisionTower(cfg)
    tower.to_empty(device=device)
    init_reference_(tower, seed)
    with torch.no_grad():
        for i, block in enumerate(tower.vision_tower.blocks, start=1):
            block.attn.proj.weight.div_(math.sqrt(2.0 * i))
            block.mlp.fc2.weight.div_(math.sqrt(2.0 * i))
    return tower.eval().requires_grad_(False)


def eva_config_for(plan: BenchPlan, image_size: int = 224) -> Any:

    return EvaConfig(image_size=image_size, **(SMOKE_EVA if plan.smoke else {}))


def random_llamavid(plan: BenchPlan, with_llm: bool = True) -> Any:
    """A LlamaVidForCausalLM without EVA (the EVA stage builds its own), fp32, reference-style random weights.

    ``with_llm=False`` drops the decoder layers: the Q-Former stage only needs the token widths.
    """
    llm = dict(LLM_SIZES[plan.llm_size])
    if not with_llm:
        llm["num_hidden_layers"] = 0
    config = LlamaVidConfig(
        **llm, max_position_embeddings=4096, rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2, pad_token_id=0,
        tie_word_embeddings=False, mm_hidden_size=eva_config_for(plan).width, mm_vision_tower=None,
        image_size=224, compress_type="mean", qformer=dict(SMOKE_QFORMER) if plan.smoke else {})
    config._attn_implementation = "sdpa"
    with torch.device("meta"):
        model = LlamaVidForCausalLM(config)
    model.to_empty(device=plan.device)
    init_reference_(model, plan.seed + 1)
    fill_buffers(model)
    return place(model, plan.device, torch.float32).eval().requires_grad_(False)


def load_checkpoint(plan: BenchPlan) -> Any:
    """The checkpoint's model in fp32 on the device (variants are cast from it); vision only if EVA is benchmarked."""
    folder = plan.model_folder
    on_disk = sum(f.stat().st_size for f in folder.iterdir() if f.suffix in (".bin", ".safetensors", ".pth"))
    if plan.device.type == "cpu":
        ensure_memory(on_disk * 2, f"the checkpoint {folder.name} in fp32",  # released files are 16-bit
                      "benchmark random weights (leave --model out) or use a machine with more RAM")
    say(f"loading {folder} ...")
    try:
        model, _ = load_llamavid(folder, device=plan.device, dtype=torch.float32, search_dirs=plan.search_dirs,
                                 load_vision="eva" in plan.stages)
    except (CheckpointError, FileNotFoundError, ValueError) as exc:
        raise UserError(f"--model {folder}: {exc}") from exc
    return model


def ensure_memory(needed: int, what: str, advice: str) -> None:
    """Fail in one sentence before allocating what cannot fit, instead of being killed by the OS."""
    available = ram().available
    if available is not None and needed > 0.9 * available:
        raise UserError(f"{what} needs about {needed / 1e9:.1f} GB of RAM but {available / 1e9:.1f} GB are "
                        f"available; {advice}")


def bench_dtype(name: str, device: Any) -> Any:
    """bf16 on CUDA (the issue's GPU target), fp16 on MPS, fp32 on CPU (bf16 is ~4x slower without AVX512-BF16)."""
    if name == "auto":
        return {"cuda": torch.bfloat16, "mps": torch.float16}.get(device.type, torch.float32)
    return DTYPES[name]
