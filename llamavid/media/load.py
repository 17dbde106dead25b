"""Reading the user's pictures and short clips for a chat: bounded by design, with errors that name the file.

A chat asks about what a person (or an HTTP client) hands over, so nothing here trusts the input's
size. What the model needs is known (a 224 or 336 px square), so:

* a picture's size is read from its header first (:func:`picture_size`: a request is refused before
  anything is decoded), and it is decoded straight to a few times what the model needs (JPEG's DCT
  draft, then an integer ``reduce``), never to a canvas larger than that: a 6000 x 6000 photo costs
  one decode of the file, not a full-resolution array per step. Pictures within four times the model's
  size are left exactly as they are, so the preprocessing keeps pixel parity with the reference.
* a clip is probed first (:func:`check_clip`: its length and frame size are limited; a film belongs in
  the library), then sampled at a rate that keeps at most ``max_frames`` frames, so only those
  frames are converted and kept (the decoder drops what lies before the next keyframe in sight).

Video frames come from the same decoder as the indexer's (the same sampling rule and rotation
handling as indexed films), so a clip asked about directly and a film in the library are seen alike.
Decoding checks ``check()`` between pictures and frames, so Stop or a gone client ends it early.
"""
from __future__ import annotations

import io
import math
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from llamavid.errors import BadMedia
from llamavid.media.decode import DecodeStats, decode_segment, video_spec
from llamavid.media.probe import ProbeInfo, probe

MAX_PICTURE_PIXELS = 64_000_000    # one picture (8000 x 8000); larger ones are refused unread
MAX_REQUEST_PIXELS = 128_000_000   # all the pictures of one question together
MAX_CLIP_SECONDS = 30 * 60         # a longer clip is a film: the library indexes it once
MAX_CLIP_PIXELS = 4096 * 2160      # one frame of a clip (4K); FFmpeg keeps several of them
KEEP_FACTOR = 4                    # pictures are kept at >= 4x the model's side (exact below that)
FORMATS = "JPEG, PNG or WebP"


@dataclass(frozen=True)
class EncodedPicture:
    """A picture as it came (the bytes of a file), decoded only when its question's turn comes."""

    data: bytes
    name: str  # how messages name it: a file name or "messages[0].content[1]"
    width: int
    height: int

    @classmethod
    def read(cls, data: bytes, name: str) -> EncodedPicture:
        """Check the header now (format, size); a bad picture is refused before it waits anywhere."""
        width, height = picture_size(data, name)
        return cls(data, name, width, height)


def picture_size(source: bytes | str | Path, name: str | None = None) -> tuple[int, int]:
    """(width, height) from the picture's header, without decoding it; BadMedia when it is not a
    picture or larger than :data:`MAX_PICTURE_PIXELS`."""
    with _opened(source, name) as image:
        return image.size


def check_request_pixels(sizes: Iterable[tuple[int, int]]) -> None:
    """Refuse a question whose pictures together exceed :data:`MAX_REQUEST_PIXELS`."""
    total = sum(w * h for w, h in sizes)
    if total > MAX_REQUEST_PIXELS:
        raise BadMedia(f"the pictures hold {total / 1e6:.0f} million pixels together; one question takes up to "
                       f"{MAX_REQUEST_PIXELS / 1e6:.0f} million: send fewer or smaller pictures")


def load_image(source: EncodedPicture | bytes | str | Path, image_size: int | None = None,
               mode: str = "pad") -> np.ndarray:
    """RGB uint8 HxWx3, at least ``KEEP_FACTOR * image_size`` on the side ``mode`` scales by (the
    longest for "pad", the shortest for "crop"), or whole when ``image_size`` is None.

    A missing, unreadable or non-image file is a BadMedia naming it."""
    if isinstance(source, EncodedPicture):
        source, name = source.data, source.name
    else:
        name = None
    with _opened(source, name) as image:
        where = name or str(source)
        try:
            if image_size:
                image = _reduced(image, KEEP_FACTOR * image_size, mode)
            return np.asarray(image.convert("RGB"))
        except Exception as exc:  # noqa: BLE001 - a damaged file: OSError, SyntaxError, ValueError, struct.error...
            raise BadMedia(f"{where}: cannot read the image ({exc})") from None


def _opened(source: bytes | str | Path, name: str | None) -> Image.Image:
    """The picture opened lazily (only its header read), checked against the pixel limit."""
    where = name or str(source)
    if isinstance(source, (str, Path)) and not Path(source).is_file():
        raise BadMedia(f"{source}: no such image file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):  # Pillow's own limit, above ours
        raise BadMedia(f"{where}: {_too_large('far more than')}") from None
    except UnidentifiedImageError:
        raise BadMedia(f"{where}: not an image format this program can read (use {FORMATS})") from None
    except Exception as exc:  # noqa: BLE001 - a damaged header: OSError, SyntaxError, ValueError...
        raise BadMedia(f"{where}: cannot read the image ({exc})") from None
    if image.width * image.height > MAX_PICTURE_PIXELS:
        image.close()
        raise BadMedia(f"{where}: the picture is {image.width}x{image.height} pixels; {_too_large('more than')}")
    return image


def _too_large(how: str) -> str:
    return f"that is {how} the {MAX_PICTURE_PIXELS / 1e6:.0f} million pixels a picture may have: send a smaller one"


def _reduced(image: Image.Image, keep: int, mode: str) -> Image.Image:
    """The picture decoded at the smallest integer reduction that keeps ``keep`` pixels on the side
    the model scales by; in "crop" mode an extreme strip is first cut to 4:1 around its centre
    (the model's centre crop only sees the middle), so no later step makes a huge canvas."""
    w, h = image.size
    side = max(w, h) if mode == "pad" else min(w, h)
    factor = max(1, side // keep)
    if factor > 1:
        image.draft("RGB", (math.ceil(w / factor), math.ceil(h / factor)))  # JPEG: decodes at 1/2..1/8 scale
        w, h = image.size
        side = max(w, h) if mode == "pad" else min(w, h)
        factor = max(1, side // keep)
    if mode == "crop" and max(w, h) > 4 * min(w, h):
        image = image.crop(_middle(w, h, 4 * min(w, h)))
    if factor == 1:
        return image
    if image.mode not in ("L", "LA", "RGB", "RGBA"):  # reduce() takes these; the model sees RGB anyway
        image = image.convert("RGB")
    return image.reduce(factor)


def _middle(w: int, h: int, long: int) -> tuple[int, int, int, int]:
    """The box of length ``long`` around the centre of a w x h strip, along its long side."""
    if w > h:
        return (w - long) // 2, 0, (w - long) // 2 + long, h
    return 0, (h - long) // 2, w, (h - long) // 2 + long


def check_clip(path: str | Path, name: str | None = None) -> ProbeInfo:
    """The clip's probe, when it is a video short and small enough to ask about directly."""
    where = name or str(path)
    if not Path(path).is_file():
        raise BadMedia(f"{where}: no such video file")
    try:
        info = probe(path)
    except BadMedia as exc:
        raise BadMedia(f"{where}: not a video this program can read ({exc})") from None
    if info.duration and info.duration > MAX_CLIP_SECONDS:
        raise BadMedia(f"{where} is {_minutes(info.duration)} long; a question about a clip takes up to "
                       f"{_minutes(MAX_CLIP_SECONDS)}: add it to the library instead (it is then read once and "
                       "every question about it is quick)")
    if info.width * info.height > MAX_CLIP_PIXELS:
        raise BadMedia(f"{where}: frames of {info.width}x{info.height} pixels; a clip may be up to 4K "
                       f"(4096x2160): make it smaller, or add it to the library instead")
    return info


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def load_video(path: str | Path, fps: float = 1.0, max_frames: int | None = None,
               transform: Callable[[np.ndarray], Any] | None = None,
               check: Callable[[], None] | None = None) -> tuple[list[Any], list[float]]:
    """Frames sampled at ``fps`` (RGB uint8 HxWx3, or ``transform(frame)``) and their times.

    Pass the model's preprocessing as ``transform`` so only 224-px pixels are kept, never a
    clip's worth of full-resolution frames. ``max_frames`` keeps the clip bounded: a longer clip
    is sampled more sparsely so the whole of it stays covered (the reference refused clips over
    180 frames). ``check`` is called between frames (it raises to stop)."""
    info = check_clip(path)
    rate = fps if not (max_frames and info.duration) else min(fps, max_frames / info.duration)
    stats = DecodeStats()
    samples = decode_segment(video_spec(path, info), rate, 0, None, stats)
    frames, times = _kept(samples, max_frames, transform, check)
    if not frames:
        raise BadMedia(f"{path}: no frame could be decoded ({stats.first_error or 'empty video stream'})")
    if max_frames and len(frames) > max_frames:
        keep = np.linspace(0, len(frames) - 1, max_frames).round().astype(int)
        frames, times = [frames[i] for i in keep], [times[i] for i in keep]
    return frames, times


def _kept(samples: Iterator[tuple[float, np.ndarray]], limit: int | None,
          transform: Callable[[np.ndarray], Any] | None, check: Callable[[], None] | None) -> tuple[list, list]:
    """The samples, at most ``2 * limit`` kept at any time: when a clip's length was misreported,
    every other one is dropped and the rest sampled half as often, so memory stays bounded."""
    kept: list[tuple[float, Any]] = []
    step = 1
    for i, (t, image) in enumerate(samples):
        if check is not None:
            check()
        if i % step:
            continue
        kept.append((t, transform(image) if transform else image))
        if limit and len(kept) > 2 * limit:
            kept, step = kept[::2], step * 2
    return [f for _, f in kept], [t for t, _ in kept]
