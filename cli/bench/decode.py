"""Benchmark of 1-frame-per-second sampling strategies: seconds per hour of film and peak memory.

    llamavid bench decode --rounds 3   # 1080p H.264, 10 s GOPs (cpu-anchors section 3)
    llamavid bench decode --gop 2      # the same with a keyframe every 2 s (streaming encodes)
    llamavid bench decode --seconds 10 --width 640 --height 360 --repeat 2   # a quick run

The clip is made like the cpu-anchors files (moving sinus gradients, a panned noise texture and
per-frame grain; libx264 veryfast, crf 23, a keyframe every ``--gop`` seconds without scene cuts,
2 B-frames, VBV capped at 8 Mb/s), ``--seconds`` of unique content repeated ``--repeat`` times by
remuxing (no re-encode).
Every strategy converts each kept frame to an RGB array at source resolution (what the indexer
hands to the preprocessing), and runs in a fresh process so its peak RSS is its own. The indexer's
strategy also runs on a clip ``--long-factor`` times longer to show that memory does not grow with
the length of the film.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import av
import av.filter

from llamavid.media.decode import (
    EPS,
    DecodeStats,
    decode_pool,
    decode_segment,
    plan_segments,
    prepare_frame,
    video_spec,
)
from llamavid.media.probe import probe
from llamavid.media.synthetic import X264, film, repeat_clip, write_video

STRATEGIES = {
    "every-frame": "decode every frame (PyAV defaults), keep the first at/after each second",
    "fps-filter": "decode every frame through libavfilter fps=1 (what `ffmpeg -vf fps=1` does)",
    "seek": "seek to each second, decode from the keyframe up to it",
    "nonref": "decode sequentially, skipping non-reference frames (skip_frame=NONREF)",
    "llamavid": "the indexer's decoder, one pass (what it runs on a CPU machine): NONREF, and packets "
                "before a keyframe due before the next target, or after the last target, are never decoded",
    "llamavid-workers": "the same on keyframe-aligned segments in parallel worker processes, each with its "
                        "share of the cores (what the indexer runs on a GPU machine)",
    "llamavid+preprocess": "the one-pass decoder plus CLIP preprocessing (what EVA receives)",
    "ffmpeg": "the ffmpeg command line: -vf fps=1 -f null (only when ffmpeg is installed)",
}


@dataclass
class Result:
    strategy: str
    clip_seconds: float
    wall_seconds: float
    sampled: int
    seconds_per_hour: float     # wall clock
    cpu_seconds_per_hour: float  # CPU time of every process and thread involved (load-independent)
    peak_rss_mb: float          # the measuring process
    worker_peak_rss_mb: float   # the largest child process (decode workers), 0 if none
    note: str = ""


# -- the clip ------------------------------------------------------------------------------------


def make_clip(path: Path, seconds: float, width: int = 1920, height: int = 1080, fps: int = 24,
              kbps: int = 8000, gop_seconds: float = 10) -> Path:
    """Synthetic film-like H.264, a keyframe every ``gop_seconds`` (10: cpu-anchors section 3)."""
    keyint = max(1, round(gop_seconds * fps))
    x264 = X264(preset="veryfast", crf=23, keyint=keyint, fixed_keyint=True, bframes=2, maxrate_kbps=kbps)
    return write_video(path, film(width, height, fps), fps=fps, seconds=seconds, x264=x264)


# -- strategies (each runs inside its own process, see _measure) ----------------------------------


def _sequential(path: str, skip: str | None = None) -> int:
    with av.open(path) as container:
        stream = container.streams.video[0]
        if skip:
            stream.codec_context.skip_frame = skip
        kept, target = 0, 0
        for frame in container.decode(stream):
            if frame.time >= target - EPS:
                frame.to_ndarray(format="rgb24")
                kept, target = kept + 1, math.floor(frame.time + EPS) + 1
    return kept


def _fps_filter(path: str) -> int:
    with av.open(path) as container:
        stream = container.streams.video[0]
        graph = av.filter.Graph()
        source = graph.add_buffer(template=stream)
        fps, sink = graph.add("fps", "1"), graph.add("buffersink")
        source.link_to(fps)
        fps.link_to(sink)
        graph.configure()
        kept = 0
        for frame in _with_end(container.decode(stream)):
            graph.push(frame)
            while True:
                try:
                    graph.pull().to_ndarray(format="rgb24")
                    kept += 1
                except (av.BlockingIOError, av.EOFError):
                    break
    return kept


def _with_end(frames):
    yield from frames
    yield None  # flushes the filter graph


def _seek(path: str, seconds: int) -> int:
    with av.open(path) as container:
        stream = container.streams.video[0]
        for k in range(seconds):
            container.seek(int(k / stream.time_base), stream=stream, backward=True)
            for frame in container.decode(stream):
                if frame.time >= k - EPS:
                    frame.to_ndarray(format="rgb24")
                    break
    return seconds


def peak_rss_mb() -> float:
    """This process's peak resident memory. Linux's VmHWM starts afresh at exec, unlike
    ``ru_maxrss``, which a child inherits from the parent that forked it (the parent that made
    the clip holds a few hundred MB of frames, which would show up in every row)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 if sys.platform != "darwin" else 1024 ** 2)


def _segment_count(spec, fps: float, start: int, stop: int | None) -> tuple[int, float, float]:
    """Frames kept in one segment, this worker's peak RSS in MB and the CPU seconds it took."""
    cpu = time.process_time()
    count = sum(1 for _ in decode_segment(spec, fps, start, stop, DecodeStats()))
    return count, peak_rss_mb(), time.process_time() - cpu


def _warm() -> None:
    """Start-up work of a worker process (importing this module), kept out of the timing: paid once per run."""
    time.sleep(0.2)  # so that every worker of the pool gets one of these


def _one_pass(path: str, prepare: bool) -> int:
    """Frames kept by the indexer's one-pass decoder (optionally preprocessed as for EVA)."""
    spec = video_spec(path, probe(path))
    kept = 0
    for _, image in decode_segment(spec, 1.0, 0, None, DecodeStats()):
        if prepare:
            prepare_frame(image, 224)
        kept += 1
    return kept


def _workers(path: str, pool, segment_seconds: float = 30.0) -> tuple[int, float, float]:
    """(frames kept, largest worker peak RSS in MB, worker CPU seconds) with parallel segments."""
    spec = video_spec(path, probe(path))
    segments = list(plan_segments(spec, 1.0, 0, segment_seconds))
    results = [f.result() for f in [pool.submit(_segment_count, spec, 1.0, a, b) for a, b in segments]]
    return sum(r[0] for r in results), max(r[1] for r in results), sum(r[2] for r in results)


def _ffmpeg(path: str) -> int:
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-i", path,
                    "-vf", "fps=1", "-f", "null", "-"], check=True)
    return -1


def run_one(strategy: str, path: str, workers: int, seek_seconds: int) -> dict:
    """Time one strategy in this process (its imports, done at module load, are not part of the timing);
    returns what Result needs."""
    pool = None
    if strategy == "llamavid-workers":
        pool = decode_pool(workers)
        for future in [pool.submit(_warm) for _ in range(workers)]:
            future.result()
    start, cpu = time.perf_counter(), time.process_time()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    sampled = {
        "every-frame": lambda: _sequential(path),
        "nonref": lambda: _sequential(path, "NONREF"),
        "fps-filter": lambda: _fps_filter(path),
        "seek": lambda: _seek(path, seek_seconds),
        "llamavid": lambda: _one_pass(path, prepare=False),
        "llamavid-workers": lambda: _workers(path, pool),
        "llamavid+preprocess": lambda: _one_pass(path, prepare=True),
        "ffmpeg": lambda: _ffmpeg(path),
    }[strategy]()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    if pool is not None:
        pool.shutdown()
    sampled, workers_rss, workers_cpu = sampled if isinstance(sampled, tuple) else (sampled, 0.0, 0.0)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the ffmpeg command line
    cpu += workers_cpu + (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
    own = peak_rss_mb()
    return {"wall": wall, "cpu": cpu, "sampled": sampled, "rss": own, "children_rss": workers_rss}


def _measure(strategy: str, clip: Path, clip_seconds: float, workers: int, seek_seconds: int) -> Result:
    """Run a strategy in a fresh interpreter, so peak RSS and caches are its own."""
    cmd = [sys.executable, "-m", "cli", "bench", "decode", "--one", strategy, "--clip", str(clip),
           "--workers", str(workers), "--seek-seconds", str(seek_seconds)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    measured = seek_seconds if strategy == "seek" else clip_seconds
    note = f"first {seek_seconds} s, extrapolated" if strategy == "seek" else ""
    return Result(strategy, measured, round(data["wall"], 2), data["sampled"],
                  round(data["wall"] * 3600 / measured, 1), round(data["cpu"] * 3600 / measured, 1),
                  round(data["rss"], 1),
                  round(data["children_rss"], 1) if strategy != "ffmpeg" else 0.0, note)


def _median(runs: list[Result]) -> Result:
    """One row for a strategy measured several times: median wall and CPU, largest memory."""
    first = runs[0]
    wall = statistics.median(r.wall_seconds for r in runs)
    walls = ", ".join(f"{r.wall_seconds:.2f}" for r in runs)
    note = "; ".join(n for n in (first.note, f"median of {len(runs)} runs: {walls} s" if len(runs) > 1 else "") if n)
    return Result(first.strategy, first.clip_seconds, round(wall, 2), first.sampled,
                  round(statistics.median(r.seconds_per_hour for r in runs), 1),  # not from the rounded wall
                  round(statistics.median(r.cpu_seconds_per_hour for r in runs), 1),
                  max(r.peak_rss_mb for r in runs), max(r.worker_peak_rss_mb for r in runs), note)


def benchmark(seconds: float = 30, repeat: int = 4, width: int = 1920, height: int = 1080,
              workers: int | None = None, seek_seconds: int = 20, long_factor: int = 4,
              strategies: list[str] | None = None, workdir: Path | None = None,
              rounds: int = 1, gop_seconds: float = 10, log=print) -> dict:
    """Make the clips, measure every strategy ``rounds`` times (interleaved, so a change of load
    hits all of them alike), return the medians (and print them with ``log``)."""
    workers = workers or max(1, os.cpu_count() or 1)
    folder = Path(workdir or tempfile.mkdtemp(prefix="llamavid-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    unique = folder / f"unique-{width}x{height}-{seconds:g}s-gop{gop_seconds:g}.mp4"
    if not unique.exists():
        log(f"making a {seconds:g} s {width}x{height} H.264 clip, a keyframe every {gop_seconds:g} s ...")
        make_clip(unique, seconds, width, height, gop_seconds=gop_seconds)
    clip = repeat_clip(unique, folder / f"{unique.stem}-x{repeat}.mp4", repeat)
    clip_seconds = seconds * repeat
    log(f"clip: {clip_seconds:g} s {width}x{height}, {clip.stat().st_size * 8 / clip_seconds / 1e6:.1f} Mb/s, "
        f"GOP {gop_seconds:g} s; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} (other processes "
        "share the CPUs: compare CPU-s, and wall only within this run)")
    names = strategies or [s for s in STRATEGIES if s != "ffmpeg" or shutil.which("ffmpeg")]
    runs: dict[str, list[Result]] = {name: [] for name in names}
    for _ in range(rounds):
        for name in names:
            runs[name].append(_measure(name, clip, clip_seconds, workers, min(seek_seconds, int(clip_seconds))))
    results = [_median(runs[name]) for name in names]
    for result in results:
        log(_row(result))
    long_clip = repeat_clip(unique, folder / f"{unique.stem}-x{repeat * long_factor}.mp4", repeat * long_factor)
    long = _measure("llamavid", long_clip, clip_seconds * long_factor, workers, seek_seconds)
    log(f"memory vs length: {_row(long)}")
    return {"clip": {"path": str(clip), "seconds": clip_seconds, "width": width, "height": height,
                     "gop_seconds": gop_seconds, "bitrate_mbps": round(clip.stat().st_size * 8 / clip_seconds / 1e6, 2),
                     "workers": workers, "cpus": os.cpu_count(), "load_average": os.getloadavg(),
                     "rounds": rounds},
            "results": [asdict(r) for r in results], "long": asdict(long)}


def _row(r: Result) -> str:
    return (f"{r.strategy:<20} {r.seconds_per_hour:>7.0f} s/hour wall, {r.cpu_seconds_per_hour:>6.0f} CPU-s/hour  "
            f"({r.wall_seconds:.1f} s for {r.clip_seconds:g} s, "
            f"{r.sampled} frames)  peak RSS {r.peak_rss_mb:.0f} MB"
            + (f" + workers {r.worker_peak_rss_mb:.0f} MB" if r.worker_peak_rss_mb else "")
            + (f"  [{r.note}]" if r.note else ""))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=30, help="unique content to encode")
    parser.add_argument("--repeat", type=int, default=4, help="copies of it in the measured clip")
    parser.add_argument("--width", type=int, default=1920)
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument("--workers", type=int, default=0, help="decode processes for the indexer (0: CPU count)")
    parser.add_argument("--seek-seconds", type=int, default=20, help="seconds sampled by the slow seek strategy")
    parser.add_argument("--long-factor", type=int, default=4)
    parser.add_argument("--gop", type=float, default=10, help="seconds between keyframes in the clip")
    parser.add_argument("--rounds", type=int, default=1, help="measure each strategy this many times (median)")
    parser.add_argument("--strategies", nargs="*", choices=list(STRATEGIES))
    parser.add_argument("--workdir", type=Path, help="keep the clips here (reused by later runs)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON at the end")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--clip", help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    if args.one:
        print(json.dumps(run_one(args.one, args.clip, args.workers, args.seek_seconds)))
        return 0
    report = benchmark(args.seconds, args.repeat, args.width, args.height, args.workers or None,
                       args.seek_seconds, args.long_factor, args.strategies, args.workdir, args.rounds,
                       args.gop)
    if args.json:
        print(json.dumps(report, indent=2))
    return 0
