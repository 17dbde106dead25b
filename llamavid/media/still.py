"""One picture of a film at a time, as a small JPEG: the thumbnail of a search result or a moment.

The library keeps vectors, not pixels, so the picture is decoded from the film itself with the
indexer's decoder (:func:`llamavid.media.decode.decode_segment` on a millisecond grid: the first
frame at or after the time asked for, turned upright) and scaled down.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from llamavid.media.decode import DecodeStats, decode_segment, video_spec
from llamavid.media.probe import ProbeInfo, probe

_GRID = 1000.0  # a millisecond grid: the frame at a stored time, exactly


def frame_at(path: str | Path, seconds: float, info: ProbeInfo | None = None) -> np.ndarray | None:
    """The film's frame at ``seconds`` (RGB uint8, upright), or None past its last frame."""
    spec = video_spec(path, info or probe(path))
    k = int(round(max(0.0, seconds) * _GRID))
    for _, image in decode_segment(spec, _GRID, k, k + int(_GRID), DecodeStats()):
        return image
    return None


def jpeg(image: np.ndarray, width: int = 320, quality: int = 80) -> bytes:
    """``image`` scaled down to ``width`` pixels wide at most, as JPEG bytes."""
    picture = Image.fromarray(image)
    picture.thumbnail((width, width * 4))
    out = io.BytesIO()
    picture.save(out, format="JPEG", quality=quality)
    return out.getvalue()
