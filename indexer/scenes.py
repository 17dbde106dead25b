"""Scene vectors: the indexer's optional stage that stores one image-text embedding per sampled frame
(:mod:`indexer.scene_model`), so films can be searched by what is seen and every question gets frame
evidence of its own (:mod:`indexer.scenes_search`).

Optional, and never a download: the stage runs when the scene model is installed (``llamavid models
pull clip-vit-b-32``), and otherwise records why it did not (``index status`` says it once for the
library); ``--scenes never`` turns it off. Installing the model later needs no re-indexing of the
features: the next ``index run`` queues the finished films again and only this stage runs
(:func:`queue_missing_scenes`).

Storage, next to the features: ``<data>/cache/features/<id>-<fingerprint>.scenes.npy``, fp16, one
unit-length row of the model's width per sampled frame (512 for CLIP ViT-B/32: 1 KB a frame, 3.7 MB per
film hour at 1 fps), memory-mapped by readers; the time of each row is in the ``scene_frames`` table.
It is written with the features' ``.partial`` protocol (:class:`indexer.features.FeatureWriter`):
each chunk is flushed before its row count and times are committed in one transaction, so a kill,
a pause, a cancel or a film put first resumes at the last chunk. The frames are sampled and
preprocessed by the indexer's decoder exactly as for EVA (CLIP's own preprocessing).

Cost: a second decode of the film plus the model's image side (``llamavid bench scenes`` times both
next to EVA; docs/indexer.md has the figures).
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from indexer.features import FeatureWriter
from indexer.scene_model import DEFAULT_SCENE_MODEL, SceneImages, installed_scene_model, scene_model_id
from indexer.store import LibraryStore
from llamavid.errors import UserError
from llamavid.media.decode import SampleStream, next_target, video_spec
from llamavid.media.probe import ProbeInfo
from llamavid.paths import DataDir

log = logging.getLogger(__name__)
SUFFIX = ".scenes.npy"
SCENES_FAILED = "scene vectors not made"
NOT_INSTALLED = "skipped: no scene model installed"
OFF = "skipped: scene vectors off (--scenes never)"
PULL_HINT = f"`llamavid models pull {DEFAULT_SCENE_MODEL}`, then `llamavid index run`"


@dataclass
class SceneOptions:
    """Whether and how the scene stage runs; the CLI fills it from ``--scenes`` and ``--scene-model``."""

    mode: str = "auto"                  # auto: when the scene model is installed; never: off
    model: str = DEFAULT_SCENE_MODEL    # an installed or registered name, or a CLIP folder
    batch_size: int = 16                # frames per chunk (one pass of the image side)


def scenes_file(data: DataDir, movie: dict) -> Path:
    return data.features / f"{movie['id']}-{movie['fingerprint'][:16]}{SUFFIX}"


def model_folder(data: DataDir, options: SceneOptions) -> Path | None:
    """The scene model the stage would use, or None (off, or not installed)."""
    if options.mode == "never":
        return None
    return installed_scene_model(data.root, options.model)


def queue_missing_scenes(store: LibraryStore, data: DataDir, options: SceneOptions) -> list[int]:
    """Queue the finished films that lack this scene model's vectors (it was installed, or changed,
    after they were indexed): their next run does only this stage. Nothing when it is not installed."""
    folder = model_folder(data, options)
    if folder is None:
        return []
    ids = store.requeue_for_scenes(scene_model_id(folder))
    if ids:
        log.info("%d indexed films queued for their scene vectors", len(ids))
    return ids


class SceneStage:
    """The scene stage of the pipeline; the image side is loaded once per run, on first need."""

    def __init__(self, store: LibraryStore, data: DataDir, options: SceneOptions, fps: float,
                 device: str = "auto", dtype: str = "auto",
                 on_progress: Callable[[dict, str, int, int | None], None] | None = None):
        self.store, self.data, self.options, self.fps = store, data, options, fps
        self.device, self.dtype = device, dtype
        self.on_progress = on_progress or (lambda movie, stage, done, total: None)
        self._images: SceneImages | None = None
        self._error: str | None = None

    def images(self, folder: Path) -> SceneImages | None:
        if self._images is None and self._error is None:
            try:
                self._images = SceneImages(folder, self.device, self.dtype)
            except (UserError, OSError, ValueError, RuntimeError) as exc:
                self._error = f"the scene model in {folder} could not be loaded ({exc})"
        return self._images

    def run(self, job: dict, movie: dict, info: ProbeInfo, between_chunks: Callable[[], None]) -> str:
        """Make the film's scene vectors unless they are there; returns the stage's state."""
        folder = model_folder(self.data, self.options)
        if folder is None:
            state = OFF if self.options.mode == "never" else NOT_INSTALLED
            if movie["scenes_state"] != "done":  # vectors already made stay usable
                self.store.update_movie(movie["id"], {"scenes_state": state})
            return state
        model_id = scene_model_id(folder)
        if movie["scenes_state"] == "done" and movie["scenes_model"] == model_id:
            return "done"
        images = self.images(folder)
        if images is None:
            self._failed(movie, self._error or "unknown error")
            return "error"
        self._make(job, movie, info, images, between_chunks)
        return "done"

    def _failed(self, movie: dict, why: str) -> None:
        row = self.store.movie(movie["id"])
        kept = [w for w in (row["warning"] or "").split("; ") if w and not w.startswith(SCENES_FAILED)]
        kept.append(f"{SCENES_FAILED}: {why} (then `llamavid index retry`)")
        self.store.update_movie(movie["id"], {"scenes_state": f"error: {why}", "warning": "; ".join(kept)})

    def _open(self, movie: dict, info: ProbeInfo, images: SceneImages) -> tuple[FeatureWriter, int, int]:
        """(writer, rows done, chunk size): the partial file resumed when the database agrees, else a new one."""
        final = scenes_file(self.data, movie)
        writer = FeatureWriter(final, (images.dim,))
        done = movie["scenes_done"]
        if (done and movie["scenes_model"] == images.id and movie["scenes_path"] == str(final)
                and writer.resume() and writer.capacity >= done):
            return writer, done, movie["scenes_chunk"]
        writer.create(info.expected_samples(self.fps))
        batch = self.options.batch_size
        self.store.start_scenes(movie["id"], {"scenes_model": images.id, "scenes_path": str(final),
                                              "scenes_chunk": batch})
        return writer, 0, batch

    def _make(self, job: dict, movie: dict, info: ProbeInfo, images: SceneImages,
              between_chunks: Callable[[], None]) -> None:
        writer, done, batch = self._open(movie, info, images)
        last = self.store.scene_time(movie["id"], done - 1) if done else None
        start = next_target(last, self.fps) if last is not None else 0
        stream = SampleStream(video_spec(movie["path"], info), self.fps, start, images.image_size, 1, prefetch=batch)
        total = info.expected_samples(self.fps) - 1
        pending: list = []

        def commit() -> None:
            nonlocal done
            writer.write(done, images(np.stack([s.pixels for s in pending])))
            writer.flush()
            self.store.add_scene_frames(job["id"], movie["id"], done, [s.time for s in pending],
                                        max(total, done + len(pending)))
            done += len(pending)
            pending.clear()
            self.on_progress(movie, "scenes", done, max(total, done))

        try:
            for sample in stream:
                pending.append(sample)
                if len(pending) == batch:
                    commit()
                    between_chunks()
            if pending:
                commit()
        finally:
            writer.close()
        if done == 0:
            writer.discard()
            self._failed(movie, "no frame could be decoded")
            return
        path = writer.finalize(done)
        self.store.update_movie(movie["id"], {"scenes_state": "done", "scenes_path": str(path), "scenes_done": done,
                                              "scenes_bytes": path.stat().st_size})
        log.info("%s: %d scene vectors (%s)", movie["rel_path"], done, images.id)


def open_scenes(path: str | Path) -> np.ndarray:
    """A complete scene-vector file, memory-mapped read-only: (frames, width) fp16, unit rows."""
    return np.load(path, mmap_mode="r")
