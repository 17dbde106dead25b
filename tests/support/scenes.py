"""Scene vectors for tests: the tiny CLIP installed as the catalogue's scene model, films given scene
vectors through the indexer's own store and file protocol, and a description planted in a film.

The tiny model's weights are random, so the pictures of a generated film never look like any text to
it; a test that needs a stretch of film to look like a description writes that description's own
text vector (from the tiny model's text side) into the film's rows there, as a real model's image
side would give for a matching picture. Everything else (files, times, search, moments) is real."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from indexer.features import FeatureWriter
from indexer.scene_model import DEFAULT_SCENE_MODEL, scene_model_id, text_encoder, write_tiny_scene_model
from indexer.store import LibraryStore


def install_tiny_scene_model(data_dir: Path) -> Path:
    """The tiny CLIP in ``<data>/models/clip-vit-b-32``, as ``llamavid models pull`` would leave the real one."""
    return write_tiny_scene_model(Path(data_dir) / "models" / DEFAULT_SCENE_MODEL)


def text_vector(model: Path, text: str) -> np.ndarray:
    """The model's unit vector for ``text``."""
    return text_encoder(model)([text])[0]


def plant(store: LibraryStore, movie_id: int, seconds: tuple[float, float], vector: np.ndarray) -> list[int]:
    """Make the film's frames within ``seconds`` look exactly like ``vector`` (its scene file rewritten in
    place, as a re-index would); returns the rows changed."""
    row = store.movie(movie_id)
    times = store.scene_times(movie_id)
    rows = [i for i, t in enumerate(times) if seconds[0] <= t < seconds[1]]
    vectors = np.load(row["scenes_path"], mmap_mode="r+")
    vectors[rows] = vector.astype(np.float16)
    vectors.flush()
    del vectors
    return rows


def add_scene_film(store: LibraryStore, data_root: Path, model: Path, name: str, vectors: np.ndarray,
                   library: str = "/films") -> int:
    """A film of ``len(vectors)`` seconds (one frame a second) whose scene vectors are ``vectors``, made by
    ``model``, written as the scene stage writes them; returns its id. Its file need not exist."""
    lib = store.library(library) or store.add_library(library)
    path = f"{library}/{name}"
    movie_id = store.add_movie({"library_id": lib["id"], "path": path, "rel_path": name, "size": 0, "mtime": 0.0,
                                "fingerprint": f"{abs(hash(path)):016x}", "duration": float(len(vectors))}, "test")
    job = store.claim_next_job()
    final = Path(data_root) / "cache" / "features" / f"{movie_id}-scenes-test.scenes.npy"
    writer = FeatureWriter(final, (vectors.shape[1],)).create(len(vectors))
    writer.write(0, vectors.astype(np.float16))
    writer.flush()
    store.start_scenes(movie_id, {"scenes_model": scene_model_id(model), "scenes_path": str(final),
                                  "scenes_chunk": len(vectors)})
    store.add_scene_frames(job["id"], movie_id, 0, [float(t) for t in range(len(vectors))], len(vectors))
    done = writer.finalize(len(vectors))
    store.update_movie(movie_id, {"scenes_state": "done", "scenes_path": str(done), "scenes_done": len(vectors),
                                  "scenes_bytes": done.stat().st_size})
    store.finish_job(job["id"], "done")
    return movie_id


def noise(frames: int, dim: int, seed: int = 0) -> np.ndarray:
    """Unit rows in random directions: pictures that look like nothing in particular."""
    x = np.random.default_rng(seed).standard_normal((frames, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def unlike(vectors: np.ndarray, vector: np.ndarray) -> np.ndarray:
    """``vectors`` with their component along the unit ``vector`` taken out (cosine 0 with it)."""
    out = vectors - (vectors @ vector)[:, None] * vector[None, :]
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def alike(vector: np.ndarray, cosine: float, seed: int = 0) -> np.ndarray:
    """A unit vector whose cosine with the unit ``vector`` is ``cosine``."""
    other = unlike(noise(1, len(vector), seed), vector)[0]
    return cosine * vector + np.sqrt(1 - cosine ** 2) * other
