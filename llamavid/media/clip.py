"""Cut a short clip out of a film: the span of a moment, as a file a person can keep or share.

Two ways to cut, chosen per clip:

* **copy**: when a keyframe lies at the clip's start (or up to ``snap_back`` seconds before it,
  where the caller allows the clip to start a little earlier), the packets from that keyframe on are
  copied as they are: no quality lost, and it takes as long as reading the bytes. The video ends
  with the last packet shown before ``end`` (plus the reference frames that packet needs, at most
  a frame or two more with B-frames); the audio with the last packet that starts before ``end``.
* **encode**: anywhere else a copy would have to start on a frame that cannot be decoded alone, so
  the span is decoded from the keyframe before it and encoded again (H.264 through libx264 where
  this PyAV has it, else MPEG-4 Part 2; the audio as AAC): only the span's frames are encoded.

Either way the film is read from the seek point to the clip's end, packet by packet: nothing but
the frame at hand is in memory, whatever the film's length, and a clip is at most
``MAX_CLIP_SECONDS`` long. The file is written beside its final name and renamed over it once
complete (:func:`llamavid.storage.atomic_write`): a failure, a cancel or a crash never leaves half a
clip. Times here are the film's (seconds from the container's start, as the indexer stores them).
Subtitle streams are not copied: the caller writes the lines as a sidecar ``.srt``.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from llamavid.errors import BadMedia, Cancelled, UserError
from llamavid.media.probe import main_video_stream
from llamavid.storage import atomic_write

#: The longest clip cut (seconds): a moment, not a copy of the film.
MAX_CLIP_SECONDS = 300.0
#: Output containers by file suffix.
CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}
#: Audio sample rate of re-encoded clips when the film's own cannot be used.
AUDIO_RATE = 48000

Progress = Callable[[float], None]  # the share done, 0 to 1
StopCheck = Callable[[], bool]      # True: stop now (raises Cancelled)


@dataclass(frozen=True)
class Clip:
    """A clip written: where, the film's span it holds (``start`` may be a keyframe before the span
    asked for), and how it was cut (``copy`` or ``encode``, with the video codec)."""

    path: Path
    start: float
    end: float
    method: str
    video_codec: str

    @property
    def duration(self) -> float:
        return self.end - self.start


def clip_span(start: float, end: float, duration: float | None, margin: float = 2.0) -> tuple[float, float]:
    """The span of a clip for a moment ``[start, end]``: ``margin`` seconds each side, kept inside the
    film ``[0, duration]`` (a moment that begins after the film's end is refused, see :func:`check_span`)."""
    check_span(start, end, duration)
    low = max(0.0, start - margin)
    high = end + margin if duration is None else min(duration, end + margin)
    return low, high


def check_span(start: float, end: float, duration: float | None, max_seconds: float = MAX_CLIP_SECONDS,
               name: str = "the film") -> None:
    """Refuse a span a clip cannot be cut from, with what to change."""
    if not (math.isfinite(start) and math.isfinite(end)):
        raise UserError(f"a clip's start and end must be numbers of seconds, got {start} and {end}")
    if start < 0:
        raise UserError(f"a clip cannot start before the film ({start:.3f} s); give a start of 0 or more")
    if end <= start:
        raise UserError(f"a clip must end after it starts (start {start:.3f} s, end {end:.3f} s)")
    if duration is not None and start >= duration:
        raise UserError(f"the span {start:.3f}-{end:.3f} s lies outside {name}, which is {duration:.3f} s long")
    if end - start > max_seconds:
        raise UserError(f"a clip is at most {max_seconds / 60:g} minutes ({max_seconds:g} s); "
                        f"{start:.3f}-{end:.3f} s is {end - start:.1f} s: ask for a shorter span")


def video_encoder() -> str:
    """The encoder of re-encoded clips: libx264 where this FFmpeg build has it, else MPEG-4 Part 2."""
    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


def cut(src: str | Path, dst: str | Path, start: float, end: float, *, snap_back: float = 0.0,
        progress: Progress | None = None, stop: StopCheck | None = None,
        max_seconds: float = MAX_CLIP_SECONDS) -> Clip:
    """Write the film's ``[start, end]`` (seconds) from ``src`` into ``dst`` (.mp4, .m4v, .mov or
    .mkv): copied from a keyframe at ``start`` or up to ``snap_back`` seconds before it, else
    re-encoded (see the module docstring). ``end`` past the film's end is cut at it. ``progress``
    hears the share done; ``stop`` returning True raises :class:`~llamavid.errors.Cancelled` and
    leaves ``dst`` as it was."""
    src, dst = Path(src), Path(dst)
    container_format = CONTAINERS.get(dst.suffix.lower())
    if container_format is None:
        raise UserError(f"{dst.name}: a clip is written as {', '.join(sorted(CONTAINERS))}; "
                        "give the file one of these endings")
    if not src.is_file():
        raise UserError(f"{src}: the film's file is not there (moved, deleted, or a drive not mounted)")
    if src.resolve() == dst.resolve():
        raise UserError(f"{dst}: a clip cannot be written over its own film; choose another file name")
    with _open(src) as source:
        video = main_video_stream(source)
        if video is None or video.codec_context is None:
            raise BadMedia(f"{src.name}: no video stream this FFmpeg can decode, so no clip can be cut from it")
        origin = source.start_time / 1e6 if source.start_time is not None else 0.0
        duration = source.duration / 1e6 if source.duration else None
        check_span(start, end, duration, max_seconds, src.name)
        end = end if duration is None else min(end, duration)
        keyframe = _keyframe_at(source, video, origin, start, snap_back)
    job = _Job(src, origin, end, progress, stop)
    if keyframe is not None:
        try:
            return job.write(dst, container_format, keyframe, copy=True)
        except _CannotCopy:
            pass  # a codec this container cannot hold as it is: encode it
    return job.write(dst, container_format, start, copy=False)


class _CannotCopy(Exception):
    """The film's streams cannot be copied into the clip's container."""


def _open(path: Path):
    try:
        return av.open(str(path), metadata_errors="ignore")
    except av.error.FFmpegError as exc:
        raise BadMedia(f"{path.name}: not a readable video file ({exc.strerror or exc}); it may be truncated, "
                       "damaged or not a video") from exc


def _frame_step(stream) -> float:
    rate = stream.average_rate or stream.base_rate or stream.guessed_rate
    return 1.0 / float(rate) if rate else 0.04


def _keyframe_at(source, video, origin: float, start: float, snap_back: float) -> float | None:
    """The film time of a keyframe within ``[start - snap_back, start + half a frame]``, the latest
    one; None when there is none (the clip is then encoded)."""
    tolerance = _frame_step(video) / 2
    latest = None  # a seek may land on an earlier keyframe than the last one before start (sparse indexes)
    try:
        source.seek(int((origin + start + tolerance) / video.time_base), stream=video, backward=True)
        for packet in source.demux(video):
            if packet.pts is None:
                continue
            t = float(packet.pts * video.time_base) - origin
            if packet.dts is not None and float(packet.dts * video.time_base) - origin > start + tolerance:
                break  # decode order passed the start: no keyframe shown before it comes later
            if packet.is_keyframe and t <= start + tolerance:
                latest = t
    except av.error.FFmpegError as exc:
        raise BadMedia(f"cannot read the film around {start:.1f} s ({exc.strerror or exc}); "
                       "the file may be damaged") from exc
    return latest if latest is not None and latest >= start - snap_back - tolerance else None


class _Job:
    """One cut: the source, the span's end, and the caller's progress and stop hooks."""

    def __init__(self, src: Path, origin: float, end: float, progress: Progress | None, stop: StopCheck | None):
        self.src, self.origin, self.end = src, origin, end
        self.progress, self.stop = progress, stop
        self.start = 0.0
        self._told = -1.0

    def tick(self, t: float) -> None:
        """Progress at film time ``t``; a stop asked for raises Cancelled."""
        if self.stop is not None and self.stop():
            raise Cancelled("the clip was cancelled; nothing was written")
        if self.progress is not None:
            share = min(1.0, max(0.0, (t - self.start) / max(self.end - self.start, 1e-6)))
            if share - self._told >= 0.01 or share >= 1.0 > self._told:
                self._told = share
                self.progress(share)

    def write(self, dst: Path, container_format: str, start: float, copy: bool) -> Clip:
        self.start = start
        try:
            with _open(self.src) as source, atomic_write(dst) as fh, \
                    av.open(fh, "w", format=container_format) as out:
                video = main_video_stream(source)
                audio = next(iter(source.streams.audio), None)
                if copy:
                    codec = self._copy(source, out, video, audio)
                else:
                    codec = self._encode(source, out, video, audio)
        except (Cancelled, UserError, _CannotCopy):
            raise
        except av.error.FFmpegError as exc:
            if copy:
                raise _CannotCopy(str(exc)) from exc
            raise BadMedia(f"{self.src.name}: cannot cut {start:.1f}-{self.end:.1f} s "
                           f"({exc.strerror or exc}); the file may be damaged") from exc
        if self.progress is not None and self._told < 1.0:
            self.progress(1.0)
        return Clip(dst, start, self.end, "copy" if copy else "encode", codec)

    # -- copy ------------------------------------------------------------------------------------

    def _copy(self, source, out, video, audio) -> str:
        try:
            streams = {video.index: out.add_stream_from_template(video)}
            if audio is not None:
                streams[audio.index] = out.add_stream_from_template(audio)
        except (av.error.FFmpegError, ValueError) as exc:
            raise _CannotCopy(str(exc)) from exc
        source.seek(int((self.origin + self.start) / video.time_base), stream=video, backward=True)
        offsets = {s.index: int(round((self.origin + self.start) / s.time_base))
                   for s in (video, audio) if s is not None}
        step = max(1, int(round(_frame_step(video) / video.time_base)))
        video_done, audio_done, started = False, audio is None, False
        queue: list = []  # video packets in decode order not sent yet: shown after the end, or not dated
        last_dts: int | None = None

        def send(packet, stream) -> None:
            packet.pts -= offsets[stream.index]
            packet.dts = None if packet.dts is None else packet.dts - offsets[stream.index]
            packet.stream = streams[stream.index]
            out.mux(packet)

        def flush() -> None:
            """Send the queue up to its last packet shown before the end (with the packets before it
            in decode order, which it may refer to); the rest waits."""
            nonlocal queue, last_dts
            shown = [i for i, p in enumerate(queue) if float(p.pts * video.time_base) - self.origin < self.end]
            if shown:
                for p in queue[:shown[-1] + 1]:
                    last_dts = p.dts
                    send(p, video)
                queue = queue[shown[-1] + 1:]

        for packet in source.demux(*[s for s in (video, audio) if s is not None]):
            if packet.pts is None:
                continue
            stream = packet.stream
            t = float(packet.pts * stream.time_base) - self.origin
            if stream.index == video.index and not video_done:
                if t < self.start - 1e-6:
                    continue  # before the keyframe; after it, an open GOP's leading frames (they refer back)
                if not started:
                    if not packet.is_keyframe:
                        continue
                    started = True
                if packet.dts is not None and float(packet.dts * stream.time_base) - self.origin >= self.end:
                    video_done = True  # nothing later in decode order is shown before the end
                    continue
                if packet.dts is not None:  # Matroska leaves the first packets of a GOP undated
                    undated = [p for p in queue if p.dts is None]
                    for i, p in enumerate(undated):  # back from this one, a frame each
                        p.dts = packet.dts - (len(undated) - i) * step
                    queue.append(packet)
                    flush()
                else:
                    queue.append(packet)
                self.tick(t)
            elif audio is not None and stream.index == audio.index and not audio_done:
                if t >= self.end:
                    audio_done = True
                elif started and t >= self.start - 1e-6:
                    send(packet, stream)
            if video_done and audio_done:
                break
        if any(p.dts is None for p in queue):  # the file ended with undated packets: date them on
            base = last_dts if last_dts is not None else queue[0].pts - step
            for i, p in enumerate(queue, 1):
                p.dts = min(base + i * step, p.pts) if p.dts is None else p.dts
            flush()
        if not started:
            raise _CannotCopy("no keyframe at the start")
        return video.codec_context.name

    # -- encode ----------------------------------------------------------------------------------

    def _encode(self, source, out, video, audio) -> str:
        encoder = video_encoder()
        ctx = video.codec_context
        width, height = ctx.width - ctx.width % 2, ctx.height - ctx.height % 2
        rate = video.average_rate or video.guessed_rate or Fraction(25)
        target = out.add_stream(encoder, rate=rate)
        target.width, target.height, target.pix_fmt = width, height, "yuv420p"
        target.codec_context.time_base = video.time_base
        if encoder == "libx264":
            target.options = {"preset": "veryfast", "crf": "20"}
        else:
            target.codec_context.bit_rate = max(1_000_000, width * height * 4)
        sound = None
        resampler = None
        if audio is not None and audio.codec_context is not None:
            layout = audio.codec_context.layout.name if audio.codec_context.layout.nb_channels <= 2 else "stereo"
            sample_rate = audio.codec_context.sample_rate or AUDIO_RATE
            sound = out.add_stream("aac", rate=sample_rate, layout=layout)
            sound.codec_context.time_base = Fraction(1, sample_rate)
            resampler = av.AudioResampler(format="fltp", layout=layout, rate=sample_rate,
                                          frame_size=sound.codec_context.frame_size or 1024)
        source.seek(int((self.origin + self.start) / video.time_base), stream=video, backward=True)
        offset = int(round((self.origin + self.start) / video.time_base))
        streams = [video] + ([audio] if sound is not None else [])
        video_done, audio_done = False, sound is None
        last_pts = -1
        samples = 0  # audio samples written, the next frame's pts
        for frame in _frames(source, streams, self.src):
            if isinstance(frame, av.VideoFrame):
                if video_done or frame.pts is None:
                    continue
                t = float(frame.pts * video.time_base) - self.origin
                if t >= self.end - 1e-6:
                    video_done = True
                elif t >= self.start - 1e-6:
                    picture = frame.reformat(width, height, "yuv420p")
                    pts = frame.pts - offset if last_pts < 0 else max(frame.pts - offset, last_pts + 1)
                    picture.pts, picture.time_base, last_pts = pts, video.time_base, pts
                    out.mux(target.encode(picture))
                    self.tick(t)
            elif not audio_done and frame.pts is not None:
                piece = _audio_span(frame, self.origin, self.start, self.end)
                if frame.time is not None and frame.time - self.origin + frame.samples / frame.sample_rate >= self.end:
                    audio_done = True
                if piece is None:
                    continue
                for chunk in resampler.resample(piece):
                    chunk.pts, samples = samples, samples + chunk.samples
                    out.mux(sound.encode(chunk))
            if video_done and audio_done:
                break
        out.mux(target.encode())
        if sound is not None:
            for chunk in resampler.resample(None):
                chunk.pts, samples = samples, samples + chunk.samples
                out.mux(sound.encode(chunk))
            out.mux(sound.encode())
        if last_pts < 0:
            raise BadMedia(f"{self.src.name}: no picture could be decoded between {self.start:.1f} and "
                           f"{self.end:.1f} s; the file may be damaged there")
        return encoder


def _frames(source, streams: list, src: Path) -> Iterator:
    """Decoded frames of ``streams`` from the seek point on, one at a time; a broken packet of the
    film ends in a BadMedia that names it."""
    try:
        for packet in source.demux(*streams):
            yield from packet.decode()
    except av.error.FFmpegError as exc:
        raise BadMedia(f"{src.name}: cannot decode the film ({exc.strerror or exc}); the file may be "
                       "damaged") from exc


def _audio_span(frame, origin: float, start: float, end: float):
    """The part of an audio frame inside ``[start, end)`` (None when nothing is), as a new frame."""
    if frame.time is None or not frame.samples:
        return None
    t0, rate = frame.time - origin, frame.sample_rate
    first = max(0, int(round((start - t0) * rate)))
    last = min(frame.samples, int(round((end - t0) * rate)))
    if last <= first:
        return None
    if first == 0 and last == frame.samples:
        frame.pts = None
        return frame
    data = frame.to_ndarray()
    planar = frame.format.is_planar
    part = np.ascontiguousarray(data[:, first:last] if planar else
                                data[:, first * len(frame.layout.channels):last * len(frame.layout.channels)])
    piece = av.AudioFrame.from_ndarray(part, format=frame.format.name, layout=frame.layout.name)
    piece.sample_rate = rate
    return piece
