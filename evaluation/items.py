"""What a runner asks: one :class:`Item` per question, and the :class:`Source` it is about.

Items that share a source (two MME questions about one image, every question about one film) are
answered together: the input is encoded once and the Q-Former reads it once for all their prompts.
"""
from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

LETTERS = string.ascii_uppercase


@dataclass(frozen=True)
class Source:
    """The visual input of an item.

    ``kind``: ``none`` (a text-only question), ``image`` (a file, or base64 ``data``), ``video`` (a
    short clip, sampled at 1 fps) or ``film`` (a video whose EVA features the indexer has cached).
    ``subtitle_file`` is a benchmark's own subtitles of a film (Video-MME's .srt, LongVideoBench's
    JSON), used instead of the library's; ``subtitle_offset`` is subtracted from their times.
    """

    kind: str
    path: str = ""
    data: str | None = field(default=None, compare=False, repr=False)
    subtitle_file: str | None = None
    subtitle_offset: float = 0.0

    @property
    def key(self) -> str:
        """Items with the same key share one encoded input."""
        return f"{self.kind}:{self.path}"


@dataclass
class Item:
    """One question: the prompt the user turn carries (and the Q-Former reads), how it is answered,
    and what scoring needs.

    ``letters`` non-empty makes it multiple choice: the answer is the letter whose token scores
    highest at the first step. ``answer_prefix`` is text the assistant turn starts with (MLVU's
    "Best option: ("). ``subtitles`` says whether a film is shown with its subtitles.
    """

    id: str
    source: Source
    prompt: str
    letters: tuple[str, ...] = ()
    answer_prefix: str = ""
    subtitles: bool = True
    truth: Any = None
    meta: dict[str, Any] = field(default_factory=dict)


def option_lines(options: Sequence[str], style: str = "{letter}. {text}") -> str:
    """``A. first\\nB. second`` (or another ``style``) for the options in order."""
    return "\n".join(style.format(letter=LETTERS[i], text=text) for i, text in enumerate(options))


def letters_for(count: int) -> tuple[str, ...]:
    if not 1 < count <= len(LETTERS):
        raise ValueError(f"a multiple-choice question needs 2 to {len(LETTERS)} options, got {count}")
    return tuple(LETTERS[:count])
