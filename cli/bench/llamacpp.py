"""The ``llamacpp`` stage of ``llamavid bench``: the two chat backends on the same weights.

The random LLM of the ``llm`` stage is written as GGUF (f16 by our streaming exporter, then
q8_0 / q4_K_M by llama.cpp's own quantizer, as ``llamavid models convert-gguf`` does), and each
backend answers the same prompt through the engine's one interface (``Backend.generate``):

* ``transformers``: the model in the bench dtype (fp32 on a CPU), KV cache in torch;
* ``llama.cpp-<type>``: the GGUF file, f16 KV cache, the machine's threads.

Each backend runs the prompt twice: as token ids, and as embeddings (one ``<image>`` slot holding
the rows that backend would look up for those ids: the model's table for transformers, the GGUF's
dequantized ``token_embd`` for llama.cpp), which is how visual tokens reach the LLM. The greedy
answers must then be the same, and decode speed after an embedding prefix must match decode after
a token prefix: the prefix only fills the KV cache.
"""
from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import torch

from llamavid.model.tiny import write_llama_tokenizer
from llamavid.runtime.backend import TransformersBackend
from llamavid.runtime.generate import SamplingOptions
from llamavid.runtime.gguf_export import quantize_gguf, write_gguf
from llamavid.runtime.llamacpp import LlamaCppBackend

PREFIXES = ("tokens", "embeddings")


def write_ggufs(model: Any, folder: Path, types: tuple[str, ...], say: Callable[[str], None]) -> dict[str, Path]:
    """GGUF files of ``model``'s LLM: f16 from the state dict, the others quantized from it."""

    write_llama_tokenizer(folder)  # a real SentencePiece file; rows past its vocabulary are padding
    state = {k: v for k, v in model.state_dict().items() if v.is_floating_point()}
    paths = {"f16": folder / "llm-f16.gguf"}
    say(f"writing {paths['f16'].name} ...")
    write_gguf(state, model.config, folder, paths["f16"], "f16")
    for kind in (t for t in types if t != "f16"):
        say(f"quantizing to {kind} with llama.cpp ...")
        paths[kind] = quantize_gguf(paths["f16"], folder / f"llm-{kind}.gguf", kind)
    return {t: paths[t] for t in types}


def _timed(backend: Any, ids: list[int], slots: list, new_tokens: int) -> tuple[list[int], float, float]:
    """(tokens, prefill seconds incl. the first token, seconds for the other tokens) of one answer."""

    opts = SamplingOptions(max_new_tokens=new_tokens, temperature=0, stop_ids=())
    start = time.perf_counter()
    steps = backend.generate(backend.new_state(), ids, slots, opts)
    tokens = [next(steps).token]
    first = time.perf_counter()
    tokens += [s.token for s in steps]
    return tokens, first - start, time.perf_counter() - first


def gguf_token_rows(path: Path, ids: list[int]) -> Any:
    """The GGUF file's own embedding rows for ``ids``, dequantized: exactly what llama.cpp looks
    up for those tokens, so a token prefix and an embedding prefix are the same input."""
    reader = gguf.GGUFReader(str(path))
    table = next(t for t in reader.tensors if t.name == "token_embd.weight")
    return np.asarray(gguf.dequantize(np.asarray(table.data)[ids], table.tensor_type), dtype=np.float32)


def _inputs(model: Any, ids: Any, prefix: str, gguf_file: Path | None) -> tuple[list[int], list]:
    """The prompt as ids, or as one embedding slot holding the rows the backend would look up."""

    if prefix == "tokens":
        return ids[0].tolist(), []
    if gguf_file is not None:
        rows = torch.from_numpy(gguf_token_rows(gguf_file, ids[0].tolist()))
    else:
        with torch.inference_mode():
            rows = model.get_input_embeddings()(ids)[0].float()
    return [-200], [rows]  # IMAGE_TOKEN_INDEX: the slot is spliced in its place


def backends(model: Any, ggufs: dict[str, Path], context: int,
             threads: int | None) -> dict[str, tuple[Callable, Path | None]]:
    """Backend name -> (a factory, its GGUF file); llama.cpp contexts hold GBs: one lives at a time."""

    made: dict[str, tuple[Callable, Path | None]] = {"transformers": (lambda: TransformersBackend(model), None)}
    for kind, path in ggufs.items():
        made[f"llama.cpp-{kind}"] = (lambda p=path: LlamaCppBackend(p, n_ctx=context, threads=threads), path)
    return made


def bench_llamacpp(plan: Any, rec: Any, model: Any, types: tuple[str, ...] = ("f16", "q8_0", "q4_K_M"),
                   say: Callable[[str], None] = print) -> None:
    """Prefill and decode tokens/s of each backend after a token and after an embedding prefix."""
    gen = torch.Generator().manual_seed(plan.seed + 11)
    vocab = model.config.vocab_size
    ids = torch.randint(3, min(vocab, 32000), (1, plan.prompt_tokens), generator=gen)
    with tempfile.TemporaryDirectory(prefix="llamavid-bench-gguf-") as tmp:
        ggufs = write_ggufs(model, Path(tmp), types, say)
        context = plan.prompt_tokens + plan.new_tokens + 8
        for name, (make, path) in backends(model, ggufs, context, plan.threads).items():
            say(f"llamacpp stage: {name}, prompt {plan.prompt_tokens} as tokens and as embeddings, "
                f"{plan.new_tokens} new tokens ({plan.repeats} rounds)")
            backend = make()
            try:
                inputs = {p: _inputs(model, ids, p, path) for p in PREFIXES}
                _measure(plan, rec, backend, name, inputs, path.stat().st_size if path else None)
            finally:
                getattr(backend, "close", lambda: None)()


def _measure(plan: Any, rec: Any, backend: Any, name: str, inputs: dict[str, tuple], file_bytes: int | None) -> None:
    """Round robin over the two prefixes; one record per prefix and phase."""
    runs: dict[str, list] = {p: [] for p in PREFIXES}
    warm = {p: _timed(backend, *inputs[p], plan.new_tokens) for p in PREFIXES}
    for _ in range(plan.repeats):
        for p in PREFIXES:
            runs[p].append(_timed(backend, *inputs[p], plan.new_tokens))
    steps = max(1, plan.new_tokens - 1)
    decode = {p: statistics.median(r[2] for r in runs[p]) for p in PREFIXES}
    same = sum(a == b for a, b in zip(warm["tokens"][0], warm["embeddings"][0], strict=True)) / plan.new_tokens
    for p in PREFIXES:
        prefill = statistics.median(r[1] for r in runs[p])
        common = {"bench": "llamacpp", "backend": name, "prefix": p, "repeats": plan.repeats,
                  **({"gguf_bytes": file_bytes} if file_bytes else {})}
        rec.emit({**common, "phase": "prefill", "tokens": plan.prompt_tokens,
                  "tokens_per_s": round(plan.prompt_tokens / prefill, 3), "median_s": round(prefill, 4)})
        rec.emit({**common, "phase": "decode", "tokens": steps, "tokens_per_s": round(steps / decode[p], 3),
                  "median_s": round(decode[p], 4),
                  "decode_vs_token_prefix": round(decode["tokens"] / decode[p], 4),
                  "same_tokens_as_token_prefix": round(same, 4)})
