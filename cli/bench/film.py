"""Time to the first word about a one-hour film with cached features, as the chat service runs it.

A new question on a film runs the Q-Former over every frame (3,600 for an hour at 1 fps), then the
LLM reads the whole film prompt (two rows per frame and the subtitles); a follow-up only reads its
own words. This measures both on this machine, the phases apart (from the engine's progress
events), with full-size Q-Former weights (random, drawn as the reference initialises them) and a
small LLM (``--llm-size``; ``tiny`` by default, since the LLM's prefill of 7,200 rows is what a
real 7B model makes long, and that is ``llamavid bench --only llm``'s figure), plus the peak memory.

    llamavid bench film                   # 3,600 frames, tiny LLM, one JSON line per figure
    llamavid bench film --frames 600      # quicker
    llamavid bench film --llm-size 1b --prepared   # a prepared film ("fast answers") against the exact path
    llamavid bench film --vision-engine int8       # the Q-Former in torch int8 (or auto: calibrate)

``--prepared`` also prepares the film (the neutral first turn), saves its state, reads it back into a
new chat and times a new question from there: what a "fast answers" conversation costs.

The features are random fp16 rows in a memory-mapped ``.npy`` file, as the indexer stores them.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from cli.bench.harness import random_llamavid
from cli.bench.plan import BenchPlan
from llamavid.model.loading import LoadReport
from llamavid.model.qformer import load_qformer_tokenizer
from llamavid.model.tiny import bert_vocab, write_llama_tokenizer
from llamavid.prompt.subtitles import Cue
from llamavid.runtime.api import LlamaVid, load_llm_tokenizer
from llamavid.runtime.chat import Chat
from llamavid.runtime.control import Control
from llamavid.runtime.device import pick_device
from llamavid.runtime.generate import SamplingOptions
from llamavid.runtime.inputs import Visual
from llamavid.runtime.prepared import prepare
from llamavid.runtime.state import load_chat, save_chat, state_key
from llamavid.runtime.vision_engines import VisionEngines

WIDTH, PATCHES = 1408, 256  # EVA-ViT-g rows as the long-video path feeds them (CLS dropped)


def film_features(folder: Path, frames: int, seed: int = 0) -> np.memmap:
    """Random fp16 (frames, 256, 1408) written in chunks to a memory-mapped file: 2.6 GB for an hour."""
    path = folder / "film.npy"
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(frames, PATCHES, WIDTH))
    rng = np.random.default_rng(seed)
    for start in range(0, frames, 64):
        stop = min(frames, start + 64)
        out[start:stop] = rng.standard_normal((stop - start, PATCHES, WIDTH), dtype=np.float32)
    out.flush()
    return np.load(path, mmap_mode="r")


def chat_model(plan: BenchPlan, folder: Path, context: int, vision_engine: str | None = None) -> LlamaVid:
    """Full-size Q-Former and projectors with a small random LLM whose positions cover ``context``;
    ``vision_engine``: the Q-Former's engine (:mod:`llamavid.runtime.vision_engines`; ``auto``
    calibrates here, uncached), None: float32 as loaded."""
    model = random_llamavid(plan)
    model.config.max_position_embeddings = context
    write_llama_tokenizer(folder)
    (folder / "bert_vocab.txt").write_text("\n".join(bert_vocab()) + "\n")
    tokenizer = load_llm_tokenizer(folder)
    report = LoadReport(folder, None, folder / "bert_vocab.txt")
    engines = None
    if vision_engine:
        engines = VisionEngines(vision_engine)  # no cache: a calibration on random weights is not kept
        # the engine is keyed by the checkpoint's weight files; this one stands for the random weights
        save_file({"random": torch.zeros(1)}, str(folder / "model.safetensors"))
    return LlamaVid(model, tokenizer, load_qformer_tokenizer(folder / "bert_vocab.txt"), report, vision_engines=engines)


def qformer_engine(lv: LlamaVid) -> str:
    """The Q-Former's engine the chat ran (after its first question)."""
    return lv.vision_engines.chosen.get("qformer", "fp32") if lv.vision_engines else "fp32"


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def first_token(chat: Chat, question: str) -> dict:
    """Seconds to the first answer piece, and how long each phase took (from progress events)."""
    seen: dict[str, float] = {}
    start = time.perf_counter()
    control = Control(on_progress=lambda p: seen.setdefault(p.phase, time.perf_counter()))
    pieces = chat.ask(question, SamplingOptions(temperature=0, max_new_tokens=8), control=control)
    next(iter(pieces), None)
    ttft = time.perf_counter() - start
    "".join(pieces)
    visual = seen.get("prefill", start) - seen.get("visual", start) if "visual" in seen else 0.0
    prefill = seen.get("answer", start) - seen.get("prefill", start)
    return {"first_token_s": round(ttft, 3), "qformer_s": round(visual, 3), "prefill_s": round(prefill, 3),
            "prompt_tokens": chat.state.length}


def prepared_first_token(lv: LlamaVid, visual: Visual, folder: Path, question: str) -> dict:
    """Prepare the film, save and read back its state, then time a new question from it."""
    start = time.perf_counter()
    chat = Chat(lv, visual)
    prepare(chat)
    prepared_s = time.perf_counter() - start
    key = state_key(chat, film="bench")
    size = save_chat(chat, folder / "prepared.state", key)
    start = time.perf_counter()
    fresh = Chat(lv, visual)
    load_chat(fresh, folder / "prepared.state", key)
    load_s = time.perf_counter() - start
    record = first_token(fresh, question)
    return {"prepare_s": round(prepared_s, 3), "state_bytes": size, "state_load_s": round(load_s, 3),
            "first_token_from_state_s": round(load_s + record["first_token_s"], 3), **record}


def time_film(frames: int, llm_size: str, threads: int | None, stream=sys.stdout, prepared: bool = False,
              vision_engine: str | None = None) -> list[dict]:
    if threads:
        torch.set_num_threads(threads)
    plan = BenchPlan(stages=("film",), device=pick_device("auto"), dtype=torch.float32, llm_size=llm_size)
    records = []
    with tempfile.TemporaryDirectory(prefix="llamavid-film-bench-") as tmp:
        folder = Path(tmp)
        feats = film_features(folder, frames)
        cues = [Cue(t, t + 3.0, f"Line {t // 10} of the dialogue, said at second {t}.") for t in range(0, frames, 10)]
        lv = chat_model(plan, folder, context=4 * frames + 8 * len(cues) + 2048, vision_engine=vision_engine)
        visual = Visual("film", feats, [float(t) for t in range(frames)], cues)
        chat = Chat(lv, visual)
        for name, question in (("new question", "What happens at the harbour at night?"),
                               ("follow-up", "And who is speaking then?")):
            record = {"bench": "film", "question": name, "frames": frames, "llm_size": llm_size,
                      "device": str(plan.device), "threads": torch.get_num_threads(), **first_token(chat, question),
                      "qformer_engine": qformer_engine(lv), "peak_rss_mb": round(peak_rss_mb(), 1)}
            records.append(record)
            print(json.dumps(record), file=stream, flush=True)
        if prepared:
            record = {"bench": "film", "question": "new question, prepared film", "frames": frames,
                      "llm_size": llm_size, "device": str(plan.device), "threads": torch.get_num_threads(),
                      **prepared_first_token(lv, visual, folder, "What happens at the harbour at night?"),
                      "peak_rss_mb": round(peak_rss_mb(), 1)}
            records.append(record)
            print(json.dumps(record), file=stream, flush=True)
    return records


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--frames", type=int, default=3600, help="frames of the film (1 per second)")
    parser.add_argument("--llm-size", default="tiny", choices=("tiny", "1b", "7b"))
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--prepared", action="store_true", help="also time a new question on a prepared film")
    parser.add_argument("--vision-engine", metavar="ENGINE",
                        help="the Q-Former's engine (int8, bf16, openvino..., or auto: calibrate here); "
                             "default: float32 as loaded")


def run(args: argparse.Namespace) -> int:
    time_film(args.frames, args.llm_size, args.threads, prepared=args.prepared, vision_engine=args.vision_engine)
    return 0
