"""The visual inputs behind a training record: image pixels, clip frames and film features.

Long-video features come in three forms, all (T, 257 or 256, C) EVA features, fp16:

* ``.pkl`` - the reference's ``{"feats": array, "inputs": str}`` (pickle: only from people you trust);
* ``.npz`` - the same two arrays (``feats``, ``inputs``), optionally ``frame_times``; no pickle;
* ``.npy`` - the features alone, memory-mapped (the indexer's cache files have this form); the
  record then carries ``subtitles`` ([{start_time, end_time, text}] or a JSON file) and optionally
  ``frame_times`` (default ``i / fps``).

The CLS row is dropped (``feats[:, 1:]``) as in the reference, so the Q-Former sees 256 rows.
``.npy`` films are never read whole: the model pulls 64 frames at a time through :class:`FeatureRows`.
"""
from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llamavid.media.load import load_image, load_video
from llamavid.media.preprocess import preprocess_images
from llamavid.model.layout import IMAGE_TOKEN, drop_cls, has_cls
from llamavid.prompt.subtitles import interleave_subtitles
from train.records import DataError


class FeatureRows:
    """(T, N, C) film features read lazily from a ``.npy`` file (CLS dropped when the file has it).

    Pickles as its path only, so a DataLoader worker hands the film to the training process for free.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        shape = np.load(self.path, mmap_mode="r").shape
        if len(shape) != 3:
            raise DataError(f"{self.path}: features must be (frames, rows, width), got shape {shape}")
        self.drop_cls = has_cls(shape[1])
        self.shape = (shape[0], shape[1] - int(self.drop_cls), shape[2])
        self._array: np.ndarray | None = None

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: Any) -> np.ndarray:
        if self._array is None:
            self._array = np.load(self.path, mmap_mode="r")
        rows = self._array[index]
        return np.ascontiguousarray(rows[..., 1:, :] if self.drop_cls else rows)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_array": None}


def _drop_cls(feats: np.ndarray, path: Path) -> np.ndarray:
    if feats.ndim != 3:
        raise DataError(f"{path}: features must be (frames, rows, width), got shape {feats.shape}")
    return drop_cls(feats)


def _subtitles(record: dict[str, Any], folder: Path) -> list[Any]:
    subs = record.get("subtitles", [])
    if isinstance(subs, str):
        path = folder / subs
        try:
            subs = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: cannot read the subtitles ({exc})") from None
    if not isinstance(subs, list):
        raise DataError("'subtitles' must be a list of {start_time, end_time, text} or a JSON file, "
                        f"got {subs!r:.60}")
    return subs


def load_film(path: Path, record: dict[str, Any], fps: float, trust_pickle: bool) -> tuple[Any, str]:
    """(features, per-frame text with one ``<image>`` per frame) of a long-video record."""
    if not path.is_file():
        raise DataError(f"feature file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        feats = FeatureRows(path)
        times = record.get("frame_times") or [i / fps for i in range(len(feats))]
        if len(times) != len(feats):
            raise DataError(f"{path}: {len(times)} frame_times for {len(feats)} frames")
        return feats, interleave_subtitles(times, _subtitles(record, path.parent))
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            if "feats" not in data or "inputs" not in data:
                raise DataError(f"{path}: an .npz film needs arrays 'feats' and 'inputs'")
            return _drop_cls(np.asarray(data["feats"]), path), str(data["inputs"])
    if not trust_pickle:
        raise DataError(f"{path}: .pkl files can run code when read; convert it to .npz or pass --trust-pickle "
                        "if you trust its origin")
    with open(path, "rb") as fh:
        data = pickle.load(fh)  # noqa: S301 - opted in with --trust-pickle
    return _drop_cls(np.asarray(data["feats"]), path), str(data["inputs"])


def film_inputs(inputs: str, frames: int, video_token: int, where: str) -> str:
    """The reference's transformation: drop ``...``, repeat every ``<image>`` ``video_token`` times."""
    count = inputs.count(IMAGE_TOKEN)
    if count != frames:
        raise DataError(f"{where}: the features have {frames} frames but the per-frame text holds {count} "
                        f"{IMAGE_TOKEN} placeholders; they must match one to one")
    return inputs.replace("...", "").replace(IMAGE_TOKEN, IMAGE_TOKEN * video_token)


def image_pixels(path: Path, size: int, aspect: str):
    """(1, 3, S, S) pixels; ``pad`` pads to a square with the mean colour first (stages 2, 3)."""
    return preprocess_images([load_image(path)], size, mode="pad" if aspect == "pad" else "crop")


def video_pixels(path: Path, size: int, fps: float, max_frames: int | None):
    """(T, 3, S, S) frames at ``fps`` (resize + centre crop, never padded, as the reference)."""
    frames, _ = load_video(path, fps=fps, max_frames=max_frames,
                           transform=lambda f: preprocess_images([f], size, mode="crop")[0])
    return torch.stack(frames)
