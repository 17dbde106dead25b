"""The app's settings, kept in one place: ``<data>/settings.json``.

What the desktop app's first run chooses (the chat model, backend, quantization, device, language),
how answers are sampled and how hard the background indexer may work, what ``llamavid web``/``serve``
use when no option says otherwise, and where the desktop window was left (the last film, questions
typed but not answered). Unknown keys in the file are kept (a newer version, or another part of the
project, may have written them); a damaged file is an error naming it, never silently replaced.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from llamavid.errors import UserError
from llamavid.paths import DataDir
from llamavid.runtime.kv_size import KV_TYPES
from llamavid.runtime.options import BACKENDS, LoadOptions
from llamavid.storage import write_json_atomic


@dataclass
class Settings:
    model: str | None = None  # an installed model name, a registered name or a folder
    backend: str = "auto"  # see llamavid.runtime.load.choose_engine
    bits: int | None = None  # 4 or 8: the LLM quantized with bitsandbytes
    device: str = "auto"  # the chat model's, and the indexer's EVA
    kv_type: str = "auto"  # llama.cpp's KV cache type (auto: q8_0 where the model allows it); films' memory and disk
    language: str | None = None  # two letters; None: the system's locale
    temperature: float | None = None  # None: the model's default (0.2); 0: greedy
    max_new_tokens: int | None = None  # None: the default answer budget (512 tokens)
    index_idle: float = 0.0  # seconds the indexer rests between chunks (a lighter load on a laptop)
    index_priority: str = "low"  # low: nice 19, and it waits while a question is answered; normal: neither
    index_skip_similar: bool = True  # frames of a static shot reuse the last encoded frame's features
    last_movie: int | None = None  # the film the desktop window had open
    drafts: dict[str, str] = field(default_factory=dict)  # conversation id ("new-<movie id>"): unsent question
    extra: dict[str, Any] = field(default_factory=dict)  # keys this version does not know

    def load_options(self) -> LoadOptions:
        """How :func:`llamavid.runtime.load.load_model` loads the chat model (the rest: its defaults;
        ``vision_engine`` in the file is read by the loader itself)."""
        return LoadOptions(backend=self.backend, bits=self.bits, device=self.device, kv_type=self.kv_type)

    def sampling_options(self) -> dict[str, Any]:
        """Keyword arguments for :class:`llamavid.runtime.generate.SamplingOptions`: only what differs
        from the model's defaults (empty: use them all)."""
        return {k: v for k, v in (("temperature", self.temperature), ("max_new_tokens", self.max_new_tokens))
                if v is not None}


def _check(path: Path, s: Settings) -> None:
    problems = []
    if s.backend not in BACKENDS or s.bits not in (None, 4, 8):
        problems.append(f"backend must be one of {', '.join(BACKENDS)} and bits 4, 8 or null")
    if s.kv_type not in KV_TYPES:
        problems.append(f"kv_type must be one of {', '.join(KV_TYPES)}")
    if not isinstance(s.device, str) or not s.device:
        problems.append("device must be a name such as auto, cpu, cuda or cuda:1")
    if s.temperature is not None and (not isinstance(s.temperature, (int, float)) or s.temperature < 0):
        problems.append("temperature must be a number >= 0 or null")
    if s.max_new_tokens is not None and (not isinstance(s.max_new_tokens, int) or s.max_new_tokens < 1):
        problems.append("max_new_tokens must be a whole number >= 1 or null")
    if not isinstance(s.index_idle, (int, float)) or s.index_idle < 0:
        problems.append("index_idle must be a number of seconds >= 0")
    if s.index_priority not in ("low", "normal"):
        problems.append("index_priority must be low or normal")
    if not isinstance(s.index_skip_similar, bool):
        problems.append("index_skip_similar must be true or false")
    if not isinstance(s.drafts, dict):
        problems.append("drafts must be an object")
    if problems:
        raise UserError(f"{path}: {'; '.join(problems)}; fix or delete the file")


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
    _check(path, settings)
    return settings


def save_settings(data_dir: str | Path | DataDir, settings: Settings) -> Path:
    path = (data_dir if isinstance(data_dir, DataDir) else DataDir(Path(data_dir))).settings
    values = asdict(settings)
    extra = values.pop("extra")
    write_json_atomic(path, {**extra, **values})
    return path
