"""How visual rows are laid out, as rules every part shares: EVA features (a CLS row, then a square of
patches), the visual tokens made from them per frame, and the ``<image>`` placeholder they fill.

No torch, so prompt building, the library's readers and the training-data validator stay light.
"""
from __future__ import annotations

import math
from typing import Any

#: The placeholder of a visual slot: ``<image>`` in prompt text, -200 among token ids. The k-th
#: placeholder takes the k-th slot's rows (:meth:`llamavid.model.modeling.LlamaVidForCausalLM.embed_inputs`).
IMAGE_TOKEN = "<image>"
IMAGE_TOKEN_INDEX = -200
PATCH_SIZE = 14  # pixels per side of an EVA-ViT-g patch, in every released checkpoint


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


def patch_count(image_size: int, patch_size: int = PATCH_SIZE) -> int:
    """Patch rows of one frame: 256 at 224 px, 576 at 336 px."""
    return (image_size // patch_size) ** 2


def content_tokens(compress_type: str | None, patches: int) -> int:
    """Content tokens per frame, as :func:`llamavid.model.visual_tokens.pool_content` makes them:
    every patch (None), a grid averaged with kernel ``side // g`` (``grid:g``: ``side // (side // g)``
    per side, g itself only when it divides the side), or one mean (``mean``, ``mean_concat``)."""
    if compress_type in (None, "None"):
        return patches
    if str(compress_type).startswith("grid"):
        side = math.isqrt(patches)
        return (side // (side // int(str(compress_type).split(":", 1)[1]))) ** 2
    if "mean" in str(compress_type):
        return 1
    raise ValueError(f"unknown compress_type {compress_type!r}")


def tokens_per_frame(compress_type: str | None, image_size: int) -> int:
    """LLM rows per image or frame: one context token plus the content tokens."""
    return 1 + content_tokens(compress_type, patch_count(image_size))
