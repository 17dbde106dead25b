"""Subtitles of a film placed on its frames, as the long-video model reads them (spec 8.2).

Each cue goes to the last frame shown before the cue ends; the frame's ``<image>`` is followed by
its cues' text. :class:`Cue` is the one subtitle type of the project: the indexer stores cues
(``source`` says where they came from), the chat passes them here.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from llamavid.model.layout import IMAGE_TOKEN
from llamavid.prompt.builders import strip_placeholders


@dataclass
class Cue:
    """One subtitle: seconds from the start of the film, its text, language and origin."""

    start_time: float
    end_time: float
    text: str
    language: str | None = None
    source: str = ""  # embedded | sidecar | asr


def _subtitle_fields(sub: Any) -> tuple[float, str]:
    """(end_time, text) of a dict, an object with attributes, or a (start, end, text) tuple."""
    try:
        if isinstance(sub, Mapping):
            return float(sub["end_time"]), str(sub["text"])
        if isinstance(sub, (tuple, list)):
            _, end, text = sub
            return float(end), str(text)
        return float(sub.end_time), str(sub.text)
    except (KeyError, AttributeError, ValueError, TypeError) as exc:
        raise ValueError("a subtitle needs start_time, end_time (seconds) and text; "
                         f"got {sub!r}") from exc


def subtitle_text(sub: Any) -> str:
    """The text of a subtitle given in any of the forms :func:`assign_subtitles` takes."""
    return _subtitle_fields(sub)[1]


def _subtitle_list(subtitles: Any) -> list[Any]:
    """Subtitles as a list; JSON text (as stored in golden ``inputs.npz``) is parsed."""
    if isinstance(subtitles, np.ndarray) and subtitles.ndim == 0:
        subtitles = subtitles.item()
    if isinstance(subtitles, (str, bytes)):
        subtitles = json.loads(subtitles)
    return list(subtitles)


def assign_subtitle_frames(frame_times: Iterable[float], subtitles: Any, *,
                           reference_quirk: bool = True) -> list[int]:
    """Frame index of each subtitle: the last frame starting before the subtitle ends (spec 8.2).

    A monotone pointer walks the frames while ``frame_time < end_time``; subtitles are taken in
    the given order (not sorted), like the reference. A subtitle that ends at or before the first
    frame has no such frame: with ``reference_quirk=True`` (default, for parity with features made by
    the reference) it goes to the *last* frame (index -1 in the reference), otherwise to frame 0.
    """
    times = [float(t) for t in np.asarray(frame_times, dtype=np.float64).reshape(-1)]
    subs = _subtitle_list(subtitles)
    if subs and not times:
        raise ValueError("cannot assign subtitles to a video with no frames")
    before_first = len(times) - 1 if reference_quirk else 0
    frames, p = [], 0
    for sub in subs:
        end, _ = _subtitle_fields(sub)
        while p < len(times) and times[p] < end:
            p += 1
        frames.append(p - 1 if p > 0 else before_first)
    return frames


def assign_subtitles(frame_times: Iterable[float], subtitles: Any, *,
                     reference_quirk: bool = True) -> list[list[str]]:
    """Subtitle texts per frame, in subtitle order (see ``assign_subtitle_frames``)."""
    times = np.asarray(frame_times, dtype=np.float64).reshape(-1)
    subs = _subtitle_list(subtitles)
    per_frame: list[list[str]] = [[] for _ in range(len(times))]
    frames = assign_subtitle_frames(times, subs, reference_quirk=reference_quirk)
    for frame, sub in zip(frames, subs, strict=True):
        per_frame[frame].append(strip_placeholders(_subtitle_fields(sub)[1]))
    return per_frame


def interleave_subtitles(frame_times: Iterable[float], subtitles: Any, *,
                         reference_quirk: bool = True) -> str:
    """The reference pkl's ``inputs``: per frame ``"<image>" + " ".join(texts)``, no separators."""
    per_frame = assign_subtitles(frame_times, subtitles, reference_quirk=reference_quirk)
    return "".join(IMAGE_TOKEN + " ".join(texts) for texts in per_frame)


