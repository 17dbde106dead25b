"""Sample frames at a fixed rate (1 per second by default) from a video, streaming, with bounded memory.

Sampling rule: target ``k`` is the time ``k / fps`` (seconds from the container start); the frame
kept for it is the first decoded frame whose time is at or after the target. A frame covers one
target at most: after a gap (variable frame rate, a still image held for seconds) the next target
is the first grid point after the kept frame, so no frame is stored twice. The time of every kept
frame is returned and stored, so the chat can cite real times.

Speed (cpu-anchors section 3, and ``indexer.bench``): the decoder skips non-reference frames
(``skip_frame=NONREF``). Nothing ever predicts from them, so every frame that *is* decoded is
bit-identical to a full decode; a kept frame can be up to two frames after the grid point, like
with any decoder that has to pick a real frame. Skipping all B-frames (``BIDIR``) or keyframe-only
decoding would be faster but is lossy with real encodes (P-frames may predict from reference
B-frames), so it is not used. Only kept frames are converted to RGB. Packets are read a little
ahead: when a keyframe shown no later than the next target is already in sight, the packets before
it are dropped undecoded (exact: nothing kept is shown before that keyframe, and nothing after it
refers back). That removes the tail of every GOP (and, at the end of the file, everything shown
after the last target), and makes sparse sampling or short GOPs cost little more than their
keyframes. Measured on 1080p H.264 (``llamavid bench decode --rounds 3``, 2 cores): 5 % less
CPU than plain NONREF with 10 s GOPs, 33 % less with 2 s GOPs.

With ``workers > 1`` the film is cut into segments on the sampling grid, and worker processes
decode them in parallel (each seeks to the keyframe before its segment, and runs FFmpeg on its
share of the cores). Because the rule above only depends on the decoded frames and the grid, the
result equals a sequential decode. That is meant for many-core GPU machines, where decoding rather
than EVA limits the rate; on 2 cores FFmpeg's own threads already use both, so it gains nothing
there. On a CPU-only machine EVA dominates and one worker (a background thread) is enough.
"""
from __future__ import annotations

import math
import multiprocessing
import os
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np

from llamavid.media.preprocess import preprocess_frame

EPS = 1e-6
# FFmpeg threads per decoder; 0 lets FFmpeg choose (one per core). Worker processes set it to their
# share of the cores, so N workers do not run N x cores threads.
_decoder_threads = 0
# Decode workers start from a clean "forkserver" process: forking the indexer itself (torch and
# FFmpeg threads running, OpenMP initialised) is not fork-safe.
DECODE_START_METHOD = "forkserver"


@dataclass(frozen=True)
class VideoSpec:
    """What decoding needs from the probe."""

    path: str
    video_index: int
    start_time: float       # container start; stored times count from it
    rotation: int = 0       # degrees counter-clockwise, as PyAV's ``frame.rotation``
    duration: float | None = None


@dataclass
class DecodeStats:
    """Filled while decoding: what went wrong without stopping the run."""

    corrupt_packets: int = 0
    skipped_packets: int = 0
    last_time: float | None = None
    first_error: str | None = None
    decoded: int = 0

    def merge(self, other: DecodeStats) -> None:
        self.corrupt_packets += other.corrupt_packets
        self.skipped_packets += other.skipped_packets
        self.decoded += other.decoded
        if other.last_time is not None:
            self.last_time = max(self.last_time or 0.0, other.last_time)
        self.first_error = self.first_error or other.first_error


def next_target(time: float, fps: float) -> int:
    """Index of the first grid point strictly after a kept frame at ``time``."""
    return math.floor(time * fps + EPS) + 1


def upright(image: np.ndarray, rotation: int) -> np.ndarray:
    """Rotate a decoded picture the way players do (display matrix), so the model sees it upright."""
    turns = round(rotation / 90) % 4
    return np.ascontiguousarray(np.rot90(image, k=turns)) if turns else image


def _open(spec: VideoSpec, start_k: int, fps: float):
    """Open the file, skip non-reference frames and seek to the keyframe before target ``start_k``."""
    container = av.open(spec.path, metadata_errors="ignore")
    stream = container.streams[spec.video_index]
    stream.codec_context.skip_frame = "NONREF"
    if _decoder_threads:
        stream.codec_context.thread_count = _decoder_threads
    if start_k > 0:
        target = spec.start_time + start_k / fps
        container.seek(int(target / stream.time_base), stream=stream, backward=True)
    return container, stream


def _lookahead(stream, fps: float) -> int:
    """Packets to read ahead: enough to see the next keyframe before the gap to it is decoded."""
    rate = float(stream.average_rate or stream.guessed_rate or 30)
    return min(4096, math.ceil(rate / fps) + 16)


def _packets(container, stream, target: Callable[[], float], lookahead: int,
             stats: DecodeStats) -> Iterator:
    """Demuxed packets, minus those that cannot matter.

    When a keyframe already read ahead is shown no later than the next target, no frame before it
    can be kept (they are all shown earlier) and nothing after it refers to them (a keyframe starts
    a new group of pictures), so those packets are never decoded. With long GOPs this saves the
    tail of each GOP; with short GOPs or sparse sampling it decodes little more than keyframes.
    """
    pending: deque = deque()
    base = stream.time_base
    for packet in container.demux(stream):
        pending.append(packet)
        if len(pending) > lookahead:
            _drop_before_keyframe(pending, target(), base, stats)
            yield pending.popleft()
    while pending:
        _drop_before_keyframe(pending, target(), base, stats)
        _drop_past_last_target(pending, target(), base, stats)
        yield pending.popleft()


def _drop_before_keyframe(pending: deque, target: float, base, stats: DecodeStats) -> None:
    last = None
    for i, packet in enumerate(pending):
        if i and packet.is_keyframe and packet.pts is not None and packet.pts * base <= target + EPS:
            last = i
    for _ in range(last or 0):
        pending.popleft()
        stats.skipped_packets += 1


def _drop_past_last_target(pending: deque, target: float, base, stats: DecodeStats) -> None:
    """At the end of the file: when every packet left is shown before the next target, none of them
    can be kept, so they are not decoded (the tail of the last GOP). Empty packets stay: they
    flush the frames the decoder still holds, which may be kept."""
    real = [p for p in pending if p.size]
    if not real or any(p.pts is None or p.pts * base >= target - EPS for p in real):
        return
    stats.skipped_packets += len(real)
    kept = [p for p in pending if not p.size]
    pending.clear()
    pending.extend(kept)


def _decoded(container, stream, target: Callable[[], float], fps: float, stats: DecodeStats) -> Iterator:
    """Decoded frames; a corrupt packet is counted and skipped instead of ending the film."""
    for packet in _packets(container, stream, target, _lookahead(stream, fps), stats):
        try:
            frames = stream.decode(packet)
        except (av.error.InvalidDataError, av.error.PatchWelcomeError, av.error.UndefinedError) as exc:
            stats.corrupt_packets += 1
            stats.first_error = stats.first_error or str(exc)
            continue
        for frame in frames:
            stats.decoded += 1
            yield frame


def decode_segment(spec: VideoSpec, fps: float, start_k: int, stop_k: int | None,
                   stats: DecodeStats) -> Iterator[tuple[float, np.ndarray]]:
    """Kept frames (time, upright RGB uint8 HxWx3) for targets ``start_k <= k < stop_k``."""
    container, stream = _open(spec, start_k, fps)
    with container:
        k = start_k
        frames = _decoded(container, stream, lambda: spec.start_time + k / fps, fps, stats)
        first, fallback_dt, last = True, 1.0 / float(stream.average_rate or 25), None
        for frame in frames:
            t = (frame.time if frame.time is not None else (last or 0.0) + fallback_dt) - spec.start_time
            last = t + spec.start_time
            if first and start_k > 0 and t > start_k / fps + EPS:
                # the seek overshot (bad index): start again from the beginning, no seek
                container.close()
                yield from _from_start(spec, fps, start_k, stop_k, stats)
                return
            first = False
            stats.last_time = t
            if stop_k is not None and t >= stop_k / fps - EPS:
                return
            if t < k / fps - EPS:
                continue
            yield t, upright(frame.to_ndarray(format="rgb24"), spec.rotation)
            k = next_target(t, fps)


def _from_start(spec: VideoSpec, fps: float, start_k: int, stop_k: int | None,
                stats: DecodeStats) -> Iterator[tuple[float, np.ndarray]]:
    """Same as decode_segment without seeking: decode from the first frame, keep from start_k on."""
    for t, image in decode_segment(spec, fps, 0, stop_k, stats):
        if t >= start_k / fps - EPS:
            yield t, image


@dataclass
class Sample:
    """One sampled frame as the feature stage consumes it: its time and CLIP-preprocessed pixels."""

    time: float
    pixels: np.ndarray  # (3, S, S) float32, model input


def prepare_frame(image: np.ndarray, image_size: int) -> np.ndarray:
    return preprocess_frame(image, image_size=image_size, mode="crop").numpy()


def decode_segment_prepared(spec: VideoSpec, fps: float, start_k: int, stop_k: int | None,
                            image_size: int) -> tuple[list[float], np.ndarray, DecodeStats]:
    """One whole segment, preprocessed: the unit of work of a decode worker process."""
    stats = DecodeStats()
    times, rows = [], []
    for t, image in decode_segment(spec, fps, start_k, stop_k, stats):
        times.append(t)
        rows.append(prepare_frame(image, image_size))
    pixels = np.stack(rows) if rows else np.zeros((0, 3, image_size, image_size), np.float32)
    return times, pixels, stats


@dataclass
class SampleStream:
    """Iterate over Samples from target ``start_k`` on; ``stats`` is complete once iteration ends."""

    spec: VideoSpec
    fps: float
    start_k: int = 0
    image_size: int = 224
    workers: int = 1
    segment_seconds: float = 60.0
    prefetch: int = 16
    stats: DecodeStats = field(default_factory=DecodeStats)

    def __iter__(self) -> Iterator[Sample]:
        if self.workers <= 1:
            return self._threaded()
        return self._parallel()

    def _threaded(self) -> Iterator[Sample]:
        """Decode + preprocess in a background thread, so it overlaps with EVA."""
        out: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()

        def offer(item) -> bool:
            """Put unless the consumer has gone away (then the producer just ends)."""
            while not stop.is_set():
                try:
                    out.put(item, timeout=0.2)
                    return True
                except queue.Full:
                    continue
            return False

        def produce() -> None:
            try:
                for t, image in decode_segment(self.spec, self.fps, self.start_k, None, self.stats):
                    if not offer(Sample(t, prepare_frame(image, self.image_size))):
                        return
                offer(None)
            except BaseException as exc:  # handed to the consumer, raised there
                offer(exc)

        worker = threading.Thread(target=produce, name="llamavid-decode", daemon=True)
        worker.start()
        try:
            while True:
                item = out.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            worker.join(timeout=5)

    def _segments(self) -> Iterator[tuple[int, int | None]]:
        return plan_segments(self.spec, self.fps, self.start_k, self.segment_seconds)

    def _parallel(self) -> Iterator[Sample]:
        """Segments decoded by worker processes, consumed in order, ``workers + 1`` in flight."""
        pending: list[Future] = []
        segments = self._segments()
        with decode_pool(self.workers) as pool:
            try:
                while True:
                    while len(pending) <= self.workers:
                        seg = next(segments, None)
                        if seg is None:
                            break
                        pending.append(pool.submit(decode_segment_prepared, self.spec, self.fps,
                                                   seg[0], seg[1], self.image_size))
                    if not pending:
                        return
                    times, pixels, stats = pending.pop(0).result()
                    self.stats.merge(stats)
                    for t, row in zip(times, pixels, strict=True):
                        yield Sample(t, row)
            finally:
                for future in pending:
                    future.cancel()


def limit_decoder_threads(threads: int) -> None:
    """Initializer of a decode worker process: its share of the cores for FFmpeg's threads."""
    global _decoder_threads
    _decoder_threads = threads


def decode_pool(workers: int) -> ProcessPoolExecutor:
    """Worker processes for segment decoding, each with an equal share of the cores."""
    share = max(1, (os.cpu_count() or 1) // workers)
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(DECODE_START_METHOD),
                               initializer=limit_decoder_threads, initargs=(share,))


def plan_segments(spec: VideoSpec, fps: float, start_k: int,
                  segment_seconds: float) -> Iterator[tuple[int, int | None]]:
    """Segments on the sampling grid, at least ``segment_seconds`` long, each starting just after a
    keyframe when the container has an index (so a worker wastes no decoding before its first
    target). The last one is open-ended in case the duration is wrong."""
    length = max(1, math.ceil(segment_seconds * fps))
    end_k = math.ceil((spec.duration or 0.0) * fps)
    starts = [k for k in keyframe_targets(spec, fps) if k > start_k] or list(range(start_k + length, end_k, length))
    k = start_k
    for start in starts:
        if start - k >= length and start < end_k:
            yield k, start
            k = start
    yield k, None


def keyframe_targets(spec: VideoSpec, fps: float, margin: float = 0.25) -> list[int]:
    """First grid target after each indexed keyframe (index times are decode times, so a small
    margin covers the reorder delay). Empty when the container keeps no index."""
    with av.open(spec.path, metadata_errors="ignore") as container:
        stream = container.streams[spec.video_index]
        base = stream.time_base
        times = [float(e.timestamp * base) - spec.start_time
                 for e in stream.index_entries if e.flags & 1]  # AVINDEX_KEYFRAME
    return sorted({math.ceil((t + margin) * fps - EPS) for t in times if t > 0})


def video_spec(path: str | Path, info) -> VideoSpec:
    """Build a VideoSpec from a probe.ProbeInfo."""
    return VideoSpec(path=str(path), video_index=info.video_index, start_time=info.start_time,
                     rotation=info.rotation, duration=info.duration)
