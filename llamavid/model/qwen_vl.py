"""Qwen3-VL, the second model family (docs/second-family.md): its geometry, pixels, positions and loading.

What both backends must agree on lives here, in one place:

* **Geometry** (:class:`VisionGeometry`): one visual token covers ``patch * merge`` pixels square
  (32 px for every released size) of ``temporal`` frames (2): two frames of a video share their
  tokens, an image is one frame seen twice. :func:`fit_grid` picks the frame size that spends a
  given number of tokens on a frame pair; frames are resized to it before either backend sees them,
  so neither backend resizes (llama.cpp's preprocessor keeps a size that is already aligned).
* **Pixels** (:func:`patchify`): a pair of frames (or one image) into the flattened patches
  ``Qwen3VLForConditionalGeneration`` takes, laid out as transformers' Qwen2-VL image processor lays
  them out (tested against it), without torchvision (which does not run beside torch 2.13).
* **Positions** (:func:`mrope_positions`): Qwen3-VL's M-RoPE ids of a prompt whose visual groups each
  stand alone (the released model puts a time marker before every pair of frames): text advances
  all axes by one per token; a group of ``gh x gw`` tokens takes ``t = p``, ``h = p + row``,
  ``w = p + col`` and moves ``p`` on by ``max(gh, gw)``, as transformers' ``get_rope_index`` and
  llama.cpp's ``mtmd_image_tokens_get_n_pos`` do. Computed here so that a saved cache can be read
  back and continued without the model's own ``rope_deltas``.
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer, Qwen3VLForConditionalGeneration

__all__ = ["QWEN3_VL", "QwenVLTokens", "VisionGeometry", "fit_grid", "is_qwen_vl", "load_qwen_vl", "mrope_positions",
           "patchify"]

QWEN_VL_ARCHITECTURES = ("Qwen3VLForConditionalGeneration",)


def is_qwen_vl(folder: Path) -> bool:
    """Whether ``folder`` holds a Qwen3-VL checkpoint (its ``config.json`` says so)."""
    try:
        config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return config.get("model_type") == "qwen3_vl" or any(a in QWEN_VL_ARCHITECTURES
                                                         for a in config.get("architectures") or ())


@dataclass(frozen=True)
class VisionGeometry:
    patch: int = 16
    merge: int = 2
    temporal: int = 2
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    @property
    def token_pixels(self) -> int:
        """Side in pixels of the square one visual token covers."""
        return self.patch * self.merge

    def grid(self, width: int, height: int) -> tuple[int, int]:
        """(rows, columns) of visual tokens of an aligned frame."""
        side = self.token_pixels
        if width % side or height % side:
            raise ValueError(f"a {width}x{height} frame is not a multiple of {side} px: resize it to fit_grid's size")
        return height // side, width // side

    def tokens(self, width: int, height: int) -> int:
        rows, cols = self.grid(width, height)
        return rows * cols

    @classmethod
    def from_config(cls, config: dict, preprocessor: dict | None = None) -> VisionGeometry:
        vision = config.get("vision_config", config)
        pre = preprocessor or {}
        return cls(patch=int(vision.get("patch_size", 16)), merge=int(vision.get("spatial_merge_size", 2)),
                   temporal=int(vision.get("temporal_patch_size", 2)),
                   mean=tuple(pre.get("image_mean", (0.5, 0.5, 0.5))), std=tuple(pre.get("image_std", (0.5, 0.5, 0.5))))


#: The released sizes' geometry (2B, 4B, 8B alike).
QWEN3_VL = VisionGeometry()


def fit_grid(width: int, height: int, max_tokens: int, geometry: VisionGeometry = QWEN3_VL,
             min_tokens: int = 8) -> tuple[int, int]:
    """(width, height) in pixels, multiples of the token side, for a ``width x height`` frame to spend at
    most ``max_tokens`` per frame pair: Qwen-VL's own ``smart_resize`` (each side rounded to the
    token side; scaled down to fit the budget, flooring), then raised to ``min_tokens`` (llama.cpp's
    floor for Qwen-VL images, below which it would upscale the frame itself) one row or column at a
    time, whichever keeps the aspect closer. Both backends keep a frame of this size as it is."""
    if max_tokens < min_tokens:
        raise ValueError(f"max_tokens {max_tokens} is under the floor of {min_tokens}")
    side = geometry.token_pixels
    rows, cols = max(1, round(height / side)), max(1, round(width / side))
    if rows * cols > max_tokens:
        beta = math.sqrt(width * height / (max_tokens * side * side))
        rows, cols = max(1, math.floor(height / beta / side)), max(1, math.floor(width / beta / side))
    aspect = width / height
    while rows * cols < min_tokens:
        options = [(r, c) for r, c in ((rows + 1, cols), (rows, cols + 1)) if r * c <= max_tokens]
        if not options:
            raise ValueError(f"no grid of {min_tokens}..{max_tokens} tokens for {width}x{height}")
        rows, cols = min(options, key=lambda rc: abs(math.log(rc[1] / rc[0] / aspect)))
    return cols * side, rows * side


def patchify(frames: Sequence[np.ndarray], geometry: VisionGeometry = QWEN3_VL
             ) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Flattened patches (``[rows*cols*merge**2, 3*temporal*patch**2]`` float32) and the vision grid
    ``(1, rows*merge, cols*merge)`` of one image (``[frame]``, seen ``temporal`` times) or one pair of
    video frames. Frames are HxWx3 uint8 of one aligned size."""
    if not 1 <= len(frames) <= geometry.temporal:
        raise ValueError(f"one group holds 1 to {geometry.temporal} frames, got {len(frames)}")
    stack = [np.asarray(f) for f in frames]
    shape = stack[0].shape
    if any(f.shape != shape for f in stack) or len(shape) != 3 or shape[2] != 3:
        raise ValueError(f"frames must be HxWx3 of one size, got {[f.shape for f in stack]}")
    height, width = shape[:2]
    geometry.grid(width, height)  # checks alignment
    while len(stack) < geometry.temporal:
        stack.append(stack[-1])
    mean = np.asarray(geometry.mean, np.float32)[:, None, None]
    std = np.asarray(geometry.std, np.float32)[:, None, None]
    pixels = np.stack([(f.astype(np.float32).transpose(2, 0, 1) / 255.0 - mean) / std for f in stack])
    p, m, t = geometry.patch, geometry.merge, geometry.temporal
    gh, gw = height // p, width // p
    x = pixels.reshape(1, t, 3, gh // m, m, p, gw // m, m, p)
    x = x.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return np.ascontiguousarray(x.reshape(gh * gw, 3 * t * p * p), dtype=np.float32), (1, gh, gw)


@dataclass(frozen=True)
class QwenVLTokens:
    """The special token ids a prompt needs (from ``config.json`` and the tokenizer)."""

    image: int
    video: int
    vision_start: int
    vision_end: int
    im_start: int
    im_end: int
    endoftext: int

    @property
    def stop(self) -> tuple[int, ...]:
        return (self.im_end, self.endoftext)

    @classmethod
    def from_tokenizer(cls, tokenizer, config) -> QwenVLTokens:
        ids = tokenizer.convert_tokens_to_ids
        return cls(image=int(config.image_token_id), video=int(config.video_token_id),
                   vision_start=int(config.vision_start_token_id), vision_end=int(config.vision_end_token_id),
                   im_start=ids("<|im_start|>"), im_end=ids("<|im_end|>"), endoftext=ids("<|endoftext|>"))


def mrope_positions(segments: Sequence[int | tuple[int, int]], start: int = 0, index: int = 0
                    ) -> tuple[torch.Tensor, int]:
    """Position ids ``[4, n]`` (row 0: the cache index, rows 1-3: M-RoPE t, h, w) of ``segments``, each
    a count of text tokens or the ``(rows, cols)`` of one visual group, starting at M-RoPE position
    ``start`` and cache index ``index``; and the M-RoPE position that follows."""
    rows: list[torch.Tensor] = []
    p = start
    for seg in segments:
        if isinstance(seg, tuple):
            gh, gw = seg
            hh, ww = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
            rows.append(torch.stack([torch.full((gh * gw,), p), p + hh.reshape(-1), p + ww.reshape(-1)]))
            p += max(gh, gw)
        elif seg:
            rows.append(torch.arange(p, p + seg).expand(3, -1))
            p += seg
    mrope = torch.cat(rows, dim=1) if rows else torch.zeros(3, 0, dtype=torch.long)
    n = mrope.shape[1]
    return torch.cat([torch.arange(index, index + n)[None], mrope]).long(), p


def load_qwen_vl(folder: Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
    """(model, tokenizer, geometry, tokens) of a Qwen3-VL checkpoint folder, in eval mode."""
    folder = Path(folder)
    model = Qwen3VLForConditionalGeneration.from_pretrained(folder, dtype=dtype).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    pre_file = folder / "preprocessor_config.json"
    pre = json.loads(pre_file.read_text(encoding="utf-8")) if pre_file.is_file() else None
    return model, tokenizer, VisionGeometry.from_config(config, pre), QwenVLTokens.from_tokenizer(tokenizer,
                                                                                                   model.config)
