"""The app's settings, kept in one place: ``<data>/settings.json``.

What the desktop app's first run chooses (the chat model, backend, quantization, device, language)
and what ``llamavid web``/``serve`` use when no option says otherwise. Unknown keys in the file are
kept (a newer version may have written them); a damaged file is an error naming it, never silently
replaced.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from llamavid.errors import UserError
from llamavid.paths import DataDir
from llamavid.storage import write_json_atomic

BACKENDS = ("auto", "transformers", "llama.cpp")


@dataclass
class Settings:
    model: str | None = None  # an installed model name, a registered name or a folder
    backend: str = "auto"  # see llamavid.runtime.load.pick_backend
    bits: int | None = None  # 4 or 8: the LLM quantized with bitsandbytes
    device: str = "auto"
    language: str | None = None  # two letters; None: the system's locale
    extra: dict[str, Any] = field(default_factory=dict)  # keys this version does not know

    def load_options(self) -> dict[str, Any]:
        """Keyword arguments for :func:`llamavid.runtime.load.load_model` (besides the model)."""
        return {"backend": self.backend, "bits": self.bits, "device": self.device}


def load_settings(data_dir: str | Path | DataDir) -> Settings:
    path = (data_dir if isinstance(data_dir, DataDir) else DataDir(Path(data_dir))).settings
    if not path.is_file():
        return Settings()
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(values, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: the settings cannot be read ({exc}); fix or delete the file") from exc
    known = {f.name for f in fields(Settings)} - {"extra"}
    settings = Settings(**{k: v for k, v in values.items() if k in known},
                        extra={k: v for k, v in values.items() if k not in known})
    if settings.backend not in BACKENDS or settings.bits not in (None, 4, 8):
        raise UserError(f"{path}: backend must be one of {', '.join(BACKENDS)} and bits 4, 8 or null")
    return settings


def save_settings(data_dir: str | Path | DataDir, settings: Settings) -> Path:
    path = (data_dir if isinstance(data_dir, DataDir) else DataDir(Path(data_dir))).settings
    values = asdict(settings)
    extra = values.pop("extra")
    write_json_atomic(path, {**extra, **values})
    return path
