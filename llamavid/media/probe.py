"""Probe a video file: duration, streams, rotation, frame rate; and say clearly why a file is unusable.

The probe opens the container and decodes the first video frame. That is cheap, and it is the
only reliable way to know that the codec can really be decoded and what rotation the player
applies (phones store portrait video as landscape plus a display matrix).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import av

from llamavid.errors import BadMedia

TEXT_SUBTITLE_CODECS = frozenset({
    "subrip", "srt", "ass", "ssa", "webvtt", "mov_text", "text", "microdvd", "mpl2", "jacosub",
    "sami", "realtext", "subviewer", "subviewer1", "vplayer", "pjs", "stl", "ttml",
})
IMAGE_SUBTITLE_CODECS = {
    "hdmv_pgs_subtitle": "PGS", "dvd_subtitle": "VobSub", "dvb_subtitle": "DVB",
    "xsub": "XSUB", "dvb_teletext": "teletext",
}


@dataclass
class StreamInfo:
    index: int
    type: str
    codec: str | None
    language: str | None = None
    title: str | None = None
    forced: bool = False
    hearing_impaired: bool = False


@dataclass
class ProbeInfo:
    """What the pipeline needs to know before decoding; stored as JSON on the movie row."""

    duration: float | None
    start_time: float                # container start, the zero of every stored time
    width: int
    height: int
    video_codec: str
    video_index: int
    frame_rate: float | None         # average frames per second
    variable_frame_rate: bool
    rotation: int                    # degrees counter-clockwise the player rotates the picture
    has_audio: bool
    streams: list[StreamInfo] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def expected_samples(self, fps: float) -> int:
        """Upper estimate of how many frames sampling at ``fps`` yields (cache preallocation)."""
        if not self.duration:
            return 64
        return max(1, math.floor(self.duration * fps) + 2)


def _language(stream) -> str | None:
    lang = (stream.metadata.get("language") or "").strip().lower()
    return None if lang in ("", "und", "unk", "mis", "zxx") else lang


def _stream_info(stream) -> StreamInfo:
    ctx = stream.codec_context
    disposition = stream.disposition
    return StreamInfo(
        index=stream.index, type=stream.type, codec=ctx.codec.canonical_name if ctx is not None else None,
        language=_language(stream), title=stream.metadata.get("title"),
        forced=bool(disposition & disposition.__class__.forced),
        hearing_impaired=bool(disposition & disposition.__class__.hearing_impaired),
    )


def _is_vfr(container, stream, packets: int = 300) -> bool:
    """Variable frame rate: the container's rates disagree, or the first packets are unevenly spaced."""
    avg, base = stream.average_rate, stream.base_rate
    if avg and base and abs(float(avg) - float(base)) / float(base) > 0.01:
        return True
    stamps = []
    for packet in container.demux(stream):
        if packet.pts is not None:
            stamps.append(packet.pts)
        if len(stamps) >= packets:
            break
    steps = [b - a for a, b in zip(sorted(stamps), sorted(stamps)[1:], strict=False) if b > a]
    return bool(steps) and max(steps) > 1.5 * min(steps)


def main_video_stream(container):
    """The first real video stream (cover art attached as a picture does not count)."""
    for stream in container.streams.video:
        if not (stream.disposition & stream.disposition.__class__.attached_pic):
            return stream
    return None


def probe(path: str | Path) -> ProbeInfo:
    """Read the container header and the first frame; raise BadMedia with a clear reason."""
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        raise BadMedia("the file is empty (0 bytes); it was probably not copied completely")
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except av.error.FFmpegError as exc:
        raise BadMedia(f"not a readable video file ({exc.strerror or exc}); "
                       "it may be truncated, damaged or not a video") from exc
    with container:
        stream = main_video_stream(container)
        if stream is None:
            kinds = sorted({s.type for s in container.streams}) or ["none"]
            raise BadMedia(f"no video stream (the file has: {', '.join(kinds)})")
        if stream.codec_context is None:
            raise BadMedia("unsupported video codec: the bundled FFmpeg has no decoder for it; "
                           "convert the file (e.g. to H.264) to index it")
        first = _first_frame(container, stream)
        with av.open(str(path), metadata_errors="ignore") as again:  # fresh demuxer, from the start
            vfr = _is_vfr(again, again.streams[stream.index])
        start = container.start_time / 1e6 if container.start_time is not None else 0.0
        duration = container.duration / 1e6 if container.duration else None
        if duration is None and stream.duration is not None:
            duration = float(stream.duration * stream.time_base)
        return ProbeInfo(
            duration=duration, start_time=start,
            width=first.width, height=first.height, video_codec=stream.codec_context.codec.canonical_name,
            video_index=stream.index,
            frame_rate=float(stream.average_rate) if stream.average_rate else None,
            variable_frame_rate=vfr, rotation=int(first.rotation or 0),
            has_audio=bool(container.streams.audio),
            streams=[_stream_info(s) for s in container.streams],
        )


def _first_frame(container, stream):
    """Decode one frame, turning decoder failures into a BadMedia that names the codec."""
    codec = stream.codec_context.codec.canonical_name
    try:
        for frame in container.decode(stream):
            return frame
    except av.error.FFmpegError as exc:
        raise BadMedia(f"cannot decode the {codec} video ({exc.strerror or exc}); the codec is "
                       "unsupported or the file is damaged") from exc
    raise BadMedia(f"the {codec} video stream holds no decodable frame (truncated file?)")
