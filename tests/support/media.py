"""Real test videos: H.264 + AAC + text subtitles in MKV / MP4 (written by ``llamavid.media.synthetic``),
and broken files.

Frames carry their own time: the whole picture has brightness ``(10 * second) % 250`` plus a
moving bar, so a test can tell which second a sampled frame came from.
"""
from __future__ import annotations

import struct
from fractions import Fraction
from pathlib import Path

import av

from llamavid.media.synthetic import X264, clock, clock_frame, write_audio, write_video

frame_image = clock_frame  # frame i of make_video: frame_image(i, fps, width, height)


def make_video(path: Path, seconds: float = 4.0, fps: int = 25, size: tuple[int, int] = (96, 64),
               subtitles: list[tuple[float, float, str]] | None = None, sub_codec: str | None = None,
               sub_language: str | None = "eng", audio: bool = False, gop: int | None = None,
               frame_times: list[float] | None = None) -> Path:
    """Write a video. ``frame_times`` (seconds) makes a variable-frame-rate file."""
    width, height = size
    return write_video(path, clock(width, height, fps), fps=fps, seconds=seconds, frame_times=frame_times,
                       size=size, x264=X264(preset="ultrafast", keyint=gop or 2 * fps, bframes=2), audio=audio,
                       subtitles=subtitles, sub_codec=sub_codec, sub_language=sub_language)


def rotate_mp4(path: Path, degrees_cw: int = 90) -> Path:
    """Set the track matrix of an MP4 the way phones do for portrait video (in place)."""
    data = bytearray(path.read_bytes())
    i = data.index(b"tkhd")
    version = data[i + 4]
    offset = i + 8 + (12 if version == 0 else 24) + 4 + (4 if version == 0 else 8) + 8 + 8
    one = 0x10000
    matrices = {90: [0, one, 0, -one, 0, 0], 180: [-one, 0, 0, 0, -one, 0], 270: [0, -one, 0, one, 0, 0]}
    data[offset:offset + 36] = struct.pack(">9i", *matrices[degrees_cw], 0, 0, 0x40000000)
    path.write_bytes(bytes(data))
    return path


def make_undecodable(path: Path) -> Path:
    """An MPEG-TS whose video is AVS2, for which the bundled FFmpeg has no decoder."""
    out = av.open(str(path), "w")
    stream = out.add_mux_stream("avs2", rate=25)
    stream.time_base = Fraction(1, 25)
    for i in range(25):
        packet = av.Packet(bytes([0, 0, 1, 0xB0]) + bytes(200))
        packet.stream, packet.pts, packet.dts, packet.duration = stream, i, i, 1
        packet.is_keyframe = i == 0
        out.mux(packet)
    out.close()
    return path


def make_audio_only(path: Path, seconds: float = 2.0) -> Path:
    return write_audio(path, seconds)


def truncate(path: Path, fraction: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


SRT = "1\n00:00:00,500 --> 00:00:01,500\n{a}\n\n2\n00:00:02,000 --> 00:00:03,000\n{b}\n"


def write_srt(path: Path, a: str, b: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(SRT.format(a=a, b=b).encode(encoding))
    return path
