"""EVA feature arrays as stored and fed: the rules every reader of cached features shares (no torch,
so the library and its readers stay light)."""
from __future__ import annotations

from typing import Any


def has_cls(rows: int) -> bool:
    """EVA features carry a CLS row before their square of patches: 257 = 1 + 16^2, 577 = 1 + 24^2."""
    return rows % 2 == 1


def drop_cls(features: Any) -> Any:
    """(T, 1 + N, C) -> (T, N, C); features without CLS are returned as they are.

    The content tokens never use CLS (the reference's ``mm_vision_select_feature="patch"``), and its
    long-video path feeds ``feats[:, 1:]`` so that Q-Former never sees it either. A memory map is
    sliced, not copied.
    """
    return features[:, 1:] if has_cls(features.shape[1]) else features
