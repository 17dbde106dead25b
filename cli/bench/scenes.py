"""``llamavid bench scenes``: what the scene stage costs, next to EVA's feature stage.

Both on full-size networks with random weights (the cost of a network is its shapes; real weights
are not needed): CLIP ViT-B/32 written in the released layout (``write_tiny_scene_model(...,
full_size=True)``, loaded by the indexer's own :class:`indexer.scene_model.SceneImages` and
:class:`~indexer.scene_model.SceneTexts`), and EVA-ViT-g as :func:`cli.bench.harness.random_eva` draws
it. A generated film (``--width`` x ``--height`` H.264, film-like texture) is sampled at 1 fps and
preprocessed by the indexer's decoder, timed, since the scene stage decodes the film a second time.

One JSON line each: ``decode`` (seconds a frame), ``scenes-image`` (the image side, ``--batch`` frames a
pass, the stage's chunk), ``scenes-text`` (one question of about 12 tokens: a chat's scene evidence
and a search's text side), ``eva`` (``--eva-batch`` frames a pass, the indexer's CPU chunk), then
``scenes-vs-eva``: seconds per film hour of each stage and their ratio, and the scene vectors' bytes
per film hour. Medians of ``--rounds`` passes after one warm-up.

    llamavid bench scenes                  # a minute or two on a CPU (EVA dominates)
    llamavid bench scenes --no-eva         # the scene stage alone
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from cli.bench.harness import random_eva, say
from indexer.scene_model import SceneImages, SceneTexts, torch_threads, write_tiny_scene_model
from llamavid.media.decode import SampleStream, video_spec
from llamavid.media.probe import probe
from llamavid.media.synthetic import X264, film, write_video
from llamavid.model.eva import EvaConfig
from llamavid.runtime.device import pick_device

QUESTION_TOKENS = 12


def timed(call: Callable[[], object], rounds: int) -> tuple[float, float]:
    """(median seconds, warm-up seconds) of ``call``."""
    start = time.perf_counter()
    call()
    warmup = time.perf_counter() - start
    seconds = []
    for _ in range(rounds):
        start = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), warmup


def emit(record: dict) -> dict:
    record = {**record, "threads": torch.get_num_threads(), "load_1m": round(os.getloadavg()[0], 2)}
    print(json.dumps(record), flush=True)
    return record


def run_bench(root: Path, args: argparse.Namespace) -> list[dict]:
    device = pick_device(args.device)
    path = write_video(root / "film.mp4", film(args.width, args.height, 25), fps=25, seconds=args.seconds,
                       x264=X264(preset="veryfast", crf=23, keyint=250))
    start = time.perf_counter()
    samples = list(SampleStream(video_spec(path, probe(path)), 1.0, 0, 224))
    decode = (time.perf_counter() - start) / len(samples)
    out = [emit({"bench": "decode", "width": args.width, "height": args.height, "frames": len(samples),
                 "s_per_frame": round(decode, 4)})]
    pixels = np.stack([s.pixels for s in samples])
    batch = np.resize(pixels, (args.batch, *pixels.shape[1:]))

    say("writing CLIP ViT-B/32 (random weights, full size)")
    folder = write_tiny_scene_model(root / "clip-vit-b-32", full_size=True)
    images = SceneImages(folder, str(device), "auto")
    median, warmup = timed(lambda: images(batch), args.rounds)
    image = median / args.batch
    out.append(emit({"bench": "scenes-image", "device": device.type, "batch": args.batch, "dim": images.dim,
                     "s_per_frame": round(image, 4), "warmup_s": round(warmup, 3)}))
    texts = SceneTexts(folder)
    ids = torch.randint(2, 400, (1, QUESTION_TOKENS))
    mask = torch.ones_like(ids)

    def question() -> None:
        with torch.inference_mode(), torch_threads(texts.threads):  # as a chat's question runs it
            texts.model(input_ids=ids, attention_mask=mask)

    median, warmup = timed(question, max(args.rounds, 5))
    out.append(emit({"bench": "scenes-text", "tokens": QUESTION_TOKENS, "threads": texts.threads,
                     "ms_per_question": round(median * 1000, 2),
                     "warmup_ms": round(warmup * 1000, 1)}))
    stage = decode + image
    summary = {"bench": "scenes-vs-eva", "scene_s_per_film_hour": round(3600 * stage),
               "scene_decode_share": round(decode / stage, 3),
               "scene_bytes_per_film_hour": 3600 * images.dim * 2}
    if args.eva:
        say("drawing EVA-ViT-g (random weights, full size)")
        tower = random_eva(EvaConfig(image_size=224), device)
        eva_batch = torch.from_numpy(np.resize(pixels, (args.eva_batch, *pixels.shape[1:]))).to(device)

        def eva() -> None:
            with torch.inference_mode():
                tower(eva_batch)

        median, warmup = timed(eva, max(1, args.rounds // 2))
        per_frame = median / args.eva_batch
        out.append(emit({"bench": "eva", "device": device.type, "batch": args.eva_batch,
                         "s_per_frame": round(per_frame, 4), "warmup_s": round(warmup, 3)}))
        summary.update({"eva_s_per_film_hour": round(3600 * (per_frame + decode)),
                        "scene_vs_eva": round(stage / (per_frame + decode), 4)})
    out.append(emit(summary))
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=24, help="length of the generated film (default 24)")
    parser.add_argument("--width", type=int, default=1280, help="its width (default 1280)")
    parser.add_argument("--height", type=int, default=720, help="its height (default 720)")
    parser.add_argument("--batch", type=int, default=16, help="frames per scene pass (the stage's chunk, default 16)")
    parser.add_argument("--eva-batch", type=int, default=4, help="frames per EVA pass (the indexer's CPU chunk: 4)")
    parser.add_argument("--rounds", type=int, default=4, help="timed passes after a warm-up (default 4)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--no-eva", dest="eva", action="store_false", help="time the scene stage alone")


def run(args: argparse.Namespace) -> int:
    from llamavid.errors import UserError

    if min(args.seconds, args.batch, args.eva_batch, args.rounds) <= 0:
        raise UserError("--seconds, --batch, --eva-batch and --rounds must be positive")
    with tempfile.TemporaryDirectory(prefix="llamavid-scenes-bench-") as tmp:
        run_bench(Path(tmp), args)
    sys.stdout.flush()
    return 0
