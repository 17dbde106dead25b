"""The visual input of a group of items, encoded once: an image, a clip, a film, or nothing."""
from __future__ import annotations

import base64
import binascii
import io
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from evaluation.films import Films
from evaluation.items import Source
from evaluation.qwen_answering import QwenInput, load_qwen_input
from llamavid.errors import BadMedia
from llamavid.media.load import load_image
from llamavid.runtime.api import LlamaVid
from llamavid.runtime.family import QwenVL
from llamavid.runtime.inputs import Visual


def decode_base64_image(data: str, where: str) -> Image.Image:
    """A base64 image cell (MMBench's TSV) as an RGB picture; BadMedia naming the row if it is not one."""
    try:
        with Image.open(io.BytesIO(base64.b64decode(data, validate=False))) as image:
            return image.convert("RGB")
    except (binascii.Error, UnidentifiedImageError, OSError, ValueError) as exc:
        raise BadMedia(f"{where}: the image cell is not a base64 image ({exc})") from None


class VisualLoader:
    """Turns a :class:`Source` into the engine's :class:`Visual` (EVA runs here for images and clips)."""

    def __init__(self, lv: LlamaVid | QwenVL, films: Films | None = None, fps: float = 1.0,
                 max_frames: int | None = None, answer_tokens: int = 512):
        self.lv = lv
        self.films = films
        self.fps = fps
        self.max_frames = max_frames
        self.answer_tokens = answer_tokens

    def load(self, source: Source) -> Visual | QwenInput:
        """The group's input for the loaded model's family (a Qwen3-VL reads pixels, not EVA features)."""
        if isinstance(self.lv, QwenVL):
            return load_qwen_input(source, self.films, self.fps, self.max_frames)
        if source.kind == "none":
            return self.lv.visual()
        if source.kind == "image":
            picture = (decode_base64_image(source.data, source.path) if source.data is not None
                       else load_image(source.path))
            return self.lv.visual(images=[picture])
        if source.kind == "video":
            return self.lv.visual(video=Path(source.path), fps=self.fps, max_frames=self.max_frames,
                                  answer_tokens=self.answer_tokens)
        if source.kind == "film":
            if self.films is None:
                raise ValueError("film sources need the library (VisualLoader(films=...))")
            return self.films.visual(source.path, source.subtitle_file, source.subtitle_offset)
        raise ValueError(f"unknown source kind {source.kind!r}")
