"""EVA for the indexer: which weights, which engine, where they run, and an id that invalidates caches
they did not make."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from llamavid.errors import UserError
from llamavid.files import EVA_FILE, find_part
from llamavid.fingerprint import fingerprint
from llamavid.hub.installed import installed_folders, search_dirs
from llamavid.model.engines import ENGINES, REFERENCE
from llamavid.model.eva import EvaVisionTower
from llamavid.paths import DataDir
from llamavid.runtime.device import pick_device, pick_dtype
from llamavid.runtime.vision_engines import NATIVE, VisionEngines, weights_identity


def find_vision_weights(data: DataDir, explicit: str | Path | None = None) -> Path:
    """The file given with --vision, else the shared one (``<data>/models/shared``), else the copy
    inside an installed checkpoint folder: :func:`llamavid.files.find_part`'s order, as a chat loads it."""
    if explicit and not Path(explicit).expanduser().is_file():
        raise UserError(f"--vision {explicit}: no such file (expected an {EVA_FILE}-format file)")
    found = find_part(EVA_FILE, explicit=explicit, search_dirs=[*search_dirs(data), *installed_folders(data)])
    if found is None:
        raise UserError(f"no vision weights installed: run `llamavid models pull` for a model (it fetches {EVA_FILE} "
                        f"into {search_dirs(data)[0]}), put {EVA_FILE} there or in a checkpoint folder in "
                        f"{data.models}, or pass --vision PATH")
    return found.resolve()


def vision_id(path: Path, engine: str | None = None) -> str:
    """Identifies what produced a cache: the weights file, and the CPU engine unless it is the float32
    reference (or a GPU's own path), so other weights or a turned-off engine invalidate it."""
    suffix = f"@{engine}" if engine not in (None, REFERENCE, NATIVE) else ""
    return f"{Path(path).name}:{fingerprint(path)}{suffix}"


def split_vision_id(value: str) -> tuple[str, str]:
    """(weights part, engine) of a stored :func:`vision_id`; ids without an engine are the reference's."""
    base, sep, engine = value.rpartition("@")
    return (base, engine) if sep and engine in ENGINES["eva"] else (value, REFERENCE)


def features_reusable(stored: str | None, weights: Path, engines: VisionEngines | None,
                      engine: str | None = None) -> bool:
    """Whether features stored under vision id ``stored`` may be kept: made from ``weights``, by
    ``engine`` (the one running now) or by one still turned on (:meth:`VisionEngines.allows`; before
    EVA is loaded that knows the setting, not yet this machine's calibration). ``engines`` None: only
    the float32 reference's features."""
    if stored is None:
        return False
    base, made_by = split_vision_id(stored)
    if base != vision_id(weights):
        return False
    if engines is None:
        return made_by == REFERENCE
    return made_by == engine or engines.allows("eva", made_by)


class Encoder:
    """EVA on the best device and engine, turning (B, 3, S, S) pixels into (B, 1 + N, C) fp16 rows.

    ``engines`` chooses the CPU engine (:mod:`llamavid.runtime.vision_engines`); None keeps the
    float32 reference. The choice is made by :meth:`resolve` (or on first use of :attr:`id`),
    which may calibrate on frames the caller supplies.
    """

    def __init__(self, weights: Path, device: str | None = "auto", dtype: str | None = "auto",
                 image_size: int = 224, engines: VisionEngines | None = None):
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        self.weights = Path(weights)
        self.engines = engines
        self.engine: str | None = None if engines is not None else REFERENCE
        self.tower = EvaVisionTower.from_file(self.weights, image_size=image_size,
                                              device=self.device, dtype=self.dtype)

    def resolve(self, sample: Callable[[], np.ndarray | None] | None = None) -> str:
        """Choose the engine (once); ``sample()`` gives a few preprocessed frames if a calibration needs them."""
        if self.engine is None:
            self.tower, self.engine = self.engines.eva(self.tower, weights_identity([self.weights]), sample)
        return self.engine

    @property
    def id(self) -> str:
        engine = self.resolve()
        if getattr(self, "_id", (None, None))[0] != engine:
            self._id = (engine, vision_id(self.weights, engine))
        return self._id[1]

    def reusable(self, stored: str | None) -> bool:
        """Whether features stored under vision id ``stored`` may be kept (:func:`features_reusable`)."""
        return features_reusable(stored, self.weights, self.engines, self.resolve())

    @property
    def image_size(self) -> int:
        return self.tower.image_size

    @property
    def row_shape(self) -> tuple[int, int]:
        return (1 + self.tower.num_patches, self.tower.width)

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out = self.tower(torch.from_numpy(np.ascontiguousarray(pixels)))
        return out.to(torch.float16).cpu().numpy()
