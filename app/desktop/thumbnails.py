"""A thumbnail per film, cut from the video file at a time the indexer stored.

The library holds EVA features, not pixels, so the picture comes from the film itself: one frame
decoded with the indexer's decoder (:mod:`llamavid.media.decode`) at a stored frame time, a third
of the way into what is indexed (past opening titles; a dark frame is passed over for a brighter
one), scaled down and cached as JPEG under ``<data>/cache/thumbnails/``. The file name holds the
film's id, a digest of its path and size, and the frame time, so a changed film or a film indexed
further gets a new picture and an unchanged one is never decoded twice. No Qt here: this runs on a
worker thread.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
from PIL import Image

from llamavid.media.decode import DecodeStats, decode_segment, video_spec
from llamavid.media.probe import probe
from llamavid.storage import atomic_write

SIZE = (192, 108)
DARK = 24.0  # mean brightness (0-255) under which a frame counts as dark
_GRID = 1000.0  # decode on a millisecond grid: the frame at a stored time, exactly

__all__ = ["SIZE", "candidate_times", "thumbnail_dir", "thumbnail_path", "make_thumbnail", "remove_thumbnails"]


def thumbnail_dir(data_root: Path) -> Path:
    return Path(data_root) / "cache" / "thumbnails"


def _prefix(movie_id: int, path: str) -> str:
    try:
        size = os.stat(path).st_size
    except OSError:
        size = 0
    digest = hashlib.sha1(f"{path}\0{size}".encode()).hexdigest()[:10]
    return f"{movie_id}-{digest}-"


def candidate_times(times: list[float]) -> list[float]:
    """Stored frame times to try, best first: a third of the way in, then a half, a quarter, two thirds."""
    if not times:
        return []
    picks = [times[min(len(times) - 1, int(len(times) * f))] for f in (1 / 3, 1 / 2, 1 / 4, 2 / 3)]
    return list(dict.fromkeys(picks))


def thumbnail_path(data_root: Path, movie_id: int, path: str, times: list[float]) -> Path | None:
    """Where the thumbnail for these stored times is (or will be) cached; None without times."""
    picks = candidate_times(times)
    if not picks:
        return None
    return thumbnail_dir(data_root) / f"{_prefix(movie_id, path)}{int(round(picks[0] * 1000))}.jpg"


def _frame_at(spec, seconds: float) -> np.ndarray | None:
    k = int(round(seconds * _GRID))
    for _, image in decode_segment(spec, _GRID, k, k + int(_GRID), DecodeStats()):
        return image
    return None


def make_thumbnail(data_root: Path, movie_id: int, path: str, times: list[float]) -> Path | None:
    """The cached thumbnail for these stored times, decoding it if needed; None without times or
    when no frame could be decoded. Older thumbnails of the film are removed."""
    out = thumbnail_path(data_root, movie_id, path, times)
    if out is None:
        return None
    if out.is_file():
        return out
    spec = video_spec(path, probe(path))
    best, best_light = None, -1.0
    for seconds in candidate_times(times):
        image = _frame_at(spec, seconds)
        if image is None:
            continue
        light = float(image.mean())
        if light > best_light:
            best, best_light = image, light
        if light >= DARK:
            break
    if best is None:
        return None
    picture = Image.fromarray(best)
    picture.thumbnail(SIZE)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_thumbnails(data_root, movie_id)
    with atomic_write(out) as fh:
        picture.save(fh, format="JPEG", quality=85)
    return out


def remove_thumbnails(data_root: Path, movie_id: int) -> None:
    """Forget every cached thumbnail of a film (it left the library, or it has a newer one)."""
    folder = thumbnail_dir(data_root)
    if folder.is_dir():
        for old in folder.glob(f"{movie_id}-*.jpg"):
            old.unlink(missing_ok=True)
