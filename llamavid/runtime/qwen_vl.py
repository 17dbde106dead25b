"""The second family on transformers: a :class:`~llamavid.prompt.qwen_vl.QwenPrompt` into ids, pixels and
M-RoPE positions, greedy decoding, and the conversation's cache saved and read back.

Positions are computed here (``llamavid.model.qwen_vl.mrope_positions``) and passed on every step,
rather than left to ``generate``'s ``rope_deltas``: a cache read back from disk continues from the
position saved beside it, in a model that never saw the prompt.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load, save
from transformers import DynamicCache

from llamavid.model.qwen_vl import load_qwen_vl, mrope_positions, patchify
from llamavid.prompt.qwen_vl import QwenPrompt, Text

__all__ = ["Encoded", "QwenVLTransformers"]


@dataclass
class Encoded:
    input_ids: torch.Tensor  # [1, n]
    mm_token_type_ids: torch.Tensor  # [1, n]: 0 text, 1 image, 2 video
    position_ids: torch.Tensor  # [4, 1, n]
    next_position: int  # the M-RoPE position after the prompt
    pixel_values: torch.Tensor | None = None
    image_grid_thw: torch.Tensor | None = None
    pixel_values_videos: torch.Tensor | None = None
    video_grid_thw: torch.Tensor | None = None
    segments: list = field(default_factory=list)  # text counts and (rows, cols) groups, in order

    @property
    def length(self) -> int:
        return int(self.input_ids.shape[1])

    def model_inputs(self) -> dict:
        out = {"input_ids": self.input_ids, "mm_token_type_ids": self.mm_token_type_ids,
               "position_ids": self.position_ids}
        for key in ("pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out


class QwenVLTransformers:
    """One Qwen3-VL checkpoint on transformers, answering one conversation at a time."""

    name = "transformers"

    def __init__(self, folder: Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
        self.folder = Path(folder)
        self.model, self.tokenizer, self.geometry, self.tokens = load_qwen_vl(self.folder, dtype, device)
        self.device = torch.device(device)
        self.cache: DynamicCache | None = None
        self.length = 0  # tokens in the cache
        self.position = 0  # the M-RoPE position of the next token

    # ------------------------------------------------------------------ encoding
    def text_ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def encode(self, prompt: QwenPrompt, start: int = 0, index: int = 0) -> Encoded:
        """Ids, token types, pixels and positions of ``prompt`` placed after ``index`` cached tokens
        whose next M-RoPE position is ``start``."""
        ids: list[int] = []
        types: list[int] = []
        segments: list = []
        images, image_grids, videos, video_grids = [], [], [], []
        for part in prompt.merged():
            if isinstance(part, Text):
                piece = self.text_ids(part.text)
                ids += piece
                types += [0] * len(piece)
                segments.append(len(piece))
                continue
            patches, grid = patchify(part.frames, self.geometry)
            rows, cols = grid[1] // self.geometry.merge, grid[2] // self.geometry.merge
            pad, kind = (self.tokens.video, 2) if part.video else (self.tokens.image, 1)
            ids += [self.tokens.vision_start] + [pad] * (rows * cols) + [self.tokens.vision_end]
            types += [0] + [kind] * (rows * cols) + [0]
            segments += [1, (rows, cols), 1]
            (videos if part.video else images).append(patches)
            (video_grids if part.video else image_grids).append(grid)
        positions, next_position = mrope_positions(segments, start=start, index=index)

        def stack(patches, grids):
            if not patches:
                return None, None
            return (torch.from_numpy(np.concatenate(patches)).to(self.device, self.model.dtype),
                    torch.tensor(grids, dtype=torch.long, device=self.device))

        pixel_values, image_grid_thw = stack(images, image_grids)
        pixel_values_videos, video_grid_thw = stack(videos, video_grids)
        return Encoded(input_ids=torch.tensor([ids], device=self.device),
                       mm_token_type_ids=torch.tensor([types], device=self.device),
                       position_ids=positions[:, None, :].to(self.device), next_position=next_position,
                       pixel_values=pixel_values, image_grid_thw=image_grid_thw,
                       pixel_values_videos=pixel_values_videos, video_grid_thw=video_grid_thw, segments=segments)

    # ------------------------------------------------------------------ running
    @torch.inference_mode()
    def _forward(self, enc: Encoded) -> torch.Tensor:
        if self.cache is None:
            self.cache = DynamicCache(config=self.model.config.get_text_config())
        out = self.model(**enc.model_inputs(), cache=self.cache, use_cache=True, logits_to_keep=1)
        self.length += enc.length
        self.position = enc.next_position
        return out.logits[0, -1].float()

    def reset(self) -> None:
        self.cache, self.length, self.position = None, 0, 0

    def prefill(self, prompt: QwenPrompt) -> torch.Tensor:
        """Read ``prompt`` after what the cache holds (a new conversation: after :meth:`reset`);
        the logits of the next token."""
        return self._forward(self.encode(prompt, start=self.position, index=self.length))

    def step(self, token: int) -> torch.Tensor:
        positions, nxt = mrope_positions([1], start=self.position, index=self.length)
        enc = Encoded(input_ids=torch.tensor([[token]], device=self.device),
                      mm_token_type_ids=torch.zeros(1, 1, dtype=torch.long, device=self.device),
                      position_ids=positions[:, None, :].to(self.device), next_position=nxt)
        return self._forward(enc)

    def greedy(self, logits: torch.Tensor, max_new_tokens: int) -> list[int]:
        """Greedy tokens from ``logits`` on, up to a stop token (kept) or ``max_new_tokens``. Every
        token chosen goes into the cache, so that the conversation can go on from it."""
        out: list[int] = []
        while len(out) < max_new_tokens:
            token = int(torch.argmax(logits))
            out.append(token)
            logits = self.step(token)
            if token in self.tokens.stop:
                break
        return out

    def answer(self, prompt: QwenPrompt, max_new_tokens: int = 32) -> list[int]:
        """A new conversation: ``prompt`` read from scratch, and the greedy answer's token ids."""
        self.reset()
        return self.greedy(self.prefill(prompt), max_new_tokens)

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode([i for i in ids if i not in self.tokens.stop], skip_special_tokens=True)

    # ------------------------------------------------------------------ state
    def state_bytes(self) -> bytes:
        """The cache, its length and M-RoPE position, as safetensors bytes."""
        if self.cache is None:
            raise RuntimeError("nothing to save: no prompt was read")
        tensors = {"meta": torch.tensor([self.length, self.position], dtype=torch.long)}
        for i, layer in enumerate(self.cache.layers):
            tensors[f"k.{i}"] = layer.keys.contiguous().cpu()
            tensors[f"v.{i}"] = layer.values.contiguous().cpu()
        return save(tensors)

    def load_state(self, data: bytes) -> None:
        tensors = load(io.BytesIO(data).getvalue())
        cache = DynamicCache(config=self.model.config.get_text_config())
        n = sum(1 for k in tensors if k.startswith("k."))
        for i in range(n):
            cache.update(tensors[f"k.{i}"].to(self.device), tensors[f"v.{i}"].to(self.device), i)
        self.cache = cache
        self.length, self.position = (int(x) for x in tensors["meta"].tolist())
