"""The ``preprocess`` stage: CLIP pixels from a decoded full-HD frame, the per-frame work before EVA.

Every frame of a film goes through :func:`llamavid.media.preprocess.preprocess_frame` (shortest-edge
bicubic resize and centre crop, or padding to a square, then normalisation), so its cost adds to
EVA's per frame; the indexer budgets both. Timed per output size and mode on one 1920x1080 frame.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from cli.bench.harness import Recorder, round_robin, say, timing_fields
from cli.bench.plan import BenchPlan
from llamavid.media.preprocess import preprocess_frame

FRAME_HW = (1080, 1920)
MODES = ("crop", "pad")


def bench_preprocess(plan: BenchPlan, rec: Recorder) -> list[dict[str, Any]]:
    """frames/s of ``preprocess_frame`` on a random 1080p frame, for each of ``plan.sizes`` and both modes."""
    frame = np.random.default_rng(plan.seed).integers(0, 256, (*FRAME_HW, 3), dtype=np.uint8)
    records = []
    for size in plan.sizes:
        say(f"preprocess 1080p -> {size}px: {', '.join(MODES)} ({plan.repeats} rounds)")
        calls = {mode: (lambda m=mode, s=size: preprocess_frame(frame, s, m)) for mode in MODES}
        results = round_robin(calls, plan.repeats, on_error=rec.error("preprocess", image_size=size))
        for mode, t in results.items():
            records.append(rec.emit({"bench": "preprocess", "variant": mode, "image_size": size,
                                     "frame": f"{FRAME_HW[1]}x{FRAME_HW[0]}", **timing_fields(t, 1, "frames"),
                                     "ms_per_frame": round(1000 * t.median_s, 2)}))
    return records
