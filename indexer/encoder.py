"""EVA for the indexer: which weights, where they run, and an id that invalidates caches they did not make."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from llamavid.errors import UserError
from llamavid.files import EVA_FILE, find_part
from llamavid.fingerprint import fingerprint
from llamavid.hub.installed import installed_folders, search_dirs
from llamavid.model.eva import EvaVisionTower
from llamavid.paths import DataDir
from llamavid.runtime.device import pick_device, pick_dtype


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


def vision_id(path: Path) -> str:
    """Identifies the weights that produced a cache, so a different file invalidates it."""
    return f"{Path(path).name}:{fingerprint(path)}"


class Encoder:
    """EVA on the best device, turning (B, 3, S, S) pixels into (B, 1 + N, C) fp16 rows."""

    def __init__(self, weights: Path, device: str | None = "auto", dtype: str | None = "auto",
                 image_size: int = 224):
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        self.weights = Path(weights)
        self.id = vision_id(self.weights)
        self.tower = EvaVisionTower.from_file(self.weights, image_size=image_size,
                                              device=self.device, dtype=self.dtype)

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
