"""``llamavid bench search``: how long a search by description takes over a library's scene vectors.

The library is synthetic but real in every other way: a library database with ``--films`` films of
``--hours-each`` hours each (default 100 films of one hour: 360,000 frames at 1 fps), each with its
scene-vector file (fp16, ``--dim`` wide, 512 as CLIP ViT-B/32's) and its rows' times, written through
the indexer's own store and file protocol. The vectors look like a film's: shots of 2 to 12 seconds,
each a random direction plus per-frame noise (neighbouring frames alike, as real ones are). For each
query (a random unit vector) one stretch of one film is planted with vectors close to it (cosine
about 0.3, as a good caption scores with CLIP), and the search must find it first: a check that the
search returns the right thing, not only that it is fast.

Timed: :func:`indexer.scenes_search.search_vectors`, the code behind every front end's scene search,
after the text is embedded (the text side is timed apart by ``llamavid bench scenes``), with the
library file already mapped by the process (a front end keeps one :class:`SceneIndex`); once cold
(the first query of a process: the file opened, its pages in the page cache); and the very first
query after the library changed, which builds the library file from the films' files.

    llamavid bench search                       # 100 film hours; ~1.4 GB written once to --work
    llamavid bench search --films 10 --queries 20   # a quick look

One JSON line: frames, dim, the films' bytes, ms per query (median, p95, min, cold, first build),
threads, and how many queries found their planted stretch first.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from indexer.features import FeatureWriter
from indexer.scenes_search import SceneIndex, library_folder, search_vectors
from indexer.store import LibraryStore

MODEL_ID = "clip:synthetic"
PLANT_COSINE = 0.3


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def film_vectors(frames: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    """(frames, dim) unit rows in shots of 2 to 12 s: a direction per shot plus per-frame noise."""
    out = np.empty((frames, dim), np.float32)
    i = 0
    while i < frames:
        n = int(rng.integers(2, 13))
        shot = _unit(rng.standard_normal(dim).astype(np.float32))
        noise = rng.standard_normal((min(n, frames - i), dim)).astype(np.float32) * (0.3 / np.sqrt(dim))
        out[i:i + n] = shot + noise
        i += n
    return _unit(out)


def planted(query: np.ndarray, rows: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    """``rows`` unit vectors with cosine about PLANT_COSINE to ``query``."""
    other = _unit(rng.standard_normal((rows, dim)).astype(np.float32))
    other -= (other @ query)[:, None] * query[None, :]
    other = _unit(other)
    return _unit(PLANT_COSINE * query[None, :] + np.sqrt(1 - PLANT_COSINE ** 2) * other)


def make_library(root: Path, films: int, hours: float, dim: int, queries: int, seed: int = 0) -> list[dict]:
    """The database and the vector files under ``root`` (made once); returns the planted truths."""
    truth_file = root / "truth.json"
    if truth_file.is_file():
        return json.loads(truth_file.read_text())
    rng = np.random.default_rng(seed)
    frames = int(hours * 3600)
    qs = _unit(rng.standard_normal((queries, dim)).astype(np.float32))
    plants = [{"query": i, "film": int(rng.integers(films)), "row": int(rng.integers(0, frames - 6))}
              for i in range(queries)]
    (root / "films").mkdir(parents=True, exist_ok=True)
    with LibraryStore.open(root / "library.db") as store:
        library = store.add_library(str(root / "films"))
        for f in range(films):
            say(f"film {f + 1}/{films}")
            path = root / "films" / f"film-{f:03d}.mkv"
            movie_id = store.add_movie({"library_id": library["id"], "path": str(path), "rel_path": path.name,
                                        "size": 0, "mtime": 0.0, "fingerprint": f"{f:016x}", "duration": hours * 3600,
                                        "features_complete": 1}, "benchmark")
            job = store.claim_next_job()
            vectors = film_vectors(frames, dim, rng)
            for p in plants:
                if p["film"] == f:
                    vectors[p["row"]:p["row"] + 5] = planted(qs[p["query"]], 5, dim, rng)
                    p["movie_id"] = movie_id
            final = root / "cache" / "features" / f"{movie_id}-{f:016x}.scenes.npy"
            writer = FeatureWriter(final, (dim,)).create(frames)
            writer.write(0, vectors.astype(np.float16))
            writer.flush()
            store.start_scenes(movie_id, {"scenes_model": MODEL_ID, "scenes_path": str(final), "scenes_chunk": frames})
            store.add_scene_frames(job["id"], movie_id, 0, [float(t) for t in range(frames)], frames)
            path_done = writer.finalize(frames)
            store.update_movie(movie_id, {"scenes_state": "done", "scenes_path": str(path_done),
                                          "scenes_done": frames, "scenes_bytes": path_done.stat().st_size})
            store.finish_job(job["id"], "done")
    np.save(root / "queries.npy", qs)
    truth_file.write_text(json.dumps(plants))
    return plants


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_bench(root: Path, films: int, hours: float, dim: int, queries: int, limit: int) -> dict:
    plants = make_library(root, films, hours, dim, queries)
    qs = np.load(root / "queries.npy")
    for old in library_folder(root).glob("library-*.npy"):  # the first query builds the library file
        old.unlink()
    with LibraryStore.open(root / "library.db") as store:
        start = time.perf_counter()
        search_vectors(store, qs[0], MODEL_ID, limit=limit, index=SceneIndex())
        build = time.perf_counter() - start
        index = SceneIndex()  # a new process: the library file is there, its pages in the page cache
        start = time.perf_counter()
        search_vectors(store, qs[0], MODEL_ID, limit=limit, index=index)
        cold = time.perf_counter() - start
        seconds, first = [], 0
        for p in plants:
            start = time.perf_counter()
            found = search_vectors(store, qs[p["query"]], MODEL_ID, limit=limit, index=index)
            seconds.append(time.perf_counter() - start)
            hit = found[0] if found else None
            first += bool(hit and hit.movie_id == p["movie_id"] and abs(hit.time - p["row"] - 2) <= 3)
        size = sum(f.stat().st_size for f in (root / "cache" / "features").glob("*.scenes.npy"))
    ms = np.asarray(seconds) * 1000
    return {"bench": "search", "films": films, "frames": int(films * hours * 3600), "dim": dim,
            "film_hours": films * hours, "bytes": size, "mb_per_film_hour": round(size / 1e6 / (films * hours), 2),
            "queries": len(seconds), "limit": limit, "ms_median": round(float(np.median(ms)), 2),
            "ms_p95": round(float(np.percentile(ms, 95)), 2), "ms_min": round(float(ms.min()), 2),
            "ms_cold": round(cold * 1000, 2), "ms_first_build": round(build * 1000, 1),
            "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "found_first": first, "load_1m": round(os.getloadavg()[0], 2)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--films", type=int, default=100, help="films in the library (default 100)")
    parser.add_argument("--hours-each", type=float, default=1.0, help="hours per film (default 1: 3,600 frames)")
    parser.add_argument("--dim", type=int, default=512, help="vector width (default 512, CLIP ViT-B/32's)")
    parser.add_argument("--queries", type=int, default=50, help="queries timed (default 50)")
    parser.add_argument("--limit", type=int, default=20, help="results per query (default 20)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2: the 2-core target)")
    parser.add_argument("--work", metavar="DIR", help="make the library here and keep it (reused when there)")


def run(args: argparse.Namespace) -> int:
    from llamavid.errors import UserError

    if args.films < 1 or args.hours_each <= 0 or args.dim < 2 or args.queries < 1 or args.limit < 1:
        raise UserError("--films, --hours-each, --dim, --queries and --limit must be positive")
    torch.set_num_threads(args.threads)
    if args.work:
        record = run_bench(Path(args.work), args.films, args.hours_each, args.dim, args.queries, args.limit)
    else:
        with tempfile.TemporaryDirectory(prefix="llamavid-search-bench-") as tmp:
            record = run_bench(Path(tmp), args.films, args.hours_each, args.dim, args.queries, args.limit)
    print(json.dumps(record), flush=True)
    return 0
