"""Synthetic videos written with PyAV: the one writer behind the test files and the decoding benchmark.

``write_video(path, picture, fps=..., seconds=...)`` encodes H.264 (libx264, yuv420p) from a picture
function ``picture(index, time) -> RGB uint8 array (height, width, 3)`` or from an iterable of such
arrays, with the x264 settings of ``X264`` (preset, CRF, keyframe interval, B-frames, VBV cap), and
optionally an AAC sine ``Tone`` as long as the video, text subtitle cues (one track, codec chosen
from the file suffix unless given) and explicit ``frame_times`` for a variable-frame-rate file.

Picture functions for the callers:

* ``clock(width, height, fps)``: the whole picture has brightness ``(10 * second) % 250`` plus a
  white bar moving 3 px a frame and a red top-left corner, so a test can tell which second a sampled
  frame came from (and whether it was rotated); ``clock_frame`` is one such frame.
* ``film(width, height, fps)``: film-like texture (moving sinus gradients, a panned noise texture and
  per-frame grain) that costs a real encoder and decoder about what a film does; stateful, call in order.
* ``moving_bar(width, height, color)``: one colour with a black bar moving right 4 px a frame.
* ``grey_ramp(width, height)``: a flat grey picture a little brighter every frame.
* ``scripted(width, height, scenes)``: scenes of distinct looks (a sky over a ground, drawn circles,
  squares, triangles) at scripted times, for the moments benchmark's scene questions.
* ``shots(width, height, fps, kinds)``: shots cut every few seconds, each a new random scene, either
  static (``still``: only fresh grain; ``talk``: a small disc moving slowly, local motion as of a face
  talking; ``fade``: the light changing slowly) or moving (``pan``: the camera pans): the static-shot
  and moving-shot films of ``llamavid bench skip``.

``write_audio`` writes a file with only a tone, ``repeat_clip`` makes a long clip from a short one by
remuxing copies (no re-encode). Nothing here is used when indexing or chatting.
"""
from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

#: ``picture(index, time in seconds)`` -> RGB uint8 array of shape (height, width, 3)
Picture = Callable[[int, float], np.ndarray]
#: (start, end, text) of a subtitle, in seconds
Cue = tuple[float, float, str]

#: The text subtitle codec each container takes by default.
SUB_CODECS = {".mkv": "subrip", ".mp4": "mov_text"}

#: Script header of an ASS/SSA track (its codec extradata).
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


@dataclass(frozen=True)
class X264:
    """libx264 settings; ``None`` leaves libx264's own default (preset medium, keyint 250, ...)."""

    preset: str | None = None
    crf: float | None = None
    keyint: int | None = None         # frames between keyframes (at most)
    fixed_keyint: bool = False        # exactly every ``keyint`` frames: min-keyint = keyint, no scene cuts
    bframes: int | None = None
    maxrate_kbps: int | None = None   # VBV cap
    bufsize_kbps: int | None = None   # VBV buffer, twice the cap unless given

    def options(self) -> dict[str, str]:
        """The codec options PyAV hands to FFmpeg's libx264 wrapper."""
        params = []
        if self.keyint is not None:
            params.append(f"keyint={self.keyint}")
            if self.fixed_keyint:
                params += [f"min-keyint={self.keyint}", "scenecut=0"]
        if self.bframes is not None:
            params.append(f"bframes={self.bframes}")
        if self.maxrate_kbps is not None:
            bufsize = self.bufsize_kbps if self.bufsize_kbps is not None else 2 * self.maxrate_kbps
            params += [f"vbv-maxrate={self.maxrate_kbps}", f"vbv-bufsize={bufsize}"]
        options = {}
        if self.preset is not None:
            options["preset"] = self.preset
        if self.crf is not None:
            options["crf"] = f"{self.crf:g}"
        if params:
            options["x264-params"] = ":".join(params)
        return options


@dataclass(frozen=True)
class Tone:
    """A sine wave, encoded as AAC (PyAV's default stereo layout, the same wave in both channels)."""

    hz: float = 440.0
    amplitude: float = 0.2    # 0: silence
    rate: int = 16000


# -- pictures ------------------------------------------------------------------------------------


def clock_frame(i: int, fps: float, width: int, height: int) -> np.ndarray:
    """Frame ``i``: brightness ``(10 * second) % 250``, a white bar at ``3 i`` px, a red top-left corner."""
    second = int(i / fps)
    img = np.full((height, width, 3), (10 * second) % 250, np.uint8)
    x = int(i * 3) % width
    img[:, x:x + 4] = 255
    img[: height // 4, : width // 4] = (255, 0, 0)   # red top-left corner: shows rotation
    return img


def clock(width: int, height: int, fps: float) -> Picture:
    """``clock_frame`` of the frame due at each time (also right for variable frame rates)."""
    return lambda i, t: clock_frame(int(t * fps), fps, width, height)


def film(width: int, height: int, fps: float, seed: int = 0) -> Picture:
    """Film-like texture: sinus gradients moving with time, a noise texture panned 40 px a second and
    fresh grain every frame (from one random generator: call in frame order for reproducible files)."""
    rng = np.random.default_rng(seed)
    texture = np.kron(rng.integers(0, 255, (height // 4, width // 2), dtype=np.uint8), np.ones((4, 4), np.uint8))
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)

    def picture(i: int, t: float) -> np.ndarray:
        base = 127 + 60 * np.sin(xx / 97 + t) + 40 * np.cos(yy / 53 - 1.3 * t)
        shift = int(t * 40) % width
        luma = base + 0.25 * texture[:, shift:shift + width] + rng.integers(-10, 10, (height, width))
        y = np.clip(luma, 0, 255).astype(np.uint8)
        return np.stack([y, np.roll(y, 7, 1), 255 - y], -1)

    return picture


def moving_bar(width: int, height: int, color: Sequence[int], bar: int = 8, step: int = 4) -> Picture:
    """The colour ``color`` with a black bar ``bar`` px wide moving right ``step`` px a frame."""
    def picture(i: int, t: float) -> np.ndarray:
        img = np.zeros((height, width, 3), np.uint8)
        img[:] = color
        x = (i * step) % width
        img[:, x:x + bar] = 0
        return img

    return picture


def grey_ramp(width: int, height: int, step: int = 8) -> Picture:
    """A flat grey picture of level ``(step * i) % 255``."""
    return lambda i, t: np.full((height, width, 3), (i * step) % 255, np.uint8)


@dataclass(frozen=True)
class Look:
    """A scripted scene's picture: a sky colour over a ground colour (the same for a flat background,
    ``horizon`` the share of the height that is sky) and shapes drawn on it: (``circle`` | ``square`` |
    ``triangle``, RGB colour, centre x and y as shares of the width and height, size as a share of the
    height)."""

    sky: tuple[int, int, int]
    ground: tuple[int, int, int] | None = None
    horizon: float = 0.5
    shapes: tuple[tuple[str, tuple[int, int, int], float, float, float], ...] = ()


def draw(look: Look, width: int, height: int) -> np.ndarray:
    """One frame of ``look``."""
    img = np.empty((height, width, 3), np.uint8)
    img[:] = look.sky
    if look.ground is not None:
        img[int(look.horizon * height):] = look.ground
    yy, xx = np.mgrid[0:height, 0:width]
    for kind, color, cx, cy, size in look.shapes:
        x0, y0, r = cx * width, cy * height, size * height / 2
        if kind == "circle":
            inside = (xx - x0) ** 2 + (yy - y0) ** 2 <= r * r
        elif kind == "square":
            inside = (abs(xx - x0) <= r) & (abs(yy - y0) <= r)
        elif kind == "triangle":  # pointing up
            inside = (yy <= y0 + r) & (yy >= y0 - r) & (abs(xx - x0) <= (yy - (y0 - r)) / 2)
        else:
            raise ValueError(f"shape must be circle, square or triangle, got {kind!r}")
        img[inside] = color
    return img


def scripted(width: int, height: int, scenes: Sequence[tuple[float, float, Look]],
             between: Look = Look((128, 128, 128))) -> Picture:
    """Scenes of distinct looks at scripted times, ``(start, end, look)`` in seconds (``between`` elsewhere),
    with a little grain so the encoder sees a film: what a scene search must find by description."""
    frames = {id(look): draw(look, width, height) for _, _, look in scenes}
    plain = draw(between, width, height)

    def picture(i: int, t: float) -> np.ndarray:
        base = next((frames[id(look)] for start, end, look in scenes if start <= t < end), plain)
        grain = np.random.default_rng(i).integers(-3, 4, base.shape)
        return np.clip(base.astype(np.int16) + grain, 0, 255).astype(np.uint8)

    return picture


#: The kinds of shot :func:`shots` films: static (``still``, ``talk``) and moving (``pan``).
SHOT_KINDS = ("still", "talk", "fade", "pan")


def _scene(width: int, height: int, seed: tuple[int, ...]) -> np.ndarray:
    """A random picture with broad colour gradients, a few flat objects and a fine texture (float32, 0..255)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.empty((height, width, 3), np.float32)
    for c in range(3):
        waves = rng.uniform(0.004, 0.03, (3, 2)) * rng.choice([-1, 1], (3, 2))
        img[..., c] = 128 + sum(float(rng.uniform(15, 40)) * np.sin(xx * fx + yy * fy + float(rng.uniform(0, 6.3)))
                                for fx, fy in waves)
    for _ in range(6):  # flat objects
        w, h = int(rng.integers(width // 12, width // 4)), int(rng.integers(height // 8, height // 3))
        x, y = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
        img[y:y + h, x:x + w] = rng.uniform(20, 235, 3)
    texture = rng.normal(0, 14, ((height + 3) // 4, (width + 3) // 4)).astype(np.float32)
    img += np.kron(texture, np.ones((4, 4), np.float32))[:height, :width, None]
    return img


def shots(width: int, height: int, fps: float, kinds: Sequence[str] = SHOT_KINDS, shot_seconds: float = 6.0,
          seed: int = 0, grain: int = 3, pan_speed: float = 24.0, fade: float = 1.0) -> Picture:
    """Shots of ``shot_seconds`` each, a new random scene every cut, of the ``kinds`` in turn:
    ``still`` a static shot (fresh grain of +-``grain`` levels every frame, nothing else moves),
    ``talk`` the same with a small disc moving 8 px a second (local motion, as a face talking),
    ``fade`` the still scene brightening ``fade`` grey levels a second (a light change),
    ``pan`` the scene panned ``pan_speed`` px a second (a moving camera). Any frame order works."""
    unknown = [k for k in kinds if k not in SHOT_KINDS]
    if unknown or not kinds:
        raise ValueError(f"shot kinds must be some of {', '.join(SHOT_KINDS)}, got {list(kinds)}")
    span = width + int(pan_speed * shot_seconds) + 2
    cache: dict[int, np.ndarray] = {}
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)

    def picture(i: int, t: float) -> np.ndarray:
        n = int(t // shot_seconds)
        kind, local = kinds[n % len(kinds)], t - n * shot_seconds
        if n not in cache:
            cache.clear()  # one scene at a time
            cache[n] = _scene(span if kind == "pan" else width, height, (seed, n))
        x0 = int(local * pan_speed) if kind == "pan" else 0
        img = cache[n][:, x0:x0 + width].copy()
        if kind == "talk":
            cx, cy, r = width / 3 + 8 * local, height / 2 + 4 * np.sin(local), max(3, height // 10)
            img[(xx - cx) ** 2 + (yy - cy) ** 2 <= r * r] = (230, 190, 160)
        elif kind == "fade":
            img += fade * local
        if grain:
            img += np.random.default_rng((seed, n, i)).integers(-grain, grain + 1, (height, width, 1))
        return np.clip(img, 0, 255).astype(np.uint8)

    return picture


# -- writing ---------------------------------------------------------------------------------------


def write_video(path: str | Path, frames: Picture | Iterable[np.ndarray], *, fps: int = 25,
                seconds: float | None = None, frame_times: Sequence[float] | None = None,
                size: tuple[int, int] | None = None, x264: X264 = X264(), audio: Tone | bool = False,
                subtitles: Sequence[Cue] | None = None, sub_codec: str | None = None,
                sub_language: str | None = "eng") -> Path:
    """Encode an H.264 video (yuv420p) into ``path`` (MP4, MKV, ... by its suffix; folders are made).

    ``frames`` is a picture function, called for ``int(seconds * fps)`` frames at ``i / fps``, or at
    ``frame_times`` (seconds; a variable-frame-rate file with a millisecond time base), or an iterable
    of RGB arrays, shown at ``i / fps`` (or ``frame_times``). ``size`` (width, height) defaults to
    the first frame's. ``audio`` adds an AAC tone (``True``: ``Tone()``) as long as the video;
    ``subtitles`` adds one text subtitle track (``sub_codec``: subrip in MKV, mov_text in MP4 unless
    given; ``ass`` gets a script header) tagged ``sub_language``.
    """
    path = Path(path)
    times = list(frame_times) if frame_times is not None else None
    if callable(frames):
        if times is None:
            if seconds is None:
                raise ValueError("a picture function needs seconds or frame_times")
            times = [i / fps for i in range(int(seconds * fps))]
        pictures: Iterator[np.ndarray] = (frames(i, t) for i, t in enumerate(times))
    else:
        pictures = iter(frames)
    first = next(pictures, None)
    if first is None:
        raise ValueError(f"no frames to write to {path.name}")
    height, width = first.shape[:2]
    if size is not None and tuple(size) != (width, height):
        raise ValueError(f"frame of {width}x{height} for a {size[0]}x{size[1]} video")
    tone = Tone() if audio is True else audio or None
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        options = x264.options()
        if options:
            video.options = options
        if frame_times is not None:
            video.codec_context.time_base = Fraction(1, 1000)
        sound = add_tone_stream(out, tone) if tone is not None else None
        if subtitles:
            add_subtitle_track(out, subtitles, sub_codec or _sub_codec_for(path), sub_language)
        count, last = 0, 0.0
        for i, image in enumerate(_chain(first, pictures)):
            if image.shape[:2] != (height, width):
                raise ValueError(f"frame {i} is {image.shape[1]}x{image.shape[0]}, the video {width}x{height}")
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            if times is not None:
                if i >= len(times):
                    raise ValueError(f"more frames than the {len(times)} frame_times")
                last = times[i]
            frame.pts = int(round(last * 1000)) if frame_times is not None else i
            out.mux(video.encode(frame))
            count += 1
        out.mux(video.encode())
        if sound is not None:
            end = last if times is not None else (count - 1) / fps
            write_tone(out, sound, end + 1 / fps, tone)
    return path


def _chain(first: np.ndarray, rest: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    yield first
    yield from rest


def _sub_codec_for(path: Path) -> str:
    try:
        return SUB_CODECS[path.suffix.lower()]
    except KeyError:
        raise ValueError(f"no default subtitle codec for {path.suffix!r} files: pass sub_codec") from None


def add_subtitle_track(out, cues: Iterable[Cue], codec: str, language: str | None = "eng"):
    """Add a subtitle stream of ``codec`` (millisecond time base) to an open output and mux ``cues``."""
    if codec == "ass":  # needs its script header as extradata, which only an encoder stream takes
        subs = out.add_stream("ass")
        subs.codec_context.extradata = ASS_HEADER.encode()
    else:
        subs = out.add_mux_stream(codec)
    subs.time_base = Fraction(1, 1000)
    if language:
        subs.metadata["language"] = language
    for start, end, text in cues:
        packet = av.Packet(subtitle_payload(codec, text))
        packet.stream = subs
        packet.pts = packet.dts = int(start * 1000)
        packet.duration = int((end - start) * 1000)
        out.mux(packet)
    return subs


def srt_text(cues: Iterable[tuple[float, float, str]]) -> str:
    """A sidecar ``.srt`` file's text for (start, end, text) cues in seconds."""
    def stamp(t: float) -> str:
        return f"{int(t) // 3600:02d}:{int(t) // 60 % 60:02d}:{int(t) % 60:02d},{int(t * 1000) % 1000:03d}"
    return "".join(f"{i}\n{stamp(a)} --> {stamp(b)}\n{text}\n\n" for i, (a, b, text) in enumerate(cues, 1))


def subtitle_payload(codec: str, text: str) -> bytes:
    """One cue as the packet payload ``codec`` stores."""
    if codec == "mov_text":  # 16-bit big-endian length, then UTF-8 text
        data = text.encode()
        return struct.pack(">H", len(data)) + data
    if codec in ("ass", "ssa"):  # Matroska ASS block: ReadOrder,Layer,Style,Name,MarginL,R,V,Effect,Text
        return f"0,0,Default,,0,0,0,,{text}".encode()
    return text.encode()


def add_tone_stream(out, tone: Tone = Tone()):
    """Add a mono AAC stream for ``tone`` to an open output (write it with ``write_tone``)."""
    return out.add_stream("aac", rate=tone.rate)


def write_tone(out, stream, seconds: float, tone: Tone = Tone()) -> None:
    """Encode ``seconds`` of ``tone`` into ``stream`` (the last frame padded with silence) and flush it."""
    t = np.arange(int(seconds * tone.rate)) / tone.rate
    samples = (tone.amplitude * np.sin(2 * np.pi * tone.hz * t)).astype(np.float32)[None]
    size = stream.codec_context.frame_size or 1024
    for k in range(0, samples.shape[1], size):
        chunk = samples[:, k:k + size]
        if chunk.shape[1] < size:
            chunk = np.pad(chunk, ((0, 0), (0, size - chunk.shape[1])))
        frame = av.AudioFrame.from_ndarray(chunk, format="flt", layout="mono")
        frame.sample_rate, frame.pts = tone.rate, k
        out.mux(stream.encode(frame))
    out.mux(stream.encode())


def write_audio(path: str | Path, seconds: float = 2.0, tone: Tone = Tone()) -> Path:
    """A file with one AAC track of ``tone`` and no video."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        write_tone(out, add_tone_stream(out, tone), seconds, tone)
    return path


def repeat_clip(src: str | Path, dst: str | Path, copies: int) -> Path:
    """``copies`` times the video of ``src`` back to back in ``dst``, by copying packets with shifted
    timestamps (no re-encode: a long clip for the price of a short one)."""
    with av.open(str(src)) as source, av.open(str(dst), "w") as out:
        stream = source.streams.video[0]
        target = out.add_stream_from_template(stream)
        span = int(round(source.duration / 1e6 / stream.time_base))
        for copy in range(copies):
            source.seek(0)
            for packet in source.demux(stream):
                if packet.dts is None and packet.pts is None:
                    continue
                packet.pts = None if packet.pts is None else packet.pts + copy * span
                packet.dts = None if packet.dts is None else packet.dts + copy * span
                packet.stream = target
                out.mux(packet)
    return Path(dst)
