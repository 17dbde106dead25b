"""``llamavid bench``: how fast each stage runs on this machine, one JSON line per measurement.

Why it exists: the cost of LLaMA-VID on a film is EVA once per frame (hours on a CPU), the
Q-Former once per question and frame, then the LLM. This measures the three on whatever device
is present, side by side with the formulations they replace, so a change can be judged by one
command and its numbers quoted in notes and issues:

* ``preprocess``: frames/s of the CLIP preprocessing of a 1080p frame (resize, crop or pad,
  normalise), the per-frame work before EVA (:mod:`cli.bench.preprocess`).
* ``eva``: frames/s of EVA-ViT-g at 224 and 336 px for the reference's eager attention
  (scale q, q @ k^T, softmax, @ v), ours (SDPA) and, on CPU, dynamic int8 Linear layers
  (:mod:`llamavid.model.quantize_vision`); each with the cosine of its features to fp32 eager.
* ``qformer``: frames/s of ``LlamaVidForCausalLM.visual_tokens`` (Q-Former + context and content
  tokens, exactly as the model runs it) for one block of frames and a ~20-token question.
* ``llm``: prefill and decode tokens/s of our streaming loop (:func:`llamavid.runtime.generate.stream`)
  and of transformers' ``generate`` on the same weights, dtype and device.

Without ``--model`` the weights are random at full size (EVA-ViT-g, the bert-base Q-Former, a
1.1B LLaMA on CPU / 7B on GPU), drawn the way the reference initialises them; speed does not
depend on the values. Variants are timed round-robin (one warm-up each, then ``--repeats``
rounds over all variants) so that load from other programs hits them alike; min and median are
reported. The first line (``"bench": "env"``) records the machine, threads and load average.
"""
from __future__ import annotations

from typing import Any

import torch

from cli.bench.harness import (
    Recorder,
    bench_dtype,
    ensure_memory,
    environment,
    eva_config_for,
    load_checkpoint,
    random_eva,
    random_llamavid,
    say,
)
from cli.bench.llamacpp import bench_llamacpp
from cli.bench.llm import bench_llm
from cli.bench.plan import LLM_SIZES, BenchPlan
from cli.bench.preprocess import bench_preprocess
from cli.bench.vision import (
    bench_eva,
    bench_qformer,
)
from llamavid.runtime.device import pick_device


def run_bench(plan: BenchPlan, stream: Any = None) -> list[dict]:
    """Run the planned stages, printing JSON lines to ``stream`` (stdout); returns the records."""
    if plan.device is None:
        plan.device = pick_device("auto")
    if plan.dtype is None:
        plan.dtype = bench_dtype("auto", plan.device)
    if plan.threads:
        torch.set_num_threads(plan.threads)
    rec = Recorder(plan, stream)
    rec.emit(environment(plan))
    if "preprocess" in plan.stages:
        bench_preprocess(plan, rec)
    model = load_checkpoint(plan) if plan.model_folder else None
    if "eva" in plan.stages:
        if model is not None:
            base = model.model.vision_tower
            model.model.vision_tower = None  # freed after this stage
        else:
            ensure_memory(_eva_bytes(plan), "EVA-ViT-g in fp32 (plus its int8 copy)",
                          "free memory or run --only qformer,llm")
            say("building random full-size EVA-ViT-g ..." if not plan.smoke else "building tiny EVA ...")
            base = random_eva(eva_config_for(plan), plan.device, plan.seed)
        bench_eva(plan, rec, base)
        del base
    if {"qformer", "llm", "llamacpp"} & set(plan.stages):
        if model is None:
            with_llm = "llm" in plan.stages or "llamacpp" in plan.stages
            if with_llm and plan.device.type == "cpu":
                ensure_memory(_llm_bytes(plan), f"the random {plan.llm_size} LLM in fp32",
                              "choose a smaller --llm-size (1b) or run --only eva,qformer")
            say(f"building random {'Q-Former' + (f' and {plan.llm_size} LLM' if with_llm else '')} ...")
            model = random_llamavid(plan, with_llm=with_llm)
        if "qformer" in plan.stages:
            bench_qformer(plan, rec, model)
        if "llm" in plan.stages:
            bench_llm(plan, rec, model)
        if "llamacpp" in plan.stages:

            bench_llamacpp(plan, rec, model, ("f16", "q8_0") if plan.smoke else ("f16", "q8_0", "q4_K_M"), say)
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
