"""``llamavid bench skip``: what skipping EVA for near-identical frames saves, and what it costs.

Two films are written with :func:`llamavid.media.synthetic.shots` (6-second shots, 320x180 H.264,
each shot a new random scene): a **static-shot** film (still shots with grain, a shot where only a
small disc moves as a face talking would, a slow light change) and a **moving-shot** film (the
camera pans in every shot). Each film's 1-fps samples are decoded and preprocessed once (timed),
then encoded in chunks of ``--batch`` frames, as the indexer's chunks, twice: EVA on every frame
(skipping off), and through :class:`indexer.similar.FrameSkipper` (skipping on), the two
alternating chunk by chunk so both see the same machine load. EVA is full-size EVA-ViT-g with
random weights drawn as the reference initialises them (:func:`cli.bench.harness.random_eva`), or
a small one with ``--size tiny`` (a check that it runs, not a measurement).

Cosines compare a reused frame's stored features with what EVA gives for the frame itself, on
the patch rows the chat uses (CLS dropped), in float64: the whole frame flattened (``cos``) and the
worst single patch token (``token_cos``). One JSON line each:

* ``{"bench": "skip", "film": "static" | "moving", ...}``: frames, the fraction skipped (also per
  kind of shot), EVA seconds off and on, decoding seconds, feature seconds per hour of film off and
  on (decoding + EVA, decoding counted in full although the indexer overlaps it with EVA), the
  saving, and the cosines of the reused frames;
* ``{"bench": "skip-sweep", "threshold": T, ...}``: for other thresholds, what skipping would have
  done on the same frames (the every-frame features give both sides of every pair, no EVA run);
* ``{"bench": "skip-pairs", ...}``: every pair of frames up to ``--pair-gap`` apart, by their
  difference (:func:`indexer.similar.difference`): the smallest cosines in each bin, and the largest
  difference up to which every pair keeps ``--bound``: what the threshold is calibrated on.

    llamavid bench skip                              # full size: ~100 EVA frames, minutes on a CPU
    llamavid bench skip --seconds 48 --threshold 2   # longer films, another threshold
    llamavid bench skip --size tiny --seconds 6      # seconds: checks that it runs
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cli.bench.harness import random_eva, say
from cli.bench.plan import SMOKE_EVA
from indexer.similar import DEFAULT_THRESHOLD, FrameSkipper, difference, thumbnail
from llamavid.errors import UserError
from llamavid.media.decode import SampleStream, video_spec
from llamavid.media.probe import probe
from llamavid.media.synthetic import X264, shots, write_video
from llamavid.model.eva import EvaConfig
from llamavid.runtime.device import pick_device

#: The two films: their shots, in turn (6 s each).
FILMS = {"static": ("still", "talk", "still", "fade"), "moving": ("pan",)}
SHOT_SECONDS = 6.0
SWEEP = (0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
BINS = (0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 16.0, 32.0, float("inf"))


def write_film(path: Path, kinds: tuple[str, ...], seconds: float, width: int, height: int, seed: int) -> Path:
    return write_video(path, shots(width, height, 10, kinds=kinds, shot_seconds=SHOT_SECONDS, seed=seed), fps=10,
                       seconds=seconds, x264=X264(preset="veryfast", crf=23, keyint=50))


def decode(path: Path, image_size: int, batch: int) -> tuple[np.ndarray, list[float], float]:
    """(pixels (T, 3, S, S), times, seconds): the film's 1-fps samples as the indexer preprocesses them."""
    start = time.perf_counter()
    samples = list(SampleStream(video_spec(path, probe(path)), 1.0, 0, image_size, prefetch=batch))
    return np.stack([s.pixels for s in samples]), [s.time for s in samples], time.perf_counter() - start


def patch_cosines(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(frame cosines (T,), worst token cosines (T,)) of (T, 1 + N, C) features, CLS dropped, float64."""
    a, b = a[:, 1:].astype(np.float64), b[:, 1:].astype(np.float64)
    frame = (a * b).sum((1, 2)) / np.sqrt((a * a).sum((1, 2)) * (b * b).sum((1, 2)))
    token = (a * b).sum(2) / np.sqrt((a * a).sum(2) * (b * b).sum(2))
    return frame, token.min(1)


def encode_both(encoder: Callable[[np.ndarray], np.ndarray], pixels: np.ndarray, batch: int, threshold: float
                ) -> dict[str, Any]:
    """Every frame through EVA, and through a FrameSkipper, chunk by chunk, alternating which goes first."""
    skipper = FrameSkipper(threshold)
    off, on, reused, seconds = [], [], [], {"off": 0.0, "on": 0.0}
    for k, start in enumerate(range(0, len(pixels), batch)):
        chunk = np.ascontiguousarray(pixels[start:start + batch])
        for which in (("off", "on") if k % 2 == 0 else ("on", "off")):
            t = time.perf_counter()
            if which == "off":
                off.append(encoder(chunk))
            else:
                rows, flags = skipper.encode(encoder, chunk)
                on.append(rows)
                reused.append(flags)
            seconds[which] += time.perf_counter() - t
    return {"off": np.concatenate(off), "on": np.concatenate(on), "reused": np.concatenate(reused),
            "seconds": seconds}


def simulate(thumbs: list[np.ndarray], threshold: float) -> list[int]:
    """For each frame, the frame whose features it gets (itself if EVA encodes it): the indexer's
    decisions, which do not depend on how the film is cut into chunks."""
    return FrameSkipper(threshold).plan(thumbs)


def shot_kind(t: float, kinds: tuple[str, ...]) -> str:
    return kinds[int(t // SHOT_SECONDS) % len(kinds)]


def film_record(name: str, kinds: tuple[str, ...], seconds: float, times: list[float], result: dict,
                decode_s: float, threshold: float) -> dict[str, Any]:
    reused = result["reused"]
    frames = len(reused)
    cos, token = patch_cosines(result["on"][reused], result["off"][reused])
    off_s, on_s = result["seconds"]["off"], result["seconds"]["on"]
    per_hour = 3600.0 / seconds
    by_kind = {}
    for kind in dict.fromkeys(kinds):
        mask = np.array([shot_kind(t, kinds) == kind for t in times])
        by_kind[kind] = round(float(reused[mask].mean()), 3) if mask.any() else None
    return {"bench": "skip", "film": name, "shots": list(kinds), "shot_seconds": SHOT_SECONDS, "film_seconds": seconds,
            "frames": frames, "threshold": threshold, "skipped": int(reused.sum()),
            "skipped_fraction": round(float(reused.mean()), 3), "skipped_fraction_by_shot": by_kind,
            "eva_s_off": round(off_s, 2), "eva_s_on": round(on_s, 2), "decode_s": round(decode_s, 2),
            "feature_s_per_film_hour_off": round((decode_s + off_s) * per_hour, 1),
            "feature_s_per_film_hour_on": round((decode_s + on_s) * per_hour, 1),
            "saving": round(1 - (decode_s + on_s) / (decode_s + off_s), 3) if off_s else None,
            "cos_min": round(float(cos.min()), 6) if len(cos) else None,
            "cos_mean": round(float(cos.mean()), 6) if len(cos) else None,
            "token_cos_min": round(float(token.min()), 6) if len(token) else None}


def sweep_records(films: list[tuple[list[np.ndarray], np.ndarray]], thresholds: tuple[float, ...]) -> list[dict]:
    """What each threshold would skip, and the worst cosines it would keep, on the every-frame features."""
    records = []
    for threshold in thresholds:
        skipped, total, cos_all, token_all = 0, 0, [], []
        for thumbs, rows in films:
            sources = np.array(simulate(thumbs, threshold))
            mask = sources != np.arange(len(sources))
            skipped, total = skipped + int(mask.sum()), total + len(sources)
            if mask.any():
                cos, token = patch_cosines(rows[sources[mask]], rows[mask])
                cos_all.append(cos)
                token_all.append(token)
        cos = np.concatenate(cos_all) if cos_all else np.array([])
        token = np.concatenate(token_all) if token_all else np.array([])
        records.append({"bench": "skip-sweep", "threshold": threshold, "frames": total, "skipped": skipped,
                        "skipped_fraction": round(skipped / total, 3) if total else None,
                        "cos_min": round(float(cos.min()), 6) if len(cos) else None,
                        "token_cos_min": round(float(token.min()), 6) if len(token) else None})
    return records


def pairs_record(films: list[tuple[list[np.ndarray], np.ndarray]], gap: int, bound: float) -> dict[str, Any]:
    """Every pair up to ``gap`` frames apart, binned by difference; the largest difference before a pair falls
    below ``bound`` (whole-frame cosine)."""
    pairs = []
    for thumbs, rows in films:
        for i in range(len(thumbs)):
            for j in range(max(0, i - gap), i):
                pairs.append((difference(thumbs[j], thumbs[i]), j, i, rows))
    pairs.sort(key=lambda p: p[0])
    stats, keeps_until, broken_at = [], None, None
    lows = [0.0, *BINS[:-1]]
    cosines = []
    for d, j, i, rows in pairs:
        cos, token = patch_cosines(rows[j:j + 1], rows[i:i + 1])
        cosines.append((d, float(cos[0]), float(token[0])))
    for d, cos, _ in cosines:
        if broken_at is None and cos < bound:
            broken_at = d
        elif broken_at is None:
            keeps_until = d
    for low, high in zip(lows, BINS, strict=True):
        inside = [(c, t) for d, c, t in cosines if low < d <= high or (low == 0 and d == 0)]
        if inside:
            stats.append({"difference_max": high if high != float("inf") else None, "pairs": len(inside),
                          "cos_min": round(min(c for c, _ in inside), 6),
                          "token_cos_min": round(min(t for _, t in inside), 6)})
    return {"bench": "skip-pairs", "pairs": len(cosines), "max_gap_frames": gap, "bound": bound,
            "all_pairs_keep_bound_up_to": round(keeps_until, 3) if keeps_until is not None else None,
            "first_pair_below_bound_at": round(broken_at, 3) if broken_at is not None else None, "bins": stats}


def run_bench(size: str = "full", seconds: float = 24.0, threshold: float = DEFAULT_THRESHOLD, batch: int = 4,
              width: int = 320, height: int = 180, device: str = "cpu", threads: int | None = None,
              pair_gap: int = 6, bound: float = 0.998, seed: int = 0, films: tuple[str, ...] = tuple(FILMS),
              stream=sys.stdout) -> list[dict]:
    if threads:
        torch.set_num_threads(threads)
    dev = pick_device(device)
    cfg = EvaConfig(**(SMOKE_EVA if size == "tiny" else {}))
    say(f"skip: building {'full-size' if size != 'tiny' else 'tiny'} EVA ({cfg.width} wide, {cfg.depth} blocks) "
        f"with random weights on {dev}")
    tower = random_eva(cfg, dev, seed=seed)

    def encoder(pixels: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return tower(torch.from_numpy(pixels).to(dev)).to(torch.float16).cpu().numpy()

    records, measured = [], []

    def emit(record: dict) -> None:
        records.append(record)
        print(json.dumps(record), file=stream, flush=True)

    with tempfile.TemporaryDirectory(prefix="llamavid-skip-bench-") as tmp:
        for n, (name, kinds) in enumerate(FILMS.items()):
            if name not in films:
                continue
            path = write_film(Path(tmp) / f"{name}.mp4", kinds, seconds, width, height, seed + n)
            pixels, times, decode_s = decode(path, cfg.image_size, batch)
            say(f"skip: {name} film, {len(pixels)} frames: EVA on every frame and with skipping, {batch} a chunk")
            result = encode_both(encoder, pixels, batch, threshold)
            emit({**film_record(name, kinds, seconds, times, result, decode_s, threshold), "eva": size,
                  "device": str(dev), "threads": torch.get_num_threads(), "batch": batch,
                  "frame_size": f"{width}x{height}"})
            measured.append(([thumbnail(p) for p in pixels], result["off"]))
    for record in sweep_records(measured, tuple(sorted({*SWEEP, threshold}))):
        emit(record)
    emit(pairs_record(measured, pair_gap, bound))
    return records


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", choices=("full", "tiny"), default="full",
                        help="EVA-ViT-g at full size (the measurement) or tiny (a quick check that it runs)")
    parser.add_argument("--seconds", type=float, default=24.0, help="length of each film (6-second shots)")
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                        help="largest difference (grey levels, indexer.similar) at which a frame is skipped")
    parser.add_argument("--batch", type=int, default=4, help="frames per chunk, as the indexer's (4 on a CPU)")
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=180)
    parser.add_argument("--device", default="cpu", help="where EVA runs (float32)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--pair-gap", type=int, default=6, help="frames apart at most in the calibration pairs")
    parser.add_argument("--bound", type=float, default=0.998, help="the cosine the calibration line reports against")
    parser.add_argument("--films", default=",".join(FILMS), help=f"which films, of {', '.join(FILMS)}")


def run(args: argparse.Namespace) -> int:
    films = tuple(f.strip() for f in args.films.split(",") if f.strip())
    unknown = [f for f in films if f not in FILMS]
    if unknown or not films:
        raise UserError(f"--films: choose from {', '.join(FILMS)}, got {args.films!r}")
    run_bench(args.size, args.seconds, args.threshold, args.batch, args.width, args.height, args.device, args.threads,
              args.pair_gap, args.bound, films=films)
    return 0
