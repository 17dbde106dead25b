"""A library film as the second family (Qwen3-VL) reads it: its plan and its frames, decoded by seeking.

Nothing of the film is kept at index time for this family (docs/second-family.md says why), so a
film is askable once it is probed. The chat service (:mod:`app.qwen_live`) and ``llamavid eval``
(:mod:`evaluation.qwen_answering`) both read films through these three functions, so a benchmark
question sees exactly the frames a chat question about the same film would.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from indexer import library
from llamavid.media.seek import frames_at
from llamavid.prompt.qwen_vl import FilmBudget, FilmPlan, plan_film

__all__ = ["DEFAULT_BUDGET", "film_askable", "film_frames", "film_plan_of"]

#: The film budget of docs/second-family.md (16,384 visual tokens, 64 a pair of frames).
DEFAULT_BUDGET = FilmBudget()


def _upright_size(movie: library.Movie) -> tuple[int, int]:
    w, h = int(movie.width or 0), int(movie.height or 0)
    return (h, w) if round((movie.rotation or 0) / 90) % 2 else (w, h)


def film_askable(movie: library.Movie) -> bool:
    """Whether a Qwen model can be asked about the film now: it is probed (duration and size known)
    and its file is there. Its pictures need not be indexed: Qwen decodes the frames it needs."""
    return bool(movie.duration and movie.width and movie.height) and Path(movie.path).is_file()


def film_plan_of(movie: library.Movie, budget: FilmBudget = DEFAULT_BUDGET) -> FilmPlan:
    """The frames of a film a Qwen prompt shows (see :func:`llamavid.prompt.qwen_vl.plan_film`)."""
    if not film_askable(movie):
        raise library.FeaturesNotReady(f"{movie.rel_path} is not probed yet (state {movie.state}) or its file is "
                                       "gone; wait for the indexer (`llamavid index run`), or check the drive")
    return plan_film(float(movie.duration), *_upright_size(movie), budget)


def film_frames(movie: library.Movie, plan: FilmPlan, check: Callable[[], None] | None = None,
                progress: Callable[[int], None] | None = None) -> list[np.ndarray]:
    """The planned frames, decoded by seeking the film file one at a time (``progress(count)`` after each)."""
    frames: list[np.ndarray] = []
    for _t, image in frames_at(movie.path, plan.times, plan.size, movie.rotation or 0, check=check):
        frames.append(image)
        if progress is not None:
            progress(len(frames))
    return frames
