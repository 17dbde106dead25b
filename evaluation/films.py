"""Long-video benchmarks read films from the indexer: cached EVA features, frame times, subtitles.

A benchmark's video file is found in the library by its path (``indexer.library.find_movie``), so the
folder of benchmark videos must be a library folder. :func:`index_videos` makes it one and runs the
indexer (what ``llamavid index add DIR && llamavid index run`` does), so one ``llamavid eval`` command
can do everything; films already indexed are not touched again.

Subtitles: a benchmark's own subtitle file (Video-MME's ``subtitle/<id>.srt``, LongVideoBench's JSON)
is read here and replaces the library's cues; without one, the cues the indexer stored are used.
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path

from indexer.library import FeaturesNotReady, Movie, choose_track, film_visual, find_movie, open_library, subtitles
from indexer.pipeline import IndexOptions
from indexer.qwen_film import film_askable, film_plan_of
from indexer.runner import run_queue
from indexer.scan import add_library, scan
from indexer.store import LibraryStore
from indexer.subtitle_sources import decode_text, parse_subtitle_text
from llamavid.errors import UserError
from llamavid.paths import DataDir
from llamavid.prompt.qwen_vl import FilmPlan
from llamavid.prompt.subtitles import Cue
from llamavid.runtime.inputs import Visual

INDEX_HINT = "index them first: `llamavid index add FOLDER && llamavid index run`, or pass --index"


class Films:
    """The library of one data folder, as a long-video runner reads it. ``pictures``: whether a film
    needs its EVA features (LLaMA-VID) or only its probe (Qwen3-VL decodes the frames it needs)."""

    def __init__(self, data_dir: Path, pictures: bool = True):
        self.data_dir = Path(data_dir)
        self.db = open_library(self.data_dir)
        self.pictures = pictures

    def movie(self, path: str | Path) -> Movie:
        """The indexed film of a benchmark video; a UserError naming the file if it is not ready."""
        try:
            movie = find_movie(self.db, str(Path(path).absolute()))
        except KeyError:
            raise UserError(f"{path}: not in the movie library; {INDEX_HINT}") from None
        if self.pictures and not movie.features_complete:
            raise UserError(f"{path}: its features are not ready (state {movie.state}); {INDEX_HINT}")
        if not self.pictures and not film_askable(movie):
            raise UserError(f"{path}: not probed yet (state {movie.state}) or its file is gone; {INDEX_HINT}")
        return movie

    def missing(self, paths: Iterable[str | Path]) -> list[str]:
        """The paths (of those given) whose films cannot be read yet."""
        out = []
        for path in dict.fromkeys(str(p) for p in paths):
            try:
                self.movie(path)
            except UserError:
                out.append(path)
        return out

    def visual(self, path: str | Path, subtitle_file: str | None = None, offset: float = 0.0) -> Visual:
        """Features (memory-mapped), frame times and subtitles of a film, ready for ``lv.prepare``."""
        movie = self.movie(path)
        try:
            visual = film_visual(self.db, movie)
        except FeaturesNotReady as exc:
            raise UserError(f"{path}: {exc}; {INDEX_HINT}") from None
        if subtitle_file:
            visual = replace(visual, subtitles=read_subtitles(Path(subtitle_file), offset))
        return visual

    def qwen_film(self, path: str | Path, subtitle_file: str | None = None,
                  offset: float = 0.0) -> tuple[Movie, FilmPlan, list[Cue]]:
        """A film as a Qwen3-VL reads it: the movie, its frame plan (the chat's budget) and its cues
        (the benchmark's own file, else the library's track, as :meth:`visual` chooses them)."""
        movie = self.movie(path)
        if subtitle_file:
            cues = read_subtitles(Path(subtitle_file), offset)
        else:
            track = choose_track(movie)
            cues = subtitles(self.db, movie, track_id=track["id"]) if track else []
        return movie, film_plan_of(movie), cues

    def duration(self, path: str | Path) -> float | None:
        """Seconds of a film, as the indexer probed it."""
        return self.movie(path).duration


def index_videos(data_dir: Path, folders: Sequence[Path], vision: str | None = None, device: str = "auto") -> str:
    """Add the benchmark's video folders to the library and index what is new (no speech recognition:
    the benchmarks bring their own subtitles). Returns the indexer's summary."""
    data = DataDir(Path(data_dir)).create()
    with LibraryStore.open(data.database) as store:
        ids = [add_library(store, folder)["id"] for folder in folders]
        scan(store, ids)
    summary = run_queue(data, IndexOptions(vision=vision, device=device, speech="never"))
    return summary.text()


_CLOCK = re.compile(r"^(\d+):(\d+):(\d+(?:[.,]\d+)?)$")


def clock_seconds(value: str | float | int) -> float:
    """Seconds of ``HH:MM:SS.mmm`` (or a number already)."""
    if isinstance(value, (int, float)):
        return float(value)
    match = _CLOCK.match(value.strip())
    if not match:
        raise ValueError(f"not a time stamp: {value!r}")
    hours, minutes, seconds = match.groups()
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds.replace(",", "."))


def read_subtitles(path: Path, offset: float = 0.0) -> list[Cue]:
    """Cues of an .srt/.ass/.vtt file, or of LongVideoBench's JSON, with ``offset`` seconds subtracted."""
    if not path.is_file():
        raise UserError(f"{path}: no such subtitle file")
    try:
        if path.suffix.lower() == ".json":
            cues = _json_cues(json.loads(path.read_text(encoding="utf-8")))
        else:
            cues = parse_subtitle_text(decode_text(path.read_bytes())[0], path.suffix.lower())
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{path}: cannot read the subtitles ({exc})") from None
    shifted = [replace(c, start_time=c.start_time - offset, end_time=c.end_time - offset) for c in cues]
    return [c for c in shifted if c.end_time > 0]


def _json_cues(rows: list) -> list[Cue]:
    """LongVideoBench's two shapes: ``{"timestamp": [start, end], "text"}`` (end may be null) and
    ``{"start": "HH:MM:SS.mmm", "end": ..., "line"}``."""
    cues = []
    for row in rows:
        if "timestamp" in row:
            start, end = row["timestamp"]
            start = float(start)
            end = float(end) if isinstance(end, (int, float)) else start + 1.0
            text = row["text"]
        else:
            start, end, text = clock_seconds(row["start"]), clock_seconds(row["end"]), row["line"]
        if str(text).strip():
            cues.append(Cue(start, end, str(text).strip()))
    return cues
