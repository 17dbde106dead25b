"""Read-side API for the apps (chat engine, desktop app, web UI): movies, features, times, subtitles.

Readers can use it while the indexer writes (WAL). Features are exposed only for complete caches,
as a read-only memory map of shape (T, 1 + N, C) fp16; ``frame_times`` gives the time in seconds of
each of the T rows, and ``subtitles`` the cues to interleave with them.

    db = open_library()                      # <data>/library.db ($LLAMAVID_DATA_DIR or default)
    movie = list_movies(db)[0]
    feats = open_features(movie)             # np.memmap (T, 257, 1408)
    times = frame_times(db, movie)           # np.ndarray (T,) seconds
    reused = reused_frames(db, movie)        # np.ndarray (T,) bool: features copied from a still frame before
    cues = subtitles(db, movie)              # [Cue(start_time, end_time, text, language, source)]
    lines = search_cues(db, "who hid the map")   # [CueMatch]: the lines closest to a text, best first

Every function taking ``db`` accepts the database ``open_library`` returns or a ``LibraryStore``
(store.py), which holds the queries.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import sqlite_utils

from indexer.db import connect
from indexer.features import PARTIAL_SUFFIX
from indexer.scan import is_video
from indexer.search import CueMatch, search_cues
from indexer.store import LibraryStore, prepare_choice
from llamavid.model.layout import drop_cls
from llamavid.paths import DataDir, resolve_data_dir
from llamavid.prompt.subtitles import Cue
from llamavid.runtime.inputs import Visual

__all__ = ["Movie", "Cue", "SearchHit", "FeaturesNotReady", "open_library", "list_movies", "get_movie",
           "find_movie", "film_file", "open_features", "frame_times", "subtitles", "search_subtitles", "film_visual",
           "choose_track", "search_cues", "CueMatch", "reused_frames",
           "cache_bytes"]


class FeaturesNotReady(LookupError):
    """The movie's features are not (yet) complete; the message says what state it is in."""

    kind = "not_ready"  # an error kind, as llamavid.errors.UserError's


@dataclass
class SearchHit:
    movie_id: int
    path: str
    start_time: float
    end_time: float
    text: str
    snippet: str
    source: str
    rank: float = 0.0  # FTS5 bm25: lower is a better match


@dataclass
class Movie:
    """One movie as the apps see it."""

    id: int
    path: str                       # absolute
    rel_path: str                   # relative to its library folder
    library: str
    state: str                      # new queued running paused done failed cancelled missing
    error: str | None
    warning: str | None
    stage: str | None
    progress: tuple[int, int | None]
    eta_seconds: float | None
    duration: float | None
    width: int | None
    height: int | None
    rotation: int
    fps: float | None
    frames: int
    features_complete: bool
    feature_path: str | None
    feature_shape: list[int] | None
    vision_id: str | None
    cache_bytes: int
    cue_count: int
    subtitle_sources: list[str]
    subtitle_tracks: list[dict] = field(default_factory=list)
    fingerprint: str = ""           # of the file's content (see llamavid.fingerprint)
    prepared_bytes: int = 0         # a prepared state ("fast answers") on disk; 0: none
    prepare_wanted: bool = False    # the indexer is to prepare it (the film's, its folder's or the library's choice)
    scenes_state: str | None = None  # scene vectors (indexer.scenes): None not run, done, "skipped: ...", "error: ..."
    scene_frames: int = 0           # rows of scene vectors committed
    scenes_bytes: int = 0           # their file on disk, once complete

    def to_dict(self) -> dict:
        return dict(self.__dict__)


#: What the read functions take: the database ``open_library`` returns, or a store around it.
LibraryDb = sqlite_utils.Database | LibraryStore


def open_library(data_dir: str | os.PathLike | None = None) -> sqlite_utils.Database:
    """The library database of a data folder (``--data-dir`` > $LLAMAVID_DATA_DIR > default)."""
    return connect(DataDir(resolve_data_dir(data_dir)).database)


def _store(db: LibraryDb) -> LibraryStore:
    return db if isinstance(db, LibraryStore) else LibraryStore(db)


def _eta(row: dict) -> float | None:
    if row["job_state"] not in ("running", "queued") or not row["job_rate"] or row["job_stage"] != "features":
        return None
    total = row["job_total"] or 0
    return max(0.0, (total - (row["job_done"] or 0)) / row["job_rate"])


def _movie(store: LibraryStore, row: dict) -> Movie:
    state = "missing" if row["missing"] else (row["job_state"] or "new")
    tracks = store.subtitle_tracks(row["id"])
    return Movie(
        id=row["id"], path=row["path"], rel_path=row["rel_path"], library=row["library"], state=state,
        error=row["job_error"], warning=row["warning"], stage=row["job_stage"],
        progress=(row["job_done"] or 0, row["job_total"]), eta_seconds=_eta(row),
        duration=row["duration"], width=row["width"], height=row["height"], rotation=row["rotation"],
        fps=row["fps"], frames=row["frames_done"], features_complete=bool(row["features_complete"]),
        feature_path=row["feature_path"],
        feature_shape=json.loads(row["feature_shape"]) if row["feature_shape"] else None,
        vision_id=row["vision_id"], cache_bytes=_disk_bytes(row), cue_count=row["cue_count"],
        subtitle_sources=sorted({t["source"] for t in tracks if t["cue_count"]}), subtitle_tracks=tracks,
        fingerprint=row["fingerprint"], prepared_bytes=row["prepared_bytes"] if row["prepared_path"] else 0,
        prepare_wanted=prepare_choice(row["prepare"], row["library_prepare"], row["prepare_all"]),
        scenes_state=row["scenes_state"], scene_frames=row["scenes_done"], scenes_bytes=row["scenes_bytes"])


def _disk_bytes(row: dict) -> int:
    """Bytes the movie's cache takes now: the final file, or the preallocated partial one."""
    if row["features_complete"] or not row["feature_path"]:
        return row["cache_bytes"]
    try:
        return os.stat(row["feature_path"] + PARTIAL_SUFFIX).st_size
    except OSError:
        return 0


def list_movies(db: LibraryDb) -> list[Movie]:
    """Every movie of every library, ordered by library and relative path."""
    store = _store(db)
    return [_movie(store, row) for row in store.movie_views()]


def get_movie(db: LibraryDb, movie_id: int) -> Movie:
    store = _store(db)
    row = store.movie_view(movie_id)
    if row is None:
        raise KeyError(f"no movie with id {movie_id} in the library")
    return _movie(store, row)


def find_movie(db: LibraryDb, ref: str) -> Movie:
    """A movie by id, absolute or relative path (to the cwd or to its library folder)."""
    if ref.isdigit():
        return get_movie(db, int(ref))
    store = _store(db)
    candidates = {str(Path(ref).expanduser().absolute()), os.path.realpath(ref)}
    rows = [r for r in store.movie_views() if r["path"] in candidates or r["rel_path"] == ref]
    if len(rows) != 1:
        raise KeyError(f"{ref}: {'no' if not rows else 'more than one'} movie in the library matches; "
                       "use its id or full path (`llamavid index status` lists them)")
    return _movie(store, rows[0])


def film_file(db: LibraryDb, movie: Movie) -> Path | None:
    """The film's file as a player may be given it, with links resolved; None when it may not be.

    A film's file is served only when all of these hold (the one rule for every front end that
    hands a film's bytes to someone else, the server's ``/v1/movies/{id}/video`` first):

    - the indexer's probe found a video stream in it: its width and height are known (only a
      probe that decoded a frame writes them, and a changed file is reset until probed again), so a
      file that merely has a video suffix (a TypeScript ``.ts``, a renamed document) never is;
    - it is present (not ``missing``) and was found under a video name (:func:`indexer.scan.is_video`);
    - its real path (every link resolved, ``os.path.realpath``) is a regular file strictly inside
      the real path of one of the library's folders: a link in a folder to a film in the same or
      another library folder is served, one that leads out of every folder is not, and neither is a
      stored path that a stale or edited database points elsewhere.
    """
    if movie.state == "missing" or not (movie.width and movie.height) or not is_video(Path(movie.path)):
        return None
    real = Path(os.path.realpath(movie.path))
    roots = [Path(os.path.realpath(p)) for p in _store(db).library_paths()]
    try:
        inside = any(real != root and real.is_relative_to(root) for root in roots) and real.is_file()
    except OSError:  # a folder on the way that this user may not read
        return None
    return real if inside else None


def open_features(movie: Movie) -> np.memmap:
    """Read-only memory map (T, 1 + N, C) fp16 of a complete feature cache."""
    if not movie.features_complete or not movie.feature_path:
        raise FeaturesNotReady(f"{movie.rel_path}: features are not complete (state {movie.state}, "
                               f"{movie.frames} frames stored); run `llamavid index run`")
    path = Path(movie.feature_path)
    if not path.is_file():
        raise FeaturesNotReady(f"{movie.rel_path}: the feature cache {path} is gone; "
                               "run `llamavid index retry` to rebuild it")
    return np.load(path, mmap_mode="r")


def frame_times(db: LibraryDb, movie: Movie) -> np.ndarray:
    """Seconds (from the start of the film) of each stored frame, in row order."""
    return np.array(_store(db).frame_times(movie.id), dtype=np.float64)


def reused_frames(db: LibraryDb, movie: Movie) -> np.ndarray:
    """(T,) bool, in row order: True where a frame's features are a copy of an earlier, near-identical
    frame's (a static shot, :mod:`indexer.similar`) rather than its own EVA pass. Frames indexed
    before this was recorded read as False."""
    return np.array(_store(db).reused_frames(movie.id), dtype=bool)


def subtitles(db: LibraryDb, movie: Movie, sources: list[str] | None = None,
              language: str | None = None, track_id: int | None = None) -> list[Cue]:
    """Cues of the movie in time order, optionally only some sources, one language or one track."""
    return [Cue(*row) for row in _store(db).cues(movie.id, sources, language, track_id)]


def same_language(code: str | None, wanted: str | None) -> bool:
    """Whether a track's language tag names the wanted language: tags come as written in files
    ("en", "eng", "English", "en-US"), so the first two letters are compared, case-folded."""
    return bool(code and wanted) and code.strip().lower()[:2] == wanted.strip().lower()[:2]


def choose_track(movie: Movie, language: str | None = None, track_id: int | None = None) -> dict | None:
    """The subtitle track a film prompt uses: ``track_id`` when given, else the best text track:
    in ``language`` (the user's) before others, full dialogue before forced-only tracks, plain
    before hearing-impaired, files' own subtitles before speech recognition. None: no usable track."""
    usable = [t for t in movie.subtitle_tracks if t["status"] == "ok" and t["cue_count"]]
    if track_id is not None:
        chosen = next((t for t in usable if t["id"] == track_id), None)
        if chosen is None:
            listed = ", ".join(f"{t['id']} ({t['language'] or '?'}, {t['source']})" for t in usable)
            raise KeyError(f"{movie.rel_path} has no subtitle track {track_id} with text; "
                           f"its tracks: {listed or 'none'}")
        return chosen
    order = {"sidecar": 0, "embedded": 0, "asr": 1}
    return min(usable, default=None, key=lambda t: (not same_language(t["language"], language), bool(t["forced"]),
                                                    bool(t["sdh"]), order.get(t["source"], 2), t["id"]))


def search_subtitles(db: LibraryDb, query: str, movie_id: int | None = None,
                     limit: int = 50) -> list[SearchHit]:
    """Full-text search over every cue (FTS5, best matches first); the query is taken literally."""
    rows = _store(db).search_cues(query, movie_id, limit)
    return [SearchHit(r[0], r[1], r[2], r[3], r[4], r[6], r[5], r[7]) for r in rows]


def film_visual(db: LibraryDb, movie: Movie, language: str | None = None, track_id: int | None = None) -> Visual:
    """A library film as a chat input: its features (memory-mapped, CLS dropped as the long-video
    model reads them), frame times and the cues of one subtitle track (:func:`choose_track`): two
    tracks of the same dialogue would only double the prompt."""
    track = choose_track(movie, language, track_id)
    cues = subtitles(db, movie, track_id=track["id"]) if track else []
    return Visual("film", drop_cls(open_features(movie)), frame_times(db, movie).tolist(), cues)


#: said next to every answer given from a film's dialogue alone
DIALOGUE_NOTE = "answered from the film's dialogue alone: its pictures are not indexed yet"


def askable(movie: Movie) -> bool:
    """Whether a chat can be about the film now: its frames are read, or at least its dialogue is
    (the indexer reads every film's subtitles before any film's frames), and then the answers say so."""
    return movie.features_complete or movie.cue_count > 0


def dialogue_visual(db: LibraryDb, movie: Movie, language: str | None = None, track_id: int | None = None) -> Visual:
    """A film whose frames are not read yet as a chat input: the lines of one subtitle track alone."""
    track = choose_track(movie, language, track_id)
    cues = subtitles(db, movie, track_id=track["id"]) if track else []
    if not cues:
        raise FeaturesNotReady(f"{movie.rel_path} is not indexed yet (state {movie.state}) and has no dialogue "
                               "to go by; wait for the indexer, or run `llamavid index run`")
    return Visual("dialogue", subtitles=cues, notes=[DIALOGUE_NOTE])


def cache_bytes(db: LibraryDb) -> int:
    """Total size of the complete feature caches."""
    return _store(db).cache_bytes()
