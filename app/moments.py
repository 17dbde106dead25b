"""Where in the film an answer comes from: a few ranked moments taken from the index, never from
text the model writes (a model asked for timestamps makes them up).

Two kinds of evidence, put on one scale so they can be ranked together:

* Frames the question weighed. The Q-Former pass that made the film's visual tokens kept, per
  frame, how strongly the question's queries attended to it (``Chat.relevance``). A frame counts
  when it stands out from the film: its score is a z-score against all frames, and only frames at
  least ``FRAME_Z`` standard deviations above the mean (the ``top_frames`` best of them) are used.
  Frames less than ``gap`` seconds apart merge into one moment; its score is its best frame's z.
* Subtitle cues that share words with the question or the answer, found with FTS5 (any word).
  A cue scores ``1 + 2 x coverage``, coverage being the share of the question's (or answer's)
  distinct words of three letters or more that the cue contains: a cue that says the question
  word for word scores 3, above all but exceptional frames; one shared rare word scores little.

Moments that overlap (or lie within ``gap`` seconds) merge: the span of both, the higher score
plus half the lower one (two kinds of evidence agreeing count for more than either), and both
reasons. The ``k`` best are returned, best first, clipped to the film.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

FRAME_Z = 1.5
_WORD = re.compile(r"\w{3,}", re.UNICODE)


@dataclass
class Moment:
    start: float
    end: float
    score: float
    why: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"start": round(self.start, 3), "end": round(self.end, 3), "score": round(self.score, 3),
                "why": list(self.why)}


@dataclass(frozen=True)
class CueHit:
    start: float
    end: float
    text: str


def words(text: str) -> set[str]:
    return {w.lower() for w in _WORD.findall(text)}


def frame_moments(times: Sequence[float], relevance: Sequence[float], top_frames: int = 8,
                  gap: float | None = None, weighed_by: str = "the question") -> list[Moment]:
    """Runs of frames the question weighed far above the film's average (see the module docstring)."""
    t, r = np.asarray(times, dtype=np.float64), np.asarray(relevance, dtype=np.float64)
    if len(t) < 3 or r.std() == 0:
        return []
    step = float(np.median(np.diff(t))) if len(t) > 1 else 1.0
    gap = 2 * step if gap is None else gap
    z = (r - r.mean()) / r.std()
    picked = sorted(i for i in np.argsort(-z)[:top_frames] if z[i] >= FRAME_Z)
    moments: list[Moment] = []
    for i in picked:
        if moments and t[i] - moments[-1].end <= gap:
            moments[-1].end, moments[-1].score = t[i] + step, max(moments[-1].score, float(z[i]))
        else:
            moments.append(Moment(float(t[i]), float(t[i] + step), float(z[i])))
    for m in moments:
        m.why.append(f"{weighed_by} weighed these frames most ({m.score:.1f} standard deviations above the film)")
    return moments


def cue_moments(hits: Sequence[CueHit], *texts: str) -> list[Moment]:
    """Cues that share words with any of ``texts`` (the question, the answer), scored by the
    largest share of one text's words they contain."""
    wanted = [w for w in map(words, texts) if w]
    out = []
    for hit in hits:
        said = words(hit.text)
        coverage = max((len(w & said) / len(w) for w in wanted), default=0.0)
        if coverage > 0:
            out.append(Moment(hit.start, hit.end, 1 + 2 * coverage, [f'subtitle: "{hit.text}"']))
    return out


def merge(moments: Sequence[Moment], gap: float = 2.0) -> list[Moment]:
    """Overlapping or close moments become one (see the module docstring)."""
    merged: list[Moment] = []
    for m in sorted(moments, key=lambda m: (m.start, m.end)):
        last = merged[-1] if merged else None
        if last is not None and m.start - last.end <= gap:
            high, low = max(last.score, m.score), min(last.score, m.score)
            last.end, last.score = max(last.end, m.end), high + 0.5 * low
            last.why += [w for w in m.why if w not in last.why]
        else:
            merged.append(Moment(m.start, m.end, m.score, list(m.why)))
    return merged


def rank_moments(frame_times: Sequence[float], relevance: Sequence[float] | None, cue_hits: Sequence[CueHit],
                 question: str, answer: str = "", duration: float | None = None, k: int = 5,
                 weighed_by: str = "the question") -> list[Moment]:
    """The ``k`` best moments for a question and its answer, best first, inside the film.
    ``weighed_by`` names the question whose Q-Former pass made ``relevance`` (a film is read once,
    with its conversation's first question: a follow-up's frames were weighed by that one)."""
    found = cue_moments(cue_hits, question, answer)
    if relevance is not None and len(relevance) == len(frame_times):
        found += frame_moments(frame_times, relevance, weighed_by=weighed_by)
    end = duration if duration is not None else (max(frame_times) + 1.0 if len(frame_times) else None)
    ranked = sorted(merge(found), key=lambda m: -m.score)[:k]
    for m in ranked:
        m.start = max(0.0, m.start)
        m.end = min(end, m.end) if end is not None else m.end
    return ranked
