"""The ``llm`` stage: prefill and decode tokens/s of our streaming loop and of transformers' ``generate``."""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from transformers.generation.streamers import BaseStreamer

from cli.bench.harness import (
    Recorder,
    dtype_name,
    round_robin,
    say,
    synchronizer,
)
from cli.bench.plan import (
    BenchPlan,
)
from llamavid.model.loading import place
from llamavid.runtime.generate import SamplingOptions, stream


@dataclass
class Generation:
    tokens: list[int]
    prefill_s: float  # prompt through the model and the first token chosen
    decode_s: float  # the remaining new tokens


def _ours(model: Any, ids: Any, new_tokens: int, sync: Callable[[], None]) -> Generation:
    """Our loop, fed embeddings as the app does (text embeddings; visual tokens would be spliced in)."""


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
    if model.dtype != plan.dtype:
        place(model, plan.device, plan.dtype)  # keeps RoPE's inverse frequencies in fp32
    gen = torch.Generator().manual_seed(plan.seed + 11)
    vocab = model.config.vocab_size
    ids = torch.randint(3, vocab, (1, plan.prompt_tokens), generator=gen).to(plan.device)
    params = sum(p.numel() for n, p in model.named_parameters()
                 if n.startswith(("model.layers", "model.embed_tokens", "model.norm", "lm_head")))
    variants = llm_variants(plan, model, ids)
    say(f"llm {plan.llm_size if plan.model_folder is None else plan.model_folder.name} ({params / 1e9:.2f}B, "
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
