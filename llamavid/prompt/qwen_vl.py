"""Prompts of the second family (Qwen3-VL): an image, a clip, or a library film, as parts both backends read.

A prompt is a list of :class:`Text` and :class:`Frames` parts in the released chat format
(``<|im_start|>user ... <|im_end|>\\n<|im_start|>assistant\\n``, no system turn, as the released
Instruct template renders a conversation without one). A :class:`Frames` is one visual group: an
image, or one or two video frames that share their tokens (temporal patch 2). The transformers
backend writes each group as ``<|vision_start|>`` + its pad tokens + ``<|vision_end|>``; llama.cpp's
libmtmd adds the same two tokens around each media chunk itself and merges two adjacent
``mergeable`` frames into one group, so the parts are the one description both follow.

Video follows Qwen3-VL's own layout (its processor's ``replace_video_token``): every pair of frames
is preceded by its time, ``<12.5 seconds>``, the mean of the pair's two times. A film adds its
dialogue: each subtitle cue goes after the pair shown when the cue ends (the last pair that starts
before the cue's end, the rule LLaMA-VID's movie prompt uses per frame), one line per cue.

The film's budget (:func:`plan_film`) is chosen before any frame is decoded: how many frames, at
which size, at which times (docs/second-family.md says why these numbers).
"""
from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from llamavid.model.qwen_vl import QWEN3_VL, VisionGeometry, fit_grid
from llamavid.prompt.builders import MOVIE_INTRO, MOVIE_OUTRO
from llamavid.prompt.subtitles import _subtitle_fields, assign_subtitle_frames

__all__ = ["FilmBudget", "FilmPlan", "Frames", "QwenPrompt", "Text", "clean", "clip_prompt", "film_prompt",
           "cues_per_pair", "follow_up", "image_prompt", "pair_frames", "plan_film", "time_marker"]

USER = "<|im_start|>user\n"
END_USER = "<|im_end|>\n<|im_start|>assistant\n"
#: Control tokens a person's text may not open (``<|im_end|>``, ``<|vision_start|>`` ...), and
#: libmtmd's media marker.
_CONTROL = re.compile(r"<\|[A-Za-z_]+\|>|<__media__>")


def clean(text: str) -> str:
    """A question, answer or subtitle with the chat's control tokens removed: typed or found in a
    subtitle, they would end a turn or open a visual slot with nothing behind it."""
    return _CONTROL.sub("", text)


def time_marker(seconds: float) -> str:
    """Qwen3-VL's time marker, as its processor writes it."""
    return f"<{seconds:.1f} seconds>"


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True, eq=False)
class Frames:
    """One visual group: an image (``video=False``, one frame) or 1-2 video frames of one size."""

    frames: tuple[np.ndarray, ...]
    video: bool = True

    def __post_init__(self):
        if not self.frames or len(self.frames) > 2 or (not self.video and len(self.frames) != 1):
            raise ValueError("a group is one image, or one or two video frames")
        shape = np.asarray(self.frames[0]).shape
        if any(np.asarray(f).shape != shape for f in self.frames):
            raise ValueError("the frames of a group must have one size")

    @property
    def size(self) -> tuple[int, int]:
        h, w = np.asarray(self.frames[0]).shape[:2]
        return w, h

    def tokens(self, geometry: VisionGeometry = QWEN3_VL) -> int:
        return geometry.tokens(*self.size)


Part = Text | Frames


@dataclass
class QwenPrompt:
    parts: list[Part] = field(default_factory=list)

    def merged(self) -> list[Part]:
        """The parts with adjacent texts joined (both backends tokenize each text run whole)."""
        out: list[Part] = []
        for part in self.parts:
            if isinstance(part, Text) and out and isinstance(out[-1], Text):
                out[-1] = Text(out[-1].text + part.text)
            elif not (isinstance(part, Text) and not part.text):
                out.append(part)
        return out

    @property
    def groups(self) -> list[Frames]:
        return [p for p in self.parts if isinstance(p, Frames)]

    def visual_tokens(self, geometry: VisionGeometry = QWEN3_VL) -> int:
        return sum(g.tokens(geometry) for g in self.groups)

    def text(self) -> str:
        """The prompt as the transformers backend spells it, a visual group as one ``<|video_pad|>``
        or ``<|image_pad|>`` between ``<|vision_start|>`` and ``<|vision_end|>`` (the form the chat
        template writes before the processor expands it)."""
        return "".join(p.text if isinstance(p, Text) else
                       "<|vision_start|>" + ("<|video_pad|>" if p.video else "<|image_pad|>") + "<|vision_end|>"
                       for p in self.parts)

    def __add__(self, other: QwenPrompt) -> QwenPrompt:
        return QwenPrompt(self.parts + other.parts)


def _turn(parts: list[Part], question: str) -> QwenPrompt:
    return QwenPrompt([Text(USER), *parts, Text(clean(question) + END_USER)])


def follow_up(question: str, answer_closed: bool = True) -> QwenPrompt:
    """The next question's turn, read after the last answer's tokens (the cache holds them). An
    answer cut short before its ``<|im_end|>`` (``answer_closed=False``) is closed first."""
    return QwenPrompt([Text(("" if answer_closed else "<|im_end|>") + "\n" + USER + clean(question) + END_USER)])


def image_prompt(question: str, image: np.ndarray) -> QwenPrompt:
    """One image, then the question (the released template's order: media first)."""
    return _turn([Frames((np.asarray(image),), video=False)], question)


def pair_frames(frames: Sequence[np.ndarray], times: Sequence[float]) -> list[tuple[float, Frames]]:
    """Frames in pairs, each with its marker time (the mean of its two frames' times); an odd last
    frame stands alone (transformers repeats it, llama.cpp encodes it as a one-frame group: the same
    pixels, and the same time)."""
    if len(frames) != len(times):
        raise ValueError(f"{len(frames)} frames but {len(times)} times")
    out = []
    for i in range(0, len(frames), 2):
        pair = tuple(np.asarray(f) for f in frames[i:i + 2])
        t = [float(x) for x in times[i:i + 2]]
        out.append(((t[0] + t[-1]) / 2, Frames(pair, video=True)))
    return out


def _video_parts(frames: Sequence[np.ndarray], times: Sequence[float],
                 cues_per_group: list[list[str]] | None = None) -> list[Part]:
    parts: list[Part] = []
    for i, (t, group) in enumerate(pair_frames(frames, times)):
        parts += [Text(time_marker(t)), group]
        if cues_per_group and cues_per_group[i]:
            parts.append(Text("".join("\n" + c for c in cues_per_group[i]) + "\n"))
    return parts


def clip_prompt(question: str, frames: Sequence[np.ndarray], times: Sequence[float]) -> QwenPrompt:
    """A short video: its frames in timed pairs, then the question."""
    return _turn(_video_parts(frames, times), question)


@dataclass(frozen=True)
class FilmBudget:
    """How much of a film the prompt holds.

    ``visual_tokens``: the film's share of the context (default 16,384). ``tokens_per_pair``: the
    tokens one pair of frames may spend (default 64, 32 per frame: a 16:9 frame at 320x192).
    ``max_frames``: Qwen3-VL's video processor's own cap (768). ``max_fps``: its sampling rate (2),
    the most a short film gets."""

    visual_tokens: int = 16_384
    tokens_per_pair: int = 64
    max_frames: int = 768
    max_fps: float = 2.0


@dataclass(frozen=True)
class FilmPlan:
    times: tuple[float, ...]  # seconds of each frame to read
    size: tuple[int, int]  # (width, height) every frame is resized to
    tokens_per_pair: int  # what one pair really spends at that size

    @property
    def pairs(self) -> int:
        return math.ceil(len(self.times) / 2)

    @property
    def visual_tokens(self) -> int:
        return self.pairs * self.tokens_per_pair


def plan_film(duration: float, width: int, height: int, budget: FilmBudget = FilmBudget(),
              geometry: VisionGeometry = QWEN3_VL) -> FilmPlan:
    """Which frames of a ``duration``-second ``width x height`` film the prompt shows, and at which size:
    as many pairs as the budget pays for at ``tokens_per_pair`` (within ``max_frames`` and
    ``max_fps``), spread evenly, each frame at the middle of its slice of the film."""
    if duration <= 0:
        raise ValueError(f"a film lasts more than 0 s, got {duration}")
    size = fit_grid(width, height, budget.tokens_per_pair, geometry)
    per_pair = geometry.tokens(*size)
    n = min(budget.max_frames, 2 * (budget.visual_tokens // per_pair), max(2, int(duration * budget.max_fps)))
    n -= n % 2
    if n < 2:
        raise ValueError(f"a budget of {budget.visual_tokens} tokens does not hold one pair of {per_pair}")
    step = duration / n
    return FilmPlan(times=tuple(round((i + 0.5) * step, 3) for i in range(n)), size=size, tokens_per_pair=per_pair)


def cues_per_pair(times: Sequence[float], cues: Sequence[Any]) -> list[list[str]]:
    """Subtitle texts per pair of frames: a cue goes to the last pair that starts before it ends."""
    starts = [float(t) for t in times[::2]]
    per_pair: list[list[str]] = [[] for _ in starts]
    if not starts:
        return per_pair
    ordered = sorted(cues, key=lambda c: _subtitle_fields(c)[0])
    for pair, cue in zip(assign_subtitle_frames(starts, ordered, reference_quirk=False), ordered, strict=True):
        text = clean(_subtitle_fields(cue)[1]).strip()
        if text:
            per_pair[pair].append(text)
    return per_pair


def film_prompt(question: str, frames: Sequence[np.ndarray], times: Sequence[float], cues: Sequence[Any] = (),
                ) -> QwenPrompt:
    """A library film: the movie introduction, its frames in timed pairs with the subtitle cues of
    each pair after it, the end of the movie, then the question."""
    per_pair = cues_per_pair(times, cues)
    return _turn([Text(MOVIE_INTRO + "\n"), *_video_parts(frames, times, per_pair), Text("\n" + MOVIE_OUTRO + "\n")],
                 question)
