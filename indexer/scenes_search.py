"""Search by what is seen, and the library's one search over what is said and what is seen.

A text ("the scene on the beach at night") is embedded by the scene model's text side
(:mod:`indexer.scene_model`) and compared with the scene vectors of every film made by that model
(:mod:`indexer.scenes`): one matrix product over the library's memory-mapped fp16 rows, kept back to
back in the library file (:class:`SceneIndex`), or over one film's own file. torch's CPU
half-precision product reads the stored rows as they are; numpy has no fast fp16 product, and a
float32 copy would double the bytes read. 100 film hours, 360,000 rows of 512, take 34 to 45 ms a
query on 2 cores busy with other work (``llamavid bench search``; docs/indexer.md).

A row's cosine with the text is put on the dialogue search's 0-to-1 scale by :func:`scene_score`
(CLIP ViT-B/32's range: a picture and an unrelated text score about 0.15 to 0.2, a good caption 0.3
to 0.35). Frames of one shot look alike, so the library's results are peaks: the best frame of a
stretch, the frames within ``PEAK_GAP`` seconds of it that score almost as well (``RUN_DROP``) make
its span, and no second result comes from that stretch.

:func:`search_library` is the one rule every front end calls (``llamavid index search``, ``GET
/v1/search``, the MCP ``search`` tool, the web UI, the desktop): ``kind`` ``quote`` (the subtitle lines
closest to the text, :func:`indexer.search.search_cues`), ``scene`` (the frames that look most like
it) or ``all`` (both, by score; scenes scoring 0 are left out there). Without an installed scene
model, or films with its vectors, a scene search finds nothing and says so through
:class:`ScenesUnavailable`'s message.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import sqlite_utils
import torch

from indexer.db import db_path
from indexer.scene_model import DEFAULT_SCENE_MODEL, installed_scene_model, scene_model_id, text_encoder
from indexer.scenes import PULL_HINT, open_scenes
from indexer.search import MAX_LIMIT, CueMatch, search_cues
from indexer.store import LibraryStore
from llamavid.errors import UserError

log = logging.getLogger(__name__)
KINDS = ("quote", "scene", "all")
COS_FLOOR, COS_FULL = 0.15, 0.35  # a scene's cosine scoring 0 and 1 (see the module docstring)
PEAK_GAP = 8.0  # seconds around a result's best frame that give no other result
RUN_DROP = 0.02  # a frame within PEAK_GAP joins the result's span while its cosine is this close to the best
CANDIDATES = 10  # rows per result looked at first, best first (four times more while peaks are missing)


def scene_score(cosine: float) -> float:
    """A scene's closeness to the text on the dialogue search's 0-to-1 scale (see the module docstring)."""
    return float(min(1.0, max(0.0, (cosine - COS_FLOOR) / (COS_FULL - COS_FLOOR))))


@dataclass(frozen=True)
class SceneMatch:
    """One stretch of a film that looks like a text: its best frame's time, and the span around it."""

    movie_id: int
    path: str        # the film's file (absolute)
    rel_path: str    # the film's path relative to its library folder
    start: float
    end: float
    time: float      # the best frame
    similarity: float  # its cosine with the text
    score: float     # scene_score(similarity), 0 to 1
    kind: str = "scene"
    text: str = ""   # no line is said: the front ends show the kind instead

    def to_dict(self) -> dict:
        """The script-facing shape (``index search --json``, ``GET /v1/search``): no absolute path."""
        return {"kind": self.kind, "movie_id": self.movie_id, "path": self.rel_path, "start": round(self.start, 3),
                "end": round(self.end, 3), "time": round(self.time, 3), "text": None,
                "score": round(self.score, 4), "similarity": round(self.similarity, 4)}

    def describe(self) -> str:
        """One line for a person: the film, the time and what was found."""
        return f"{self.rel_path}  {_clock(self.start)}-{_clock(self.end)}  [scene, similarity {self.similarity:.2f}]"


def _clock(seconds: float) -> str:
    s = max(0, int(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class ScenesUnavailable(LookupError):
    """A scene search that cannot be made here; the message says what to do."""

    kind = "scenes_unavailable"


@dataclass(frozen=True)
class Library:
    """Every film's scene vectors of one model in one memory-mapped matrix (the library file), with
    the time of each row and where each film's rows start."""

    films: list[dict]        # scene_films rows, in matrix order
    offsets: np.ndarray      # films[i] holds rows offsets[i]:offsets[i + 1]
    rows: np.ndarray         # (frames, width) fp16, memory-mapped
    times: np.ndarray        # (frames,) seconds, in memory (8 bytes a row)


def library_folder(data_root: Path) -> Path:
    return Path(data_root) / "cache" / "scenes"


class SceneIndex:
    """The scene vectors a process searches, memory-mapped once and kept while they are unchanged (a
    front end keeps one; the search then costs its matrix product, not opening 100 files).

    The whole library is searched as one matrix: ``<data>/cache/scenes/library-<key>.npy`` holds the
    rows of every film of a model back to back (``.times.npy`` their times), ``<key>`` a digest of
    the films and their files, so a film added, re-indexed or removed makes a new one (built by the
    first search that needs it, written aside and renamed: a second process reads a whole file or
    builds its own; older ones are deleted). One product over one map is one parallel region: 100
    products over 100 files cost 4 to 5 times as much on 2 busy cores, waiting for each other."""

    def __init__(self) -> None:
        self._maps: dict[str, tuple[tuple[int, int], np.ndarray]] = {}
        self._library: tuple[str, Library] | None = None
        self._lock = threading.Lock()

    def rows(self, path: str) -> np.ndarray:
        """One film's vectors (its own file)."""
        st = os.stat(path)
        key = (st.st_size, st.st_mtime_ns)
        with self._lock:
            kept = self._maps.get(path)
            if kept is None or kept[0] != key:
                kept = (key, open_scenes(path))
                self._maps[path] = kept
            return kept[1]

    def library(self, store: LibraryStore, model_id: str, data_root: Path) -> Library | None:
        """The library file of ``model_id``'s films (made if needed); None when no film has vectors."""
        films, stats = [], []
        for film in store.scene_films(model_id):  # a file deleted by hand is left out (`index retry` remakes it)
            try:
                stats.append(os.stat(film["scenes_path"]))
                films.append(film)
            except OSError:
                continue
        if not films:
            return None
        signature = json.dumps([model_id, [[f["id"], f["scenes_done"], s.st_size, s.st_mtime_ns]
                                           for f, s in zip(films, stats, strict=True)]])
        key = hashlib.blake2b(signature.encode(), digest_size=8).hexdigest()
        with self._lock:
            if self._library is not None and self._library[0] == key:
                return self._library[1]
            folder = library_folder(data_root)
            matrix, times = folder / f"library-{key}.npy", folder / f"library-{key}.times.npy"
            if not (matrix.is_file() and times.is_file()):
                self._build(store, films, folder, key)
            offsets = np.concatenate([[0], np.cumsum([f["scenes_done"] for f in films])]).astype(np.int64)
            built = Library(films, offsets, np.load(matrix, mmap_mode="r"), np.load(times))
            self._library = (key, built)
            return built

    def _build(self, store: LibraryStore, films: list[dict], folder: Path, key: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        total = sum(f["scenes_done"] for f in films)
        width = open_scenes(films[0]["scenes_path"]).shape[1]
        stage = folder / f".library-{key}-{os.getpid()}-{threading.get_ident()}"
        matrix = np.lib.format.open_memmap(f"{stage}.npy", mode="w+", dtype=np.float16, shape=(total, width))
        times = np.empty(total, np.float64)
        at = 0
        for film in films:
            n = film["scenes_done"]
            matrix[at:at + n] = open_scenes(film["scenes_path"])[:n]
            times[at:at + n] = np.asarray(store.scene_times(film["id"])[:n], np.float64)
            at += n
        matrix.flush()
        del matrix
        np.save(f"{stage}.times.npy", times)
        os.replace(f"{stage}.times.npy", folder / f"library-{key}.times.npy")
        os.replace(f"{stage}.npy", folder / f"library-{key}.npy")
        for old in folder.glob("library-*.npy"):
            if not old.name.startswith(f"library-{key}"):
                old.unlink(missing_ok=True)


def similarities(rows: np.ndarray, query: np.ndarray) -> torch.Tensor:
    """Cosine of every row with the unit vector ``query``: one fp16 product over the map (fp16 out;
    torch accumulates in float32, within 1e-4 of a float32 product)."""
    with warnings.catch_warnings():  # the map is read-only and torch only reads it
        warnings.simplefilter("ignore", UserWarning)
        matrix = torch.from_numpy(rows)
    q = torch.from_numpy(np.ascontiguousarray(query, dtype=np.float16)).view(1, -1)
    return torch.matmul(q, matrix.T).view(-1)


_DEFAULT_INDEX = SceneIndex()


def data_root_of(store: LibraryStore) -> Path:
    """The data folder of a library database (``<data>/library.db``)."""
    return Path(db_path(store.db)).parent


def scene_text(store: LibraryStore, data_root: Path | None = None, model: str = DEFAULT_SCENE_MODEL):
    """(the scene model's text side, its model id); ScenesUnavailable when it is not installed."""
    folder = installed_scene_model(Path(data_root) if data_root else data_root_of(store), model)
    if folder is None:
        raise ScenesUnavailable(f"searching by description needs the scene model: {PULL_HINT}")
    return text_encoder(folder), scene_model_id(folder)


def film_similarity(store: LibraryStore, movie_id: int, text: str, data_root: Path | None = None,
                    index: SceneIndex | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """(times, cosines) of one film's frames with ``text``: the question's frame evidence in a
    chat's moments. None when the scene model is not installed or the film has no vectors of it."""
    try:
        encode, model_id = scene_text(store, data_root)
        films = store.scene_films(model_id, movie_id)
        if not films:
            return None
        query = encode([text])[0]
    except ScenesUnavailable:
        return None
    except (UserError, OSError, RuntimeError, ValueError) as exc:  # a damaged model: the answer goes on without
        log.warning("no scene evidence: the scene model could not be used (%s)", exc)
        return None
    try:
        rows = (index or _DEFAULT_INDEX).rows(films[0]["scenes_path"])
    except (OSError, ValueError):  # the file is gone or damaged: the moments do without it
        return None
    sims = similarities(rows, query).float().numpy()
    times = np.asarray(store.scene_times(movie_id), dtype=np.float64)
    n = min(len(times), len(sims))
    return times[:n], sims[:n]


def search_vectors(store: LibraryStore, query: np.ndarray, model_id: str, movie_id: int | None = None,
                   limit: int = 20, index: SceneIndex | None = None,
                   data_root: Path | None = None) -> list[SceneMatch]:
    """The ``limit`` stretches of film that look most like the unit vector ``query``, best first, in
    the whole library (one product over the library file) or one film (see the module docstring)."""
    index = index or _DEFAULT_INDEX
    if limit < 1:
        return []
    if movie_id is not None:
        films = store.scene_films(model_id, movie_id)
        if not films:
            return []
        try:
            rows = index.rows(films[0]["scenes_path"])
        except (OSError, ValueError):
            return []
        lib = Library(films, np.array([0, len(rows)]), rows, np.asarray(store.scene_times(movie_id), np.float64))
    else:
        lib = index.library(store, model_id, Path(data_root) if data_root else data_root_of(store))
        if lib is None:
            return []
    product = similarities(lib.rows, query)[:len(lib.times)]
    sims = product.numpy()  # fp16, the product's own memory
    picked: dict[int, list[float]] = {}  # film -> the times of its peaks so far
    found: list[SceneMatch] = []
    seen, k = 0, min(len(sims), CANDIDATES * limit)
    while True:  # the best rows, more of them while peaks are missing (rows of one shot give one peak)
        best = torch.topk(product, k).indices.numpy()[seen:]
        owners = np.searchsorted(lib.offsets, best, side="right") - 1
        for i, f in zip(best.tolist(), owners.tolist(), strict=True):
            at = float(lib.times[i])
            if any(abs(at - t) < PEAK_GAP for t in picked.get(f, ())):
                continue
            picked.setdefault(f, []).append(at)
            found.append(_match(lib, f, sims, i))
            if len(found) == limit:
                return found
        if k == len(sims):
            return found
        seen, k = k, min(len(sims), 4 * k)


def _match(lib: Library, f: int, sims: np.ndarray, i: int) -> SceneMatch:
    """The result of a peak (row ``i`` of film ``f``): its span, the film's rows next to it within
    PEAK_GAP seconds that score almost as well."""
    low, high = int(lib.offsets[f]), int(lib.offsets[f + 1])
    best, at = float(sims[i]), float(lib.times[i])

    def joins(j: int) -> bool:
        return low <= j < high and float(sims[j]) >= best - RUN_DROP and abs(float(lib.times[j]) - at) < PEAK_GAP

    first, last = i, i
    while joins(first - 1):
        first -= 1
    while joins(last + 1):
        last += 1
    film = lib.films[f]
    end = float(lib.times[last + 1]) if last + 1 < high else float(lib.times[last]) + 1.0
    if film["duration"]:
        end = min(end, float(film["duration"]))
    return SceneMatch(film["id"], film["path"], film["rel_path"], float(lib.times[first]), max(end, at), at, best,
                      scene_score(best))


def search_scenes(store: LibraryStore, text: str, movie_id: int | None = None, limit: int = 20,
                  data_root: Path | None = None, index: SceneIndex | None = None) -> list[SceneMatch]:
    """The stretches of film that look most like ``text`` (ScenesUnavailable without the scene model)."""
    if not text.strip():
        return []
    encode, model_id = scene_text(store, data_root)
    return search_vectors(store, encode([text])[0], model_id, movie_id, min(limit, MAX_LIMIT), index, data_root)


def search_library(db: sqlite_utils.Database | LibraryStore, text: str, kind: str = "all",
                   movie_id: int | None = None, limit: int = 20, data_root: Path | None = None,
                   index: SceneIndex | None = None) -> list[CueMatch | SceneMatch]:
    """The library's one search (see the module docstring): quotes, scenes, or both by score.
    ``kind="scene"`` raises ScenesUnavailable without the scene model; ``all`` then finds quotes only."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    store = db if isinstance(db, LibraryStore) else LibraryStore(db)
    quotes = search_cues(store, text, movie_id=movie_id, limit=limit) if kind != "scene" else []
    if kind == "quote":
        return list(quotes)
    try:
        scenes = search_scenes(store, text, movie_id, limit, data_root, index)
    except ScenesUnavailable:
        if kind == "scene":
            raise
        scenes = []
    if kind == "scene":
        return list(scenes)
    found: list[CueMatch | SceneMatch] = [*quotes, *(s for s in scenes if s.score > 0)]
    found.sort(key=lambda m: -m.score)  # stable: quotes first among equals
    return found[:limit]
