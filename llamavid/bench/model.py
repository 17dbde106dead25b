"""``llamavid bench``: how fast each stage runs on this machine, one JSON line per measurement.

Why it exists: the cost of LLaMA-VID on a film is EVA once per frame (hours on a CPU), the
Q-Former once per question and frame, then the LLM. This measures the three on whatever device
is present, side by side with the formulations they replace, so a change can be judged by one
command and its numbers quoted in notes and issues:

* ``eva``: frames/s of EVA-ViT-g at 224 and 336 px for the reference's eager attention
  (scale q, q @ k^T, softmax, @ v), ours (SDPA) and, on CPU, dynamic int8 Linear layers
  (:mod:`llamavid.quantize`); each with the cosine of its features to fp32 eager.
* ``qformer``: frames/s of ``LlamaVidForCausalLM.visual_tokens`` (Q-Former + context and content
  tokens, exactly as the model runs it) for one block of frames and a ~20-token question.
* ``llm``: prefill and decode tokens/s of our streaming loop (:func:`llamavid.generate.stream`)
  and of transformers' ``generate`` on the same weights, dtype and device.

Without ``--model`` the weights are random at full size (EVA-ViT-g, the bert-base Q-Former, a
1.1B LLaMA on CPU / 7B on GPU), drawn the way the reference initialises them; speed does not
depend on the values. Variants are timed round-robin (one warm-up each, then ``--repeats``
rounds over all variants) so that load from other programs hits them alike; min and median are
reported. The first line (``"bench": "env"``) records the machine, threads and load average.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import statistics
import sys
import time
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llamavid.errors import UserError, require
from llamavid.system import cpu_info, ram

STAGES = ("eva", "qformer", "llm", "llamacpp")
DEFAULT_STAGES = ("eva", "qformer", "llm")  # llamacpp writes GGUF files of the LLM (GBs at 1b): opt-in
DTYPE_NAMES = ("auto", "fp32", "fp16", "bf16")
#: LLaMA sizes for random weights: "1b" is TinyLlama-shaped (docs: cpu-anchors section 4), "7b" Vicuna-7B.
LLM_SIZES: dict[str, dict[str, int]] = {
    "tiny": dict(vocab_size=320, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=4),
    "1b": dict(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
               num_attention_heads=32, num_key_value_heads=4),
    "7b": dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
               num_attention_heads=32, num_key_value_heads=32),
}
#: ``--smoke`` sizes: every code path in a few seconds, for the test suite and CI.
SMOKE_EVA = dict(width=176, depth=2, mlp_hidden=256)
SMOKE_QFORMER = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                     vocab_size=200)
#: Defaults of the options whose ``--smoke`` value differs.
FULL = dict(repeats=3, frames=64, question_tokens=20, prompt_tokens=512, new_tokens=64)
SMOKE = dict(repeats=1, frames=4, question_tokens=8, prompt_tokens=16, new_tokens=4)
INIT_STD = 0.02  # the reference's trunc_normal_(std=.02); truncation at +-2 never bites at this std


# ------------------------------------------------------------------------------------------ plan
@dataclass
class BenchPlan:
    """Everything a benchmark run needs, validated; build it with :func:`make_plan` or directly."""

    stages: tuple[str, ...] = DEFAULT_STAGES
    device: Any = None  # torch.device; None = pick
    dtype: Any = None  # torch.dtype of the timed variants; None = pick for the device
    repeats: int = 3
    sizes: tuple[int, ...] = (224, 336)
    batches: tuple[int, ...] = (1, 4)
    frames: int = 64
    question_tokens: int = 20
    prompt_tokens: int = 512
    new_tokens: int = 64
    llm_size: str = "1b"
    compile: bool = False
    smoke: bool = False
    model_folder: Path | None = None
    search_dirs: tuple[Path, ...] = ()  # where the loader also looks for eva_vit_g.pth / bert_vocab.txt
    threads: int | None = None
    seed: int = 0
    extra: dict = field(default_factory=dict)  # copied into every record (e.g. a run label)


def bench_dtype(name: str, device: Any) -> Any:
    """bf16 on CUDA (the issue's GPU target), fp16 on MPS, fp32 on CPU (bf16 is ~4x slower without AVX512-BF16)."""
    import torch

    from llamavid.runtime.device import DTYPES

    if name == "auto":
        return {"cuda": torch.bfloat16, "mps": torch.float16}.get(device.type, torch.float32)
    return DTYPES[name]


def resolve_model(name: str, data_dir: Any) -> tuple[Path, list[Path]]:
    """The checkpoint folder for ``--model`` (as every command resolves it) and the shared folders
    the loader searches for ``eva_vit_g.pth`` and the Q-Former vocabulary."""
    from llamavid.hub.installed import resolve_model as resolve
    from llamavid.hub.installed import search_dirs
    from llamavid.paths import resolve_data_dir

    data_dir = data_dir if data_dir is not None else resolve_data_dir(None)
    return resolve(name, data_dir), search_dirs(data_dir)


# ------------------------------------------------------------------------------------- measuring
def dtype_name(dtype: Any) -> str:
    return {"torch.float32": "fp32", "torch.float16": "fp16", "torch.bfloat16": "bf16"}.get(str(dtype), str(dtype))


def synchronizer(device: Any) -> Callable[[], None]:
    """Wait for queued GPU work, so wall-clock time covers it; a no-op on CPU."""
    import torch

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
    import torch.nn.functional as F

    a, b = a.detach().flatten(1).double().cpu(), b.detach().flatten(1).double().cpu()
    return float(F.cosine_similarity(a, b, dim=1).min())


def _load_1m() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):  # Windows
        return None


def _say(message: str) -> None:
    """Progress on stderr, so stdout stays pure JSON lines."""
    print(f"bench: {message}", file=sys.stderr, flush=True)


class Recorder:
    """Prints each record as one JSON line as soon as it is measured, and keeps them."""

    def __init__(self, plan: BenchPlan, stream: Any = None):
        import torch

        self.records: list[dict] = []
        self.stream = stream if stream is not None else sys.stdout
        self.common = {"device": plan.device.type, "threads": torch.get_num_threads(),
                       "weights": str(plan.model_folder) if plan.model_folder else "random", **plan.extra}

    def error(self, bench: str, **fields: Any) -> Callable[[str, Exception], None]:
        """An ``on_error`` for :func:`round_robin`: the failure becomes a record, the run goes on."""
        def report(variant: str, exc: Exception) -> None:
            _say(f"{bench} {variant} failed: {exc.__class__.__name__}: {str(exc)[:300]}")
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
    import torch
    import transformers

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


# ------------------------------------------------------------------------------------- weights
def init_reference_(module: Any, seed: int, std: float = INIT_STD) -> None:
    """Random weights as the reference initialises them: N(0, std) matrices, zero biases, unit norms."""
    import torch

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
    import torch

    from llamavid.model.eva import EvaVisionTower

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
    from llamavid.model.eva import EvaConfig

    return EvaConfig(image_size=image_size, **(SMOKE_EVA if plan.smoke else {}))


def random_llamavid(plan: BenchPlan, with_llm: bool = True) -> Any:
    """A LlamaVidForCausalLM without EVA (the EVA stage builds its own), fp32, reference-style random weights.

    ``with_llm=False`` drops the decoder layers: the Q-Former stage only needs the token widths.
    """
    import torch

    from llamavid.model.config import LlamaVidConfig
    from llamavid.model.loading import fill_buffers, place
    from llamavid.model.modeling import LlamaVidForCausalLM

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
    import torch

    from llamavid.errors import CheckpointError
    from llamavid.model.loading import load_llamavid

    folder = plan.model_folder
    on_disk = sum(f.stat().st_size for f in folder.iterdir() if f.suffix in (".bin", ".safetensors", ".pth"))
    if plan.device.type == "cpu":
        ensure_memory(on_disk * 2, f"the checkpoint {folder.name} in fp32",  # released files are 16-bit
                      "benchmark random weights (leave --model out) or use a machine with more RAM")
    _say(f"loading {folder} ...")
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


# ------------------------------------------------------------------------------------------- EVA
def reference_attention(attn: Any, x: Any) -> Any:
    """EVA attention as the reference (LAVIS ``eva_vit.py``) writes it, on our module's weights.

    q is scaled first, then q @ k^T, softmax and @ v are separate ops in the model's dtype: the
    formulation our SDPA path replaces, kept here as the baseline it is measured against.
    """
    import torch
    import torch.nn.functional as F

    b, n, _ = x.shape
    if getattr(attn, "qkv_fused_bias", False):
        qkv = attn.qkv(x)
    else:
        bias = torch.cat([attn.q_bias, torch.zeros_like(attn.v_bias), attn.v_bias])
        qkv = F.linear(x, attn.qkv.weight, bias)
    qkv = qkv.reshape(b, n, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    q = q * attn.scale
    weights = (q @ k.transpose(-2, -1)).softmax(dim=-1)
    return attn.proj((weights @ v).transpose(1, 2).reshape(b, n, -1))


@contextmanager
def reference_attention_in(tower: Any) -> Iterator[None]:
    """Run ``tower`` with :func:`reference_attention` inside the block, then restore our attention."""
    from llamavid.model.eva import Attention

    attns = [m for m in tower.modules() if isinstance(m, Attention)]
    for attn in attns:
        attn.forward = types.MethodType(reference_attention, attn)
    try:
        yield
    finally:
        for attn in attns:
            del attn.forward


def tower_at(base: Any, image_size: int, dtype: Any = None) -> Any:
    """A tower for ``image_size`` sharing ``base``'s weights (only the position table is resized)."""
    from llamavid.model.eva import EvaVisionTower

    param = next(base.vision_tower.parameters())
    cfg = dataclasses.replace(base.cfg, image_size=image_size)
    tower = EvaVisionTower.from_state_dict(base.vision_tower.state_dict(), cfg, device=param.device,
                                           dtype=dtype or param.dtype)
    return tower.eval().requires_grad_(False)


def eva_variants(plan: BenchPlan, base: Any, image_size: int) -> dict[str, Callable[[Any], Any]]:
    """Variant name -> function(pixels) -> features, all on the same weights."""
    import torch

    from llamavid.model.quantize_vision import quantize_vision

    dt = dtype_name(plan.dtype)
    tower = tower_at(base, image_size, plan.dtype)

    def eager(x: Any) -> Any:
        with reference_attention_in(tower):
            return tower(x)

    variants: dict[str, Callable[[Any], Any]] = {f"eager-{dt}": eager, f"sdpa-{dt}": tower}
    if plan.device.type == "cpu":
        int8 = quantize_vision(tower_at(base, image_size, torch.float32), "int8")
        variants["sdpa-int8"] = int8
    if plan.compile:
        compiled = torch.compile(tower.vision_tower)
        variants[f"sdpa-{dt}-compiled"] = lambda x: compiled(x.to(plan.dtype)).float()
    return variants


def bench_eva(plan: BenchPlan, rec: Recorder, base: Any) -> None:
    """EVA frames/s for every size x batch x variant, with cosine to fp32 eager and speed-up vs eager."""
    import torch

    sync = synchronizer(plan.device)
    eager_name = f"eager-{dtype_name(plan.dtype)}"
    for size in plan.sizes:
        variants = eva_variants(plan, base, size)
        reference = tower_at(base, size, torch.float32) if plan.dtype != torch.float32 else None
        for batch in plan.batches:
            _say(f"eva {size}px batch {batch}: {', '.join(variants)} ({plan.repeats} rounds)")
            gen = torch.Generator().manual_seed(plan.seed + size + batch)
            pixels = torch.randn(batch, 3, size, size, generator=gen).to(plan.device)
            with torch.inference_mode():
                calls = {name: (lambda f=f, x=pixels: f(x)) for name, f in variants.items()}
                results = round_robin(calls, plan.repeats, sync,
                                      rec.error("eva", image_size=size, batch=batch))
                if reference is not None:  # fp32 eager, untimed: what every variant is compared with
                    with reference_attention_in(reference):
                        want = reference(pixels)
                else:
                    want = results[eager_name].warmup_value if eager_name in results else None
            eager = results.get(eager_name)
            for name, t in results.items():
                rec.emit({"bench": "eva", "variant": name, "image_size": size, "batch": batch,
                          **timing_fields(t, batch, "frames"),
                          "cosine_vs_fp32": round(cosine(t.warmup_value, want), 6) if want is not None else None,
                          "speedup_vs_eager": round(eager.median_s / t.median_s, 3) if eager else None})
            del results, want
        del variants, reference


# ------------------------------------------------------------------------------- Q-Former + tokens
TOKEN_SIDE = ("vlm_att_encoder", "vlm_att_projector", "vlm_att_key_projector", "vlm_att_val_projector",
              "mm_projector", "vlm_att_ln")


def token_twin(model: Any, convert: Callable[[Any], Any]) -> Any:
    """A second view of ``model`` whose Q-Former side is a converted deep copy; the LLM stays shared.

    ``model.visual_tokens`` then runs the converted parts exactly as the model runs its own, and
    the fp32 original stays available for round-robin timing and accuracy checks.
    """
    import copy

    import torch

    twin = copy.copy(model)
    twin._modules = dict(model._modules)
    inner = copy.copy(model.model)
    inner._modules = dict(model.model._modules)
    inner._parameters = dict(model.model._parameters)
    for name in TOKEN_SIDE:
        if inner._modules.get(name) is not None:
            inner._modules[name] = copy.deepcopy(inner._modules[name])
    converted = convert(inner)
    inner = converted if converted is not None else inner
    query = model.model.vlm_att_query
    target = next(inner.vlm_att_encoder.parameters())
    if target.dtype in (torch.float16, torch.bfloat16) and query.dtype != target.dtype:
        inner._parameters["vlm_att_query"] = torch.nn.Parameter(query.detach().to(target.dtype), requires_grad=False)
    twin._modules["model"] = inner
    return twin


def _cast_token_side(dtype: Any) -> Callable[[Any], None]:
    def convert(inner: Any) -> None:
        for name in TOKEN_SIDE:
            if inner._modules.get(name) is not None:
                inner._modules[name].to(dtype)
    return convert


def _unfold(inner: Any) -> None:
    """The textbook Q-Former: keys and values projected from every patch row, for comparison with
    the folded cross-attention and context keys (llamavid.qformer / llamavid.tokens). Those take
    the shortcut only for modules that are exactly ``nn.Linear``; a subclass opts out."""
    from torch import nn

    class Projected(nn.Linear):
        pass

    for module in [inner.vlm_att_key_projector, *inner.vlm_att_encoder.modules()]:
        if type(module) is nn.Linear:
            module.__class__ = Projected


def qformer_variants(plan: BenchPlan, model: Any) -> dict[str, Any]:
    """Variant name -> a model whose ``visual_tokens`` is timed."""
    import torch

    from llamavid.model.quantize_vision import quantize_vision

    variants: dict[str, Any] = {"fp32": model, "fp32-unfolded": token_twin(model, _unfold)}
    if plan.dtype != torch.float32:
        variants[dtype_name(plan.dtype)] = token_twin(model, _cast_token_side(plan.dtype))
    if plan.device.type == "cpu":
        variants["int8"] = token_twin(model, lambda inner: quantize_vision(inner, "int8", vision=False, qformer=True))
    if plan.compile:
        def compile_encoder(inner: Any) -> None:
            _cast_token_side(plan.dtype)(inner)
            inner._modules["vlm_att_encoder"] = torch.compile(inner._modules["vlm_att_encoder"])
        variants[f"{dtype_name(plan.dtype)}-compiled"] = token_twin(model, compile_encoder)
    return variants


def bench_qformer(plan: BenchPlan, rec: Recorder, model: Any) -> None:
    """frames/s of ``visual_tokens`` for one block of ``plan.frames`` frames and one question."""
    import torch

    sync = synchronizer(plan.device)
    cfg = model.config
    tokens_per_frame = eva_config_for(plan).num_patches + 1
    gen = torch.Generator().manual_seed(plan.seed + 7)
    feats = torch.randn(plan.frames, tokens_per_frame, cfg.mm_hidden_size, generator=gen).to(plan.device)
    vocab = model.model.vlm_att_encoder.bert.embeddings.word_embeddings.num_embeddings
    ids = torch.randint(min(1000, vocab // 2), vocab, (1, plan.question_tokens), generator=gen)
    mask = torch.ones_like(ids)
    variants = qformer_variants(plan, model)
    _say(f"qformer {plan.frames} frames, {plan.question_tokens}-token question: {', '.join(variants)} "
         f"({plan.repeats} rounds)")

    def call(m: Any) -> Callable[[], Any]:
        return lambda: m.visual_tokens(feats, ids, mask, block_size=plan.frames, keep_parts=True)

    with torch.inference_mode():
        results = round_robin({name: call(m) for name, m in variants.items()}, plan.repeats, sync,
                              rec.error("qformer", frames=plan.frames))
    fp32 = results["fp32"]  # the model itself: if it fails, that is a bug to see
    want = fp32.warmup_value
    for name, t in results.items():
        got = t.warmup_value
        rec.emit({"bench": "qformer", "variant": name, "frames": plan.frames,
                  "question_tokens": plan.question_tokens, **timing_fields(t, plan.frames, "frames"),
                  "s_per_hour_1fps": round(3600 * t.median_s / plan.frames, 1),
                  "cosine_vs_fp32": round(cosine(got.part("context_tokens"), want.part("context_tokens")), 6),
                  "cosine_content_vs_fp32": round(cosine(got.part("content_tokens"), want.part("content_tokens")), 6),
                  "speedup_vs_fp32": round(fp32.median_s / t.median_s, 3)})


# ------------------------------------------------------------------------------------------- LLM
@dataclass
class Generation:
    tokens: list[int]
    prefill_s: float  # prompt through the model and the first token chosen
    decode_s: float  # the remaining new tokens


def _ours(model: Any, ids: Any, new_tokens: int, sync: Callable[[], None]) -> Generation:
    """Our loop, fed embeddings as the app does (text embeddings; visual tokens would be spliced in)."""
    import torch

    from llamavid.runtime.generate import SamplingOptions, stream

    opts = SamplingOptions(max_new_tokens=new_tokens, temperature=0, stop_ids=())
    start = time.perf_counter()
    with torch.inference_mode():
        steps = stream(model, model.get_input_embeddings()(ids), opts)
        tokens = [next(steps).token]
        sync()
        first = time.perf_counter()
        tokens += [step.token for step in steps]
    sync()
    return Generation(tokens, first - start, time.perf_counter() - first)


def _hf(model: Any, ids: Any, new_tokens: int, sync: Callable[[], None], **kwargs: Any) -> Generation:
    """transformers' generate, greedy, exactly ``new_tokens`` tokens; a streamer stamps the first one."""
    import torch
    from transformers.generation.streamers import BaseStreamer

    class Clock(BaseStreamer):
        """generate() calls put() with the prompt, then once per chosen token (after a GPU sync)."""

        def __init__(self) -> None:
            self.stamps: list[float] = []

        def put(self, value: Any) -> None:
            self.stamps.append(time.perf_counter())

        def end(self) -> None:
            pass

    clock = Clock()
    start = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                             min_new_tokens=new_tokens, do_sample=False, num_beams=1, streamer=clock,
                             pad_token_id=0, **kwargs)
    sync()
    end = time.perf_counter()
    first = clock.stamps[1] if len(clock.stamps) > 1 else end
    return Generation(out[0, ids.shape[1]:].tolist(), first - start, end - first)


def llm_variants(plan: BenchPlan, model: Any, ids: Any) -> dict[str, Callable[[], Generation]]:
    sync = synchronizer(plan.device)
    n = plan.new_tokens
    variants = {"ours-stream": lambda: _ours(model, ids, n, sync),
                "hf-generate": lambda: _hf(model, ids, n, sync)}
    if plan.compile:  # transformers compiles the decode step itself when the cache is static
        variants["hf-generate-static"] = lambda: _hf(model, ids, n, sync, cache_implementation="static")
    return variants


def bench_llm(plan: BenchPlan, rec: Recorder, model: Any) -> None:
    """Prefill and decode tokens/s of our loop and of ``generate`` on the same weights, dtype and device."""
    import torch

    from llamavid.model.loading import place

    if model.dtype != plan.dtype:
        place(model, plan.device, plan.dtype)  # keeps RoPE's inverse frequencies in fp32
    gen = torch.Generator().manual_seed(plan.seed + 11)
    vocab = model.config.vocab_size
    ids = torch.randint(3, vocab, (1, plan.prompt_tokens), generator=gen).to(plan.device)
    params = sum(p.numel() for n, p in model.named_parameters()
                 if n.startswith(("model.layers", "model.embed_tokens", "model.norm", "lm_head")))
    variants = llm_variants(plan, model, ids)
    _say(f"llm {plan.llm_size if plan.model_folder is None else plan.model_folder.name} ({params / 1e9:.2f}B, "
         f"{dtype_name(plan.dtype)}), prompt {plan.prompt_tokens}, {plan.new_tokens} new tokens: "
         f"{', '.join(variants)} ({plan.repeats} rounds)")
    results = round_robin(variants, plan.repeats, on_error=rec.error("llm"))  # each call syncs itself
    ours = results.get("ours-stream")
    common = {"bench": "llm", "llm_params": params, "dtype": dtype_name(plan.dtype)}
    for name, t in results.items():
        runs: list[Generation] = t.values
        prefill = [g.prefill_s for g in runs]
        decode = [g.decode_s for g in runs]
        steps = max(1, plan.new_tokens - 1)
        agree = None
        if ours is not None and name != "ours-stream":
            mine, theirs = ours.warmup_value.tokens, t.warmup_value.tokens
            agree = round(sum(a == b for a, b in zip(mine, theirs, strict=False)) / max(1, len(mine)), 4)
        rec.emit({**common, "variant": name, "phase": "prefill", "tokens": plan.prompt_tokens,
                  "tokens_per_s": round(plan.prompt_tokens / statistics.median(prefill), 3),
                  "median_s": round(statistics.median(prefill), 4), "min_s": round(min(prefill), 4),
                  "repeats": len(runs)})
        rec.emit({**common, "variant": name, "phase": "decode", "tokens": steps, "new_tokens": plan.new_tokens,
                  "tokens_per_s": round(steps / statistics.median(decode), 3),
                  "median_s": round(statistics.median(decode), 4), "min_s": round(min(decode), 4),
                  "repeats": len(runs), **({"same_tokens_as_ours": agree} if agree is not None else {})})


# ------------------------------------------------------------------------------------------- run
def run_bench(plan: BenchPlan, stream: Any = None) -> list[dict]:
    """Run the planned stages, printing JSON lines to ``stream`` (stdout); returns the records."""
    import torch

    if plan.device is None:
        from llamavid.runtime.device import pick_device
        plan.device = pick_device("auto")
    if plan.dtype is None:
        plan.dtype = bench_dtype("auto", plan.device)
    if plan.threads:
        torch.set_num_threads(plan.threads)
    rec = Recorder(plan, stream)
    rec.emit(environment(plan))
    model = load_checkpoint(plan) if plan.model_folder else None
    if "eva" in plan.stages:
        if model is not None:
            base = model.model.vision_tower
            model.model.vision_tower = None  # freed after this stage
        else:
            ensure_memory(_eva_bytes(plan), "EVA-ViT-g in fp32 (plus its int8 copy)",
                          "free memory or run --only qformer,llm")
            _say("building random full-size EVA-ViT-g ..." if not plan.smoke else "building tiny EVA ...")
            base = random_eva(eva_config_for(plan), plan.device, plan.seed)
        bench_eva(plan, rec, base)
        del base
    if {"qformer", "llm", "llamacpp"} & set(plan.stages):
        if model is None:
            with_llm = "llm" in plan.stages or "llamacpp" in plan.stages
            if with_llm and plan.device.type == "cpu":
                ensure_memory(_llm_bytes(plan), f"the random {plan.llm_size} LLM in fp32",
                              "choose a smaller --llm-size (1b) or run --only eva,qformer")
            _say(f"building random {'Q-Former' + (f' and {plan.llm_size} LLM' if with_llm else '')} ...")
            model = random_llamavid(plan, with_llm=with_llm)
        if "qformer" in plan.stages:
            bench_qformer(plan, rec, model)
        if "llm" in plan.stages:
            bench_llm(plan, rec, model)
        if "llamacpp" in plan.stages:
            from llamavid.bench.llamacpp import bench_llamacpp

            bench_llamacpp(plan, rec, model, ("f16", "q8_0") if plan.smoke else ("f16", "q8_0", "q4_K_M"), _say)
    return rec.records


def _eva_bytes(plan: BenchPlan) -> int:
    cfg = eva_config_for(plan)
    per_block = 4 * cfg.width * cfg.width + 2 * cfg.width * cfg.mlp_hidden
    return int(cfg.depth * per_block * 5)  # fp32 (4 bytes) + int8 copy (1 byte)


def _llm_bytes(plan: BenchPlan) -> int:
    s = LLM_SIZES[plan.llm_size]
    h, kv = s["hidden_size"], s["hidden_size"] * s["num_key_value_heads"] // s["num_attention_heads"]
    per_layer = 2 * h * h + 2 * h * kv + 3 * h * s["intermediate_size"]
    return 4 * (s["num_hidden_layers"] * per_layer + 2 * s["vocab_size"] * h)
