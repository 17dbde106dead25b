"""The ``eva`` and ``qformer`` stages: EVA frames/s against the reference's eager attention and int8,
and the Q-Former with the visual tokens against the textbook path, int8 and bf16; then every vision
engine (``engine-NAME`` records: torch bf16 / int8, OpenVINO, NNCF int8) timed beside float32."""
from __future__ import annotations

import copy
import dataclasses
import time
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cli.bench.harness import (
    Recorder,
    cosine,
    dtype_name,
    eva_config_for,
    round_robin,
    say,
    synchronizer,
    timing_fields,
)
from cli.bench.plan import (
    BenchPlan,
)
from llamavid.model.engines import ENGINES, REFERENCE, build_eva, build_qformer, unavailable_reason
from llamavid.model.eva import Attention, EvaVisionTower
from llamavid.model.quantize_vision import quantize_vision


def reference_attention(attn: Any, x: Any) -> Any:
    """EVA attention as the reference (LAVIS ``eva_vit.py``) writes it, on our module's weights.

    q is scaled first, then q @ k^T, softmax and @ v are separate ops in the model's dtype: the
    formulation our SDPA path replaces, kept here as the baseline it is measured against.
    """
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

    param = next(base.vision_tower.parameters())
    cfg = dataclasses.replace(base.cfg, image_size=image_size)
    tower = EvaVisionTower.from_state_dict(base.vision_tower.state_dict(), cfg, device=param.device,
                                           dtype=dtype or param.dtype)
    return tower.eval().requires_grad_(False)


def eva_variants(plan: BenchPlan, base: Any, image_size: int) -> dict[str, Callable[[Any], Any]]:
    """Variant name -> function(pixels) -> features, all on the same weights."""


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

    sync = synchronizer(plan.device)
    eager_name = f"eager-{dtype_name(plan.dtype)}"
    for size in plan.sizes:
        variants = eva_variants(plan, base, size)
        reference = tower_at(base, size, torch.float32) if plan.dtype != torch.float32 else None
        for batch in plan.batches:
            say(f"eva {size}px batch {batch}: {', '.join(variants)} ({plan.repeats} rounds)")
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
        bench_eva_engines(plan, rec, base, size)


def plan_engines(plan: BenchPlan, part: str) -> list[str]:
    """The engines a run times for ``part``: the plan's, else all that can run here (none in smoke runs)."""
    if plan.engines is not None:
        return [n for n in plan.engines if n in ENGINES[part] and n != REFERENCE]
    if plan.smoke or plan.device.type != "cpu":
        return []
    return [n for n in ENGINES[part] if n != REFERENCE and not unavailable_reason(part, n, plan.device)]


def _time_engine(plan: BenchPlan, rec: Recorder, bench: str, name: str, setup: float,
                 calls: dict[str, Callable[[], Any]], fields: dict, count: int,
                 value: Callable[[Any], Any]) -> None:
    """Time ``calls`` ({"fp32": reference, name: engine}) round-robin and emit the engine's record."""
    with torch.inference_mode():
        results = round_robin(calls, plan.repeats, synchronizer(plan.device), rec.error(bench, **fields))
    if name in results and "fp32" in results:
        t, ref = results[name], results["fp32"]
        rec.emit({"bench": bench, "variant": f"engine-{name}", **fields, **timing_fields(t, count, "frames"),
                  "setup_s": round(setup, 1), "fp32_median_s": round(ref.median_s, 4),
                  "speedup_vs_fp32": round(ref.median_s / t.median_s, 3),
                  "cosine_vs_fp32": round(cosine(value(t.warmup_value), value(ref.warmup_value)), 6)})


def _built(rec: Recorder, bench: str, name: str, make: Callable[[], Any], **fields: Any) -> tuple[Any, float]:
    """(engine, seconds to build it), or (None, 0) after recording why it could not be built."""
    start = time.perf_counter()
    try:
        return make(), time.perf_counter() - start
    except Exception as exc:  # noqa: BLE001 - an engine that cannot be built is a record, not a crash
        rec.error(bench, **fields)(f"engine-{name}", exc)
        return None, 0.0


def bench_eva_engines(plan: BenchPlan, rec: Recorder, base: Any, size: int) -> None:
    """Each EVA engine beside float32 SDPA (the reference), one engine in memory at a time."""
    names = plan_engines(plan, "eva")
    if not names:
        return
    tower = base if base.image_size == size and plan.dtype == torch.float32 else tower_at(base, size, torch.float32)
    gen = torch.Generator().manual_seed(plan.seed + size)
    calib = torch.randn(2, 3, size, size, generator=gen)  # NNCF int8's activation ranges
    inputs = {batch: torch.randn(batch, 3, size, size, generator=gen) for batch in plan.batches}
    for name in names:
        say(f"eva {size}px: building engine {name} ...")
        engine, setup = _built(rec, "eva", name, lambda n=name: build_eva(n, tower, calib), image_size=size)
        if engine is None:
            continue
        for batch, pixels in inputs.items():
            say(f"eva {size}px batch {batch}: engine {name} beside fp32 ({plan.repeats} rounds)")
            _time_engine(plan, rec, "eva", name, setup,
                         {"fp32": lambda x=pixels: tower(x), name: lambda x=pixels, e=engine: e(x)},
                         {"image_size": size, "batch": batch}, batch, lambda v: v)
        del engine


TOKEN_SIDE = ("vlm_att_encoder", "vlm_att_projector", "vlm_att_key_projector", "vlm_att_val_projector",
              "mm_projector", "vlm_att_ln")


def token_twin(model: Any, convert: Callable[[Any], Any]) -> Any:
    """A second view of ``model`` whose Q-Former side is a converted deep copy; the LLM stays shared.

    ``model.visual_tokens`` then runs the converted parts exactly as the model runs its own, and
    the fp32 original stays available for round-robin timing and accuracy checks.
    """
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
    class Projected(nn.Linear):
        pass

    for module in [inner.vlm_att_key_projector, *inner.vlm_att_encoder.modules()]:
        if type(module) is nn.Linear:
            module.__class__ = Projected


def qformer_variants(plan: BenchPlan, model: Any) -> dict[str, Any]:
    """Variant name -> a model whose ``visual_tokens`` is timed."""


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


def bench_qformer_engines(plan: BenchPlan, rec: Recorder, model: Any, feats: Any, ids: Any, mask: Any) -> None:
    """Each Q-Former engine in ``visual_tokens`` beside the float32 model, one engine in memory at a time."""
    inner = model.model
    encoder = inner.vlm_att_encoder

    def tokens_with(engine: Any) -> Callable[[], Any]:
        def call() -> Any:
            inner._modules["vlm_att_encoder"] = engine
            try:
                return model.visual_tokens(feats, ids, mask, block_size=plan.frames, keep_parts=True)
            finally:
                inner._modules["vlm_att_encoder"] = encoder
        return call

    q = inner.vlm_att_query.expand(2, -1, -1).detach()
    image = inner.vlm_att_ln(feats[:2]) if inner.vlm_att_ln is not None else feats[:2]
    example = (ids.expand(2, -1), mask.expand(2, -1), q, image)
    fields = {"frames": plan.frames, "question_tokens": plan.question_tokens}
    for name in plan_engines(plan, "qformer"):
        engine, setup = _built(rec, "qformer", name, lambda n=name: build_qformer(n, encoder, example), **fields)
        if engine is None:
            continue
        say(f"qformer {plan.frames} frames: engine {name} beside fp32 ({plan.repeats} rounds)")
        _time_engine(plan, rec, "qformer", name, setup, {"fp32": tokens_with(encoder), name: tokens_with(engine)},
                     fields, plan.frames, lambda v: v.part("context_tokens"))
        del engine


def bench_qformer(plan: BenchPlan, rec: Recorder, model: Any) -> None:
    """frames/s of ``visual_tokens`` for one block of ``plan.frames`` frames and one question."""
    sync = synchronizer(plan.device)
    cfg = model.config
    tokens_per_frame = eva_config_for(plan).num_patches + 1
    gen = torch.Generator().manual_seed(plan.seed + 7)
    feats = torch.randn(plan.frames, tokens_per_frame, cfg.mm_hidden_size, generator=gen).to(plan.device)
    vocab = model.model.vlm_att_encoder.bert.embeddings.word_embeddings.num_embeddings
    ids = torch.randint(min(1000, vocab // 2), vocab, (1, plan.question_tokens), generator=gen)
    mask = torch.ones_like(ids)
    variants = qformer_variants(plan, model)
    say(f"qformer {plan.frames} frames, {plan.question_tokens}-token question: {', '.join(variants)} "
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
    del results, variants
    bench_qformer_engines(plan, rec, model, feats, ids, mask)
