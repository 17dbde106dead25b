"""Where in the film an answer comes from: a few ranked moments taken from the index, never from
text the model writes (a model asked for timestamps makes them up).

Three kinds of evidence, put on one scale so they can be ranked together; each moment's reasons
say which it rests on (``subtitle: "..."``, ``scene: ...``, or the frames the question weighed):

* Subtitle lines that say what the question (or the answer) says, found and scored by the
  library's one subtitle search (:func:`indexer.search.search_cues`): words stemmed as the
  full-text index stems them, irregular forms joined ("hid", "hide"), stop words out, each word
  weighted by how rare it is in the film. A line scores ``1 + 4 x closeness`` (closeness 0 to 1,
  the F2 of the share of the question's words it says and the share of its words the question
  says): a line the question quotes scores 5, one it closely paraphrases 3.5 to 4.5, one that
  shares one word of the question's five about 2.
* Frames the question weighed. The Q-Former pass that made the film's visual tokens kept, per
  frame, how strongly the question's queries attended to it (``Chat.relevance``). A frame counts
  when it stands out from the film: its z-score against all frames is at least ``FRAME_Z`` (the
  ``top_frames`` best of them). Frames less than ``gap`` seconds apart merge into one moment, which
  scores ``3 - 2 x FRAME_Z / z`` for its best frame's z: 1 at the threshold, 2 at twice it, never 3.
  Attention says what the question weighed, not where the answer is said: no frame cluster alone
  outranks a line the question quotes or closely paraphrases (closeness 0.5 or more).
* Scenes: frames that look like what the question says, where the film has scene vectors
  (:mod:`indexer.scenes`): the question's text against every frame's image-text embedding
  (:func:`indexer.scenes_search.film_similarity`), this question's own evidence in every mode (the
  attention above comes from the question that read the film: a fast conversation's neutral one, a
  follow-up's first). A frame counts when it stands out from the film (z-score at least ``SCENE_Z``,
  the ``top_frames`` best) and looks like the text at all (:func:`indexer.scenes_search.scene_score`
  above 0); a run scores ``1 + 1.9 x scene_score`` of its best frame, 1 to 2.9: like a frame
  cluster, never above a quoted line.

A run of frames that overlaps a line (or lies within ``gap`` seconds of it) joins that line's
moment: the span of both, the higher score plus half the lower one (evidence that agrees counts for
more than either part alone), and both reasons. A scene run joins the same way but leaves the line's
span as it is: a scene can last a whole shot, and the line says where in it the moment is. Lines
stay apart, each its own moment, however close the next line is said: the moment of the line a
question quotes starts where that line does.
The ``k`` best are returned, best first, inside the film: a line that starts after the film's end
is dropped, one that runs past it is cut at the end.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from indexer.scenes_search import scene_score
from indexer.search import closeness
from indexer.terms import query_terms

FRAME_Z = 1.5
SCENE_Z = 1.5


@dataclass
class Moment:
    start: float
    end: float
    score: float
    why: list[str] = field(default_factory=list)
    kind: str = "frames"  # what it rests on first: "line" (a subtitle line), "frames" (attention) or "scene"

    def to_dict(self) -> dict:
        return {"start": round(self.start, 3), "end": round(self.end, 3), "score": round(self.score, 3),
                "why": list(self.why)}


@dataclass(frozen=True)
class CueHit:
    """A subtitle line found for a question; ``closeness``: its score from the subtitle search (0 to 1),
    None to score it here from its words alone (every word weighing the same)."""

    start: float
    end: float
    text: str
    closeness: float | None = None


def cue_score(closeness: float) -> float:
    """A line's moment score on the frames' scale (see the module docstring)."""
    return 1 + 4 * closeness


def frame_score(z: float) -> float:
    """A frame cluster's moment score for its best frame's z-score (see the module docstring)."""
    return 3 - 2 * FRAME_Z / z


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
    for i in picked:  # scored by z while the runs are made, then put on the moments' scale
        if moments and t[i] - moments[-1].end <= gap:
            moments[-1].end, moments[-1].score = t[i] + step, max(moments[-1].score, float(z[i]))
        else:
            moments.append(Moment(float(t[i]), float(t[i] + step), float(z[i]), kind="frames"))
    for m in moments:
        m.why.append(f"{weighed_by} weighed these frames most ({m.score:.1f} standard deviations above the film)")
        m.score = frame_score(m.score)
    return moments


def scene_moments(times: Sequence[float], cosines: Sequence[float], top_frames: int = 8,
                  gap: float | None = None) -> list[Moment]:
    """Runs of frames that look like the question, far more than the rest of the film does (see the
    module docstring); ``cosines``: each frame's with the question's text."""
    t, c = np.asarray(times, dtype=np.float64), np.asarray(cosines, dtype=np.float64)
    if len(t) < 3 or len(c) != len(t) or c.std() == 0:
        return []
    step = float(np.median(np.diff(t)))
    gap = 2 * step if gap is None else gap
    z = (c - c.mean()) / c.std()
    picked = sorted(i for i in np.argsort(-z)[:top_frames] if z[i] >= SCENE_Z and scene_score(c[i]) > 0)
    runs: list[tuple[Moment, int]] = []  # each run with its best frame
    for i in picked:
        if runs and t[i] - runs[-1][0].end <= gap:
            run, top = runs[-1]
            run.end = float(t[i] + step)
            runs[-1] = (run, i if c[i] > c[top] else top)
        else:
            runs.append((Moment(float(t[i]), float(t[i] + step), 0.0, kind="scene"), i))
    for run, top in runs:
        run.score = 1 + 1.9 * scene_score(c[top])
        run.why.append(f"scene: the picture looks like the question (similarity {c[top]:.2f}, "
                       f"{z[top]:.1f} standard deviations above the film)")
    return [run for run, _ in runs]


def cue_moments(hits: Sequence[CueHit], *texts: str) -> list[Moment]:
    """A moment per line that says something of ``texts`` (the question, the answer): scored by the
    closeness the subtitle search gave it, else by its words' closeness to the nearest text."""
    wanted = [t for t in map(query_terms, texts) if t]
    out = []
    for hit in hits:
        near = hit.closeness
        if near is None:
            said = query_terms(hit.text)
            near = max((closeness(w, said) for w in wanted), default=0.0)
        if near > 0:
            out.append(Moment(hit.start, hit.end, cue_score(near), [f'subtitle: "{hit.text}"'], "line"))
    return out


def inside(moments: Sequence[Moment], end: float | None) -> list[Moment]:
    """The moments cut to the film ``[0, end]``; one that starts at or after its end is dropped."""
    if end is None:
        return [Moment(max(0.0, m.start), m.end, m.score, list(m.why), m.kind) for m in moments]
    return [Moment(max(0.0, m.start), min(end, m.end), m.score, list(m.why), m.kind) for m in moments
            if m.start < end]


def merge(moments: Sequence[Moment], gap: float = 2.0) -> list[Moment]:
    """Frames that agree with a line join its moment (see the module docstring): each run of frames
    joins the best line it overlaps or lies within ``gap`` seconds of. Lines never merge with each
    other, so a moment is one line, however close the next one is said."""
    lines = [Moment(m.start, m.end, m.score, list(m.why), m.kind) for m in moments if m.kind == "line"]
    out = list(lines)
    for frames in (m for m in moments if m.kind != "line"):
        near = [m for m in lines if frames.start - m.end <= gap and m.start - frames.end <= gap]
        if not near:
            out.append(Moment(frames.start, frames.end, frames.score, list(frames.why), frames.kind))
            continue
        line = max(near, key=lambda m: (m.score, -abs(m.start - frames.start)))
        high, low = max(line.score, frames.score), min(line.score, frames.score)
        if frames.kind != "scene":  # a scene can last a whole shot: the line says where in it, its span stays
            line.start, line.end = min(line.start, frames.start), max(line.end, frames.end)
        line.score = high + 0.5 * low
        line.why += [w for w in frames.why if w not in line.why]
    return out


def rank_moments(frame_times: Sequence[float], relevance: Sequence[float] | None, cue_hits: Sequence[CueHit],
                 question: str, answer: str = "", duration: float | None = None, k: int = 5,
                 weighed_by: str = "the question",
                 scenes: tuple[Sequence[float], Sequence[float]] | None = None) -> list[Moment]:
    """The ``k`` best moments for a question and its answer, best first, inside the film.
    ``weighed_by`` names the question whose Q-Former pass made ``relevance`` (a film is read once,
    with its conversation's first question: a follow-up's frames were weighed by that one).
    ``scenes``: (times, cosines) of the film's scene vectors with this question's text, None where
    the film has none (the moments are then those of the other two kinds alone)."""
    end = duration if duration is not None else (max(frame_times) + 1.0 if len(frame_times) else None)
    found = inside(cue_moments(cue_hits, question, answer), end)  # a line past the end extends nothing
    if relevance is not None and len(relevance) == len(frame_times):
        found += frame_moments(frame_times, relevance, weighed_by=weighed_by)
    if scenes is not None:
        found += scene_moments(*scenes)
    return sorted(inside(merge(found), end), key=lambda m: -m.score)[:k]
