"""Less work per film: frames of a static shot reuse the features of the last frame EVA encoded.

Before EVA, every sampled frame's preprocessed pixels (the 224-px crop EVA receives) are shrunk to a
thumbnail: the mean of each 7x7 cell, per channel, in grey levels (0-255, CLIP normalisation undone),
so two cells side by side are one EVA patch (14 px). The difference of two frames is the largest,
over EVA's patches, of the mean absolute difference of their cells (channels and the patch's 2x2
cells averaged). Averaging over cells keeps film grain and compression noise small, and the maximum
over patches keeps a small moving object (a face talking) from hiding in a whole-frame mean.

A frame whose difference from the **anchor** (the last frame EVA did encode) is at most
``threshold`` is not encoded: its stored features are a copy of the anchor's. It is compared with
the anchor, not with the previous frame, so a slow drift (a light dimming, a slow zoom) cannot carry
one encoded frame over a whole shot: every reused frame is within the threshold of the frame whose
features it gets. The threshold (:data:`DEFAULT_THRESHOLD`) was calibrated on full-size EVA-ViT-g
(random weights, ``llamavid bench skip``): docs/indexer.md gives the cosine bound it keeps.

Decisions depend only on pixels, so an interrupted film resumes to the same decisions and the same
EVA batches (the anchor is decoded again from the film, see :func:`indexer.pipeline`), and its
features come out bit-identical to an uninterrupted run's.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from llamavid.media.preprocess import CLIP_MEAN, CLIP_STD
from llamavid.model.layout import PATCH_SIZE

#: Thumbnail cell (px of the preprocessed frame); two cells side by side are one EVA patch.
CELL = PATCH_SIZE // 2
#: Largest difference (grey levels, see the module docstring) at which a frame reuses the anchor's features.
DEFAULT_THRESHOLD = 1.5

_SCALE = (255 * np.asarray(CLIP_STD, np.float32))[:, None, None]
_OFFSET = (255 * np.asarray(CLIP_MEAN, np.float32))[:, None, None]


def thumbnail(pixels: np.ndarray) -> np.ndarray:
    """(3, S, S) CLIP-normalised pixels -> (3, S/7, S/7) float32 cell means in grey levels 0-255."""
    c, h, w = pixels.shape
    if h % CELL or w % CELL:
        raise ValueError(f"frame of {h}x{w} px is not a whole number of {CELL}-px cells")
    cells = pixels.reshape(c, h // CELL, CELL, w // CELL, CELL).mean(axis=(2, 4), dtype=np.float32)
    return cells * _SCALE + _OFFSET


def difference(a: np.ndarray, b: np.ndarray) -> float:
    """Largest per-EVA-patch mean absolute difference of two thumbnails (grey levels)."""
    d = np.abs(a - b).mean(axis=0)  # channels
    h, w = d.shape
    patches = d[: h - h % 2, : w - w % 2].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
    return float(patches.max())


@dataclass
class Anchor:
    """The last frame EVA encoded: its thumbnail and its stored features (fp16 rows)."""

    thumb: np.ndarray
    row: np.ndarray


class FrameSkipper:
    """Chooses, chunk by chunk, which frames EVA encodes; keeps the anchor between chunks."""

    def __init__(self, threshold: float = DEFAULT_THRESHOLD):
        if threshold < 0:
            raise ValueError(f"the similarity threshold must be >= 0, got {threshold}")
        self.threshold = threshold
        self.anchor: Anchor | None = None
        self.encoded = 0
        self.reused = 0

    def plan(self, thumbs: list[np.ndarray]) -> list[int]:
        """For each frame, where its features come from: its own index (EVA encodes it), the index of
        an earlier frame of the chunk, or -1 (the anchor from before the chunk)."""
        sources, anchor, anchor_thumb = [], -1, self.anchor.thumb if self.anchor is not None else None
        for i, thumb in enumerate(thumbs):
            if anchor_thumb is not None and difference(anchor_thumb, thumb) <= self.threshold:
                sources.append(anchor)
            else:
                sources.append(i)
                anchor, anchor_thumb = i, thumb
        return sources

    def encode(self, encoder: Callable[[np.ndarray], np.ndarray], pixels: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
        """(rows, reused): the chunk's features, EVA run on the frames that need it in one batch, and
        which frames got a copy of an anchor's."""
        thumbs = [thumbnail(p) for p in pixels]
        sources = self.plan(thumbs)
        own = [i for i, s in enumerate(sources) if s == i]
        encoded = encoder(np.ascontiguousarray(pixels[own])) if own else None
        rows = {i: encoded[k] for k, i in enumerate(own)}
        out = np.stack([rows[s] if s >= 0 else self.anchor.row for s in sources])
        if own:
            self.anchor = Anchor(thumbs[own[-1]], rows[own[-1]].copy())
        reused = np.array([s != i for i, s in enumerate(sources)])
        self.encoded += len(own)
        self.reused += int(reused.sum())
        return out, reused


def encode_chunk(encoder: Callable[[np.ndarray], np.ndarray], pixels: np.ndarray,
                 skipper: FrameSkipper | None) -> tuple[np.ndarray, np.ndarray]:
    """(rows, reused) of one chunk: every frame through EVA without a skipper (exactly one call on the
    whole chunk, as before frames could be skipped), else as :meth:`FrameSkipper.encode` decides."""
    if skipper is None:
        return encoder(pixels), np.zeros(len(pixels), bool)
    return skipper.encode(encoder, pixels)
