"""Real test videos written with PyAV: H.264 + AAC + text subtitles in MKV / MP4, and broken files.

Frames carry their own time: the whole picture has brightness ``(10 * second) % 250`` plus a
moving bar, so a test can tell which second a sampled frame came from.
"""
from __future__ import annotations

import struct
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

SUB_CODECS = {".mkv": "subrip", ".mp4": "mov_text"}


def frame_image(i: int, fps: float, width: int, height: int) -> np.ndarray:
    second = int(i / fps)
    img = np.full((height, width, 3), (10 * second) % 250, np.uint8)
    x = int(i * 3) % width
    img[:, x:x + 4] = 255
    img[: height // 4, : width // 4] = (255, 0, 0)   # red top-left corner: shows rotation
    return img


def make_video(path: Path, seconds: float = 4.0, fps: int = 25, size: tuple[int, int] = (96, 64),
               subtitles: list[tuple[float, float, str]] | None = None, sub_codec: str | None = None,
               sub_language: str | None = "eng", audio: bool = False, gop: int | None = None,
               frame_times: list[float] | None = None) -> Path:
    """Write a video. ``frame_times`` (seconds) makes a variable-frame-rate file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = size
    out = av.open(str(path), "w")
    video = out.add_stream("libx264", rate=fps)
    video.width, video.height, video.pix_fmt = width, height, "yuv420p"
    video.options = {"preset": "ultrafast", "x264-params": f"keyint={gop or 2 * fps}:bframes=2"}
    if frame_times is not None:
        video.codec_context.time_base = Fraction(1, 1000)
    sound = out.add_stream("aac", rate=16000) if audio else None
    subs = None
    if subtitles:
        codec = sub_codec or SUB_CODECS[path.suffix]
        if codec == "ass":  # needs its script header as extradata, which only an encoder stream takes
            subs = out.add_stream("ass")
            subs.codec_context.extradata = ASS_HEADER.encode()
        else:
            subs = out.add_mux_stream(codec)
        subs.time_base = Fraction(1, 1000)
        if sub_language:
            subs.metadata["language"] = sub_language
        for start, end, text in subtitles:
            packet = av.Packet(_sub_payload(codec, text))
            packet.stream = subs
            packet.pts = packet.dts = int(start * 1000)
            packet.duration = int((end - start) * 1000)
            out.mux(packet)
    times = frame_times if frame_times is not None else [i / fps for i in range(int(seconds * fps))]
    for i, t in enumerate(times):
        frame = av.VideoFrame.from_ndarray(frame_image(int(t * fps), fps, width, height), format="rgb24")
        frame.pts = int(round(t * 1000)) if frame_times is not None else i
        out.mux(video.encode(frame))
    out.mux(video.encode())
    if sound is not None:
        _write_tone(out, sound, times[-1] + 1 / fps)
    out.close()
    return path


ASS_HEADER = """[Script Info]
ScriptType: v4.00+

[V4+ Styles]
Format: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, BackColour, Bold, Italic, \
Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, BorderStyle, Outline, Shadow, Alignment, MarginL, MarginR, \
MarginV, Encoding
Style: Default,Arial,20,&H00FFFFFF,&H000000FF,&H00000000,&H00000000,0,0,0,0,100,100,0,0,1,1,0,2,10,10,10,1

[Events]
Format: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text
"""


def _sub_payload(codec: str, text: str) -> bytes:
    if codec == "mov_text":  # 16-bit big-endian length, then UTF-8 text
        data = text.encode()
        return struct.pack(">H", len(data)) + data
    if codec in ("ass", "ssa"):  # Matroska ASS block: ReadOrder,Layer,Style,Name,MarginL,R,V,Effect,Text
        return f"0,0,Default,,0,0,0,,{text}".encode()
    return text.encode()


def _write_tone(out, stream, seconds: float) -> None:
    rate = 16000
    t = np.arange(int(seconds * rate)) / rate
    samples = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
    size = stream.codec_context.frame_size or 1024
    for k in range(0, samples.shape[1], size):
        chunk = samples[:, k:k + size]
        if chunk.shape[1] < size:
            chunk = np.pad(chunk, ((0, 0), (0, size - chunk.shape[1])))
        frame = av.AudioFrame.from_ndarray(chunk, format="flt", layout="mono")
        frame.sample_rate, frame.pts = rate, k
        out.mux(stream.encode(frame))
    out.mux(stream.encode())


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
    out = av.open(str(path), "w")
    _write_tone(out, out.add_stream("aac", rate=16000), seconds)
    out.close()
    return path


def truncate(path: Path, fraction: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


SRT = "1\n00:00:00,500 --> 00:00:01,500\n{a}\n\n2\n00:00:02,000 --> 00:00:03,000\n{b}\n"


def write_srt(path: Path, a: str, b: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(SRT.format(a=a, b=b).encode(encoding))
    return path
