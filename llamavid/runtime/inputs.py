"""What a chat is about, encoded once: kept torch-free so the library's readers can build it cheaply."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Visual:
    """The visual input of a chat, encoded once: EVA features stay cached across turns."""

    kind: str  # "none", "image", "video", "film", or "dialogue" (a film's subtitles alone: no frames yet)
    features: Any = None  # (K, rows, C) images, (T, rows, C) clip or film
    frame_times: list[float] = field(default_factory=list)
    subtitles: list[Any] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what was changed to fit (frames dropped...)
