"""Reading the user's images and short videos for a chat, with errors that name the file.

Video frames come from the same decoder as the indexer's (1 frame per second, the same sampling
rule and rotation handling as indexed films), so a clip asked about directly and a film in the
library are seen the same way.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from llamavid.errors import BadMedia
from llamavid.media.decode import DecodeStats, decode_segment, video_spec
from llamavid.media.probe import probe


def load_image(path: str | Path) -> np.ndarray:
    """RGB uint8 HxWx3; a missing, unreadable or non-image file is a BadMedia naming it."""
    path = Path(path)
    if not path.is_file():
        raise BadMedia(f"{path}: no such image file")
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except UnidentifiedImageError:
        raise BadMedia(f"{path}: not an image format this program can read (use JPEG, PNG or WebP)") from None
    except OSError as exc:
        raise BadMedia(f"{path}: cannot read the image ({exc})") from None


def load_video(path: str | Path, fps: float = 1.0, max_frames: int | None = None,
               transform: Callable[[np.ndarray], Any] | None = None) -> tuple[list[Any], list[float]]:
    """Frames sampled at ``fps`` (RGB uint8 HxWx3, or ``transform(frame)``) and their times.

    Pass the model's preprocessing as ``transform`` so only 224-px pixels are kept, never a
    clip's worth of full-resolution frames.

    ``max_frames`` keeps the clip bounded: when there are more, every k-th sampled frame is
    kept so the whole clip stays covered (the reference refused clips over 180 frames).
    """
    path = Path(path)
    if not path.is_file():
        raise BadMedia(f"{path}: no such video file")
    try:
        info = probe(path)
    except BadMedia as exc:
        raise BadMedia(f"{path}: {exc}") from None
    stats = DecodeStats()
    frames, times = [], []
    for t, image in decode_segment(video_spec(path, info), fps, 0, None, stats):
        frames.append(transform(image) if transform else image)
        times.append(t)
    if not frames:
        raise BadMedia(f"{path}: no frame could be decoded ({stats.first_error or 'empty video stream'})")
    if max_frames and len(frames) > max_frames:
        keep = np.linspace(0, len(frames) - 1, max_frames).round().astype(int)
        frames, times = [frames[i] for i in keep], [times[i] for i in keep]
    return frames, times
