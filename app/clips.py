"""A moment of a library film as a clip a person keeps: the video of the moment's span with a margin
each side, and its subtitle lines beside it as a ``.srt`` whose times count from the clip's start.

Every front end exports through :func:`export_moment` (``llamavid index clip`` and ``index search
--clip``, the server's ``GET /v1/movies/{id}/clip``, the desktop's Save clip), so the rules are the
same everywhere: only a film :func:`indexer.library.film_file` allows (probed as a video, inside a
library folder) is cut; the span is the moment's plus ``MARGIN`` seconds each side, kept inside the
film; a clip is at most :data:`llamavid.media.clip.MAX_CLIP_SECONDS` long; the cut itself (copy from
a keyframe, else re-encode only the span, never the film in memory, written atomically) is
:func:`llamavid.media.clip.cut`. The lines come from the subtitle track a chat about the film reads
(:func:`indexer.library.choose_track`), or the track a search hit was found in.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pysubs2

from indexer.library import LibraryDb, Movie, choose_track, film_file, subtitles
from llamavid.errors import UserError
from llamavid.media.clip import Clip, Progress, StopCheck, clip_span, cut
from llamavid.storage import atomic_write

#: Seconds of film kept before and after a moment: a line is heard whole, with what leads to it.
MARGIN = 2.0
#: How much earlier than the margin a clip may start when a keyframe lies there: such a clip is
#: copied as it is (fast, no quality lost) instead of encoded again.
SNAP_BACK = 1.0


@dataclass(frozen=True)
class MomentClip:
    """A clip written for a moment: the video (:class:`~llamavid.media.clip.Clip`), its ``.srt``
    (None when the film has no subtitle lines in the span) and how many lines that holds."""

    clip: Clip
    subtitles: Path | None
    lines: int


class NotServable(UserError):
    """The film's file may not be read for a clip (not probed as a video, not inside a library folder,
    or gone): the same rule as the server's film route."""

    kind = "not_found"


def movie_file(db: LibraryDb, movie: Movie) -> Path:
    """The film's file, only where :func:`indexer.library.film_file` allows reading it."""
    path = film_file(db, movie)
    if path is None:
        raise NotServable(f"{movie.rel_path}: no clip can be cut from it: its file is missing, moved out of the "
                          "library's folders, or not yet probed as a video (`llamavid index status` says which)")
    return path


def clip_name(movie: Movie, start: float, suffix: str = ".mp4") -> str:
    """A file name for a clip: the film's name and the moment's time ("Harbor 0-01-05.mp4")."""
    s = max(0, int(start))
    return f"{Path(movie.rel_path).stem} {s // 3600}-{s % 3600 // 60:02d}-{s % 60:02d}{suffix}"


def export_moment(db: LibraryDb, movie: Movie, start: float, end: float, dst: str | Path, *,
                  margin: float = MARGIN, snap_back: float = SNAP_BACK, track_id: int | None = None,
                  language: str | None = None, write_subtitles: bool = True,
                  progress: Progress | None = None, stop: StopCheck | None = None) -> MomentClip:
    """Cut the moment ``[start, end]`` of ``movie`` (film seconds) into ``dst``, with ``margin``
    seconds each side (inside the film), and its lines into ``dst`` with the suffix ``.srt``
    (``track_id``: that subtitle track, else the one a chat reads, in ``language`` if it has one).
    ``progress`` and ``stop``: see :func:`llamavid.media.clip.cut`."""
    dst = Path(dst)
    src = movie_file(db, movie)
    low, high = clip_span(start, end, movie.duration, margin)
    clip = cut(src, dst, low, high, snap_back=snap_back, progress=progress, stop=stop)
    if not write_subtitles:
        return MomentClip(clip, None, 0)
    lines = clip_lines(db, movie, clip.start, clip.end, track_id, language)
    sidecar = dst.with_suffix(".srt")
    if not lines:
        return MomentClip(clip, None, 0)
    with atomic_write(sidecar, "w", encoding="utf-8") as fh:
        fh.write(srt_text(lines))
    return MomentClip(clip, sidecar, len(lines))


def clip_lines(db: LibraryDb, movie: Movie, start: float, end: float, track_id: int | None = None,
               language: str | None = None) -> list[tuple[float, float, str]]:
    """The subtitle lines said within the film's ``[start, end]``, as (start, end, text) in seconds
    from ``start`` (a line that runs over either edge is cut at it)."""
    try:
        track = choose_track(movie, language, track_id)
    except KeyError as exc:
        raise UserError(exc.args[0]) from None
    if track is None:
        return []
    return [(max(0.0, c.start_time - start), min(end, c.end_time) - start, c.text)
            for c in subtitles(db, movie, track_id=track["id"]) if c.end_time > start and c.start_time < end]


def srt_text(lines: list[tuple[float, float, str]]) -> str:
    """SubRip text of (start, end, text) lines (seconds), written by pysubs2."""
    subs = pysubs2.SSAFile()
    for a, b, text in lines:
        subs.append(pysubs2.SSAEvent(start=round(a * 1000), end=round(b * 1000), text=text.replace("\n", r"\N")))
    return subs.to_string("srt")
