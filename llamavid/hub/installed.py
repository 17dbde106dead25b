"""Installed models: where they are, what state they are in, and which folder a name means.

Getting them is :mod:`llamavid.hub.pull`, checking them :mod:`llamavid.hub.verify`.

Layout under the data folder (see :mod:`llamavid.paths`)::

    <data>/models/<name>/                  one checkpoint per folder (pulled, or a symlink)
    <data>/models/<name>/.llamavid-manifest.json   what `pull` expects there (sizes, hashes, commit)
    <data>/models/shared/eva_vit_g.pth     parts every model uses, fetched once:
    <data>/models/shared/bert_vocab.txt    the loader's ``search_dirs`` (:func:`search_dirs`)
    <data>/models/registry.json            local folders registered with `llamavid models add`

Every command that takes ``--model`` turns it into a folder with :func:`resolve_model` and
passes :func:`search_dirs` to the loader, so a model works the same whether it was pulled,
registered or given as a path.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from llamavid.errors import UserError
from llamavid.files import (
    CONFIG,
    INDEX_FILES,
    MANIFEST,
    PROJECTOR_FILE,
    SINGLE_FILES,
    SPEECH_FILES,
    VOCAB_FILE,
    find_part,
    weight_index,
)
from llamavid.hub import catalog, download
from llamavid.paths import DataDir
from llamavid.storage import human_size, write_json_atomic

__all__ = [
    "InstalledEntry",
    "MANIFEST",
    "add_model",
    "folder_size",
    "has_gguf_pair",
    "infer_kind",
    "is_checkpoint",
    "installed_folders",
    "list_models",
    "missing_scene_files",
    "missing_speech_files",
    "remove_model",
    "resolve_model",
    "search_dirs",
    "shared_dir",
]

SHARED = "shared"
REGISTRY = "registry.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def data_dir_of(data_dir: DataDir | str | os.PathLike[str]) -> DataDir:
    return data_dir if isinstance(data_dir, DataDir) else DataDir(Path(data_dir))


def shared_dir(data_dir: DataDir | str | os.PathLike[str]) -> Path:
    """The folder of the parts every model shares (``eva_vit_g.pth``, ``bert_vocab.txt``)."""
    return data_dir_of(data_dir).models / SHARED


def search_dirs(data_dir: DataDir | str | os.PathLike[str]) -> list[Path]:
    """Folders the loader searches after the checkpoint's own (``LlamaVid.load(..., search_dirs=)``)."""
    return [shared_dir(data_dir)]


def folder_size(folder: Path) -> int:
    """Bytes under ``folder``, following symlinks (hub-style links into a blob store)."""
    total = 0
    for dirpath, _dirs, files in os.walk(folder, followlinks=True):
        for f in files:
            try:
                total += os.stat(os.path.join(dirpath, f)).st_size
            except OSError:
                continue
    return total


def installed_folders(data_dir: DataDir | str | os.PathLike[str]) -> list[Path]:
    """Every checkpoint folder the data folder holds or knows: sub-folders of models/ (pulled or
    linked, complete or not) and registered folders, in that order."""
    dd = data_dir_of(data_dir)
    pulled = sorted(p for p in dd.models.iterdir() if p.is_dir() and not p.name.startswith(".")
                    and p.name != SHARED) if dd.models.is_dir() else []
    return [*pulled, *(Path(info["path"]) for info in read_registry(dd).values())]


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise UserError(f"{path} is unreadable ({exc}); delete or fix it") from exc


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def read_registry(data_dir: DataDir | str | os.PathLike[str]) -> dict[str, dict]:
    """Registered local folders: name -> {"path": ..., "added": ...}."""
    data = read_json(data_dir_of(data_dir).models / REGISTRY) or {}
    return dict(data.get("models", {}))


def _save_registry(dd: DataDir, models: dict[str, dict]) -> None:
    write_json_atomic(dd.models / REGISTRY, {"format": 1, "models": models})


def _check_name(name: str) -> None:
    if not _NAME.match(name) or name == SHARED:
        raise UserError(f"{name!r} cannot be a model name: use letters, digits, '.', '_' and '-' "
                        f"(not starting with '.' and not {SHARED!r})")


def add_model(data_dir: DataDir | str | os.PathLike[str], name: str, folder: str | os.PathLike[str],
              *, force: bool = False) -> Path:
    """Register a checkpoint folder kept elsewhere under ``name``; nothing is copied or moved."""
    dd = data_dir_of(data_dir)
    _check_name(name)
    path = Path(os.path.abspath(Path(folder).expanduser()))
    if not path.is_dir():
        raise UserError(f"{path}: no such folder; give the folder that holds the checkpoint's config.json")
    if not (path / CONFIG).is_file():
        raise UserError(f"{path} has no config.json, so it is not a checkpoint folder; give the folder that "
                        f"holds config.json and the weights")
    registry = read_registry(dd)
    if (dd.models / name).exists():
        raise UserError(f"a model called {name!r} is already installed in {dd.models / name}; pick another name")
    if name in registry and not force:
        raise UserError(f"{name!r} is already registered for {registry[name]['path']}; pass --force to "
                        f"point it at {path}, or pick another name")
    registry[name] = {"path": str(path), "added": now_iso()}
    _save_registry(dd, registry)
    return path


@dataclass
class InstalledEntry:
    """A model the data folder knows about, pulled or registered."""

    name: str
    path: Path
    source: str  # "pulled" (a folder or link under models/) or "registered"
    kind: str
    size_bytes: int
    status: str  # "complete", "incomplete" or "missing"
    detail: str = ""
    repo_id: str | None = None

    @property
    def size_human(self) -> str:
        return human_size(self.size_bytes)

    def to_dict(self) -> dict:
        return {"name": self.name, "path": str(self.path), "source": self.source, "kind": self.kind,
                "size_bytes": self.size_bytes, "size": human_size(self.size_bytes), "status": self.status,
                "detail": self.detail, "repo_id": self.repo_id}


def config_of(folder: Path) -> dict:
    """A folder's config.json as a dict; empty when missing or unreadable (the caller reports that)."""
    try:
        data = json.loads((folder / CONFIG).read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def has_gguf_pair(folder: Path) -> bool:
    """Whether ``folder`` holds a vision LLM in llama.cpp's layout: an LLM GGUF beside its
    ``mmproj-*.gguf`` (the published Qwen3-VL GGUF repos). Such a folder has no config.json."""
    names = [p.name.lower() for p in folder.glob("*.gguf")] if folder.is_dir() else []
    return any(n.startswith("mmproj") for n in names) and any(not n.startswith("mmproj") for n in names)


def is_checkpoint(folder: Path) -> bool:
    """Whether a folder is a model one can load: a config.json, or a GGUF with its mmproj."""
    return (folder / CONFIG).is_file() or has_gguf_pair(folder)


def infer_kind(folder: Path, name: str | None = None) -> str:
    """What a checkpoint is for: the catalogue's word for known names, else read from its config."""
    entry = catalog.get(name) if name else None
    if entry is not None:
        return entry.kind
    files = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
    cfg = config_of(folder)
    if "model.bin" in files or "suppress_ids" in cfg:
        return "speech"  # a CTranslate2 Whisper model (faster-whisper)
    if cfg.get("model_type") in SCENE_MODEL_TYPES:
        return "scenes"  # an image-text embedding model (indexer.scene_model)
    if cfg.get("model_type") == "qwen3_vl" or (not cfg and has_gguf_pair(folder)):
        return "qwen-vl"  # the second family (llamavid.runtime.family)
    if PROJECTOR_FILE in files and not files & {*INDEX_FILES, *SINGLE_FILES}:
        return "pretrain"
    if not cfg:
        return "unknown"
    if not any(k.startswith("mm_") for k in cfg):
        return "base-llm"
    rope = cfg.get("rope_scaling") or {}
    if (isinstance(rope, dict) and (rope.get("factor") or 1) > 1) or (cfg.get("max_token") or 0) >= 65536:
        return "long-video"
    if str(cfg.get("compress_type") or "").startswith("mean"):
        return "video"
    return "image"


def missing_speech_files(folder: Path) -> list[str]:
    """The files faster-whisper opens that ``folder`` lacks (empty: a usable speech model)."""
    return [f for f in SPEECH_FILES if not (folder / f).is_file()]


#: The ``model_type`` of the image-text models the indexer's scene stage reads (transformers' CLIP).
SCENE_MODEL_TYPES = ("clip",)


def missing_scene_files(folder: Path) -> list[str]:
    """What a scene model folder lacks (empty: usable): its config, one weights file and a CLIP
    tokenizer (``tokenizer.json``, or ``vocab.json`` with ``merges.txt``)."""
    missing = [] if (folder / CONFIG).is_file() else [CONFIG]
    if not any((folder / f).is_file() for f in SINGLE_FILES):
        missing.append(" or ".join(SINGLE_FILES))
    bpe = all((folder / f).is_file() for f in ("vocab.json", "merges.txt"))
    if not (folder / "tokenizer.json").is_file() and not bpe:
        missing.append("tokenizer.json (or vocab.json and merges.txt)")
    return missing


def find_shared(name: str, folder: Path, data_dir: DataDir) -> Path | None:
    """Where the loader will find a shared part of this checkpoint (see :func:`llamavid.files.find_part`)."""
    return find_part(name, folder, search_dirs=search_dirs(data_dir))


def _quick_status(folder: Path, dd: DataDir, kind: str) -> tuple[str, str]:
    """complete / incomplete from file presence and sizes only (cheap enough for every `list`)."""
    if not folder.is_dir():
        return "missing", f"{folder} does not exist (drive unplugged or folder moved?)"
    manifest = read_manifest(folder)
    if manifest:
        bad = [f for f, info in manifest["files"].items()
               if download.check_file(folder / f, info.get("size"), hashes=False)]
        if bad:
            partial = any(download.part_path(folder / f).exists() for f in bad)
            return "incomplete", (f"{len(bad)} of {len(manifest['files'])} files missing or wrong size"
                                  + ("; download interrupted: run `llamavid models pull` again to resume"
                                     if partial else ""))
    if kind == "qwen-vl" and has_gguf_pair(folder):
        return "complete", ""
    if not (folder / CONFIG).is_file():
        return "incomplete", "no config.json"
    if kind in ("speech", "scenes"):
        missing = missing_speech_files(folder) if kind == "speech" else missing_scene_files(folder)
        return ("incomplete", f"missing {', '.join(missing)}") if missing else ("complete", "")
    try:
        _index, _map, files = weight_index(folder)
    except UserError as exc:
        return "incomplete", str(exc)
    if not files:
        return "incomplete", "no weight files"
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        return "incomplete", f"missing {', '.join(missing)}"
    if kind not in ("base-llm", "unknown", "qwen-vl") and find_shared(VOCAB_FILE, folder, dd) is None:
        return "incomplete", f"no {VOCAB_FILE} (run `llamavid models pull` for a catalogue model)"
    return "complete", ""


def read_manifest(folder: Path) -> dict | None:
    data = read_json(folder / MANIFEST) if (folder / MANIFEST).exists() else None
    return data if isinstance(data, dict) and isinstance(data.get("files"), dict) else None


def list_models(data_dir: DataDir | str | os.PathLike[str], *, sizes: bool = True) -> list[InstalledEntry]:
    """Pulled folders (with config.json or a pull manifest) and registered folders, by name."""
    dd = data_dir_of(data_dir)
    found: list[InstalledEntry] = []
    if dd.models.is_dir():
        for entry in dd.models.iterdir():
            if entry.name.startswith(".") or entry.name == SHARED or not entry.is_dir():
                continue
            if not (is_checkpoint(entry) or (entry / MANIFEST).is_file()):
                continue
            kind = infer_kind(entry, entry.name)
            status, detail = _quick_status(entry, dd, kind)
            manifest = read_manifest(entry) or {}
            found.append(InstalledEntry(entry.name, entry, "pulled", kind, folder_size(entry) if sizes else 0,
                                        status, detail, manifest.get("repo_id")))
    for name, info in read_registry(dd).items():
        path = Path(info["path"])
        kind = infer_kind(path) if path.is_dir() else "unknown"
        status, detail = _quick_status(path, dd, kind)
        found.append(InstalledEntry(name, path, "registered", kind,
                                    folder_size(path) if sizes and path.is_dir() else 0, status, detail))
    return sorted(found, key=lambda m: m.name.lower())


def resolve_model(name_or_path: str | os.PathLike[str], data_dir: DataDir | str | os.PathLike[str]) -> Path:
    """The checkpoint folder for ``--model``: an installed name, a registered name, or a folder path.

    Raises:
        UserError: saying what is wrong and what to run (pull, add, list --available).
    """
    dd = data_dir_of(data_dir)
    text = os.fspath(name_or_path)
    if not text.strip():
        raise UserError("no model given; pass an installed name (`llamavid models list`) or a checkpoint folder")
    as_path = isinstance(name_or_path, os.PathLike) or "/" in text or os.sep in text or text.startswith((".", "~"))
    if not as_path:
        folder = dd.models / text
        if text != SHARED and is_checkpoint(folder):
            return folder
        registered = read_registry(dd).get(text)
        if registered:
            path = Path(registered["path"])
            if not is_checkpoint(path):
                raise UserError(f"model {text!r} is registered for {path}, but "
                                f"{'that folder is gone' if not path.is_dir() else 'it has no config.json'}; "
                                f"reconnect the drive, or run `llamavid models rm {text}` and "
                                f"`llamavid models add {text} FOLDER` again")
            return path
        if text != SHARED and folder.is_dir():
            raise UserError(f"model {text!r} is incomplete (its download was interrupted?); run "
                            f"`llamavid models pull {text}` to finish it")
    path = Path(os.path.abspath(Path(text).expanduser()))
    if path.is_dir():
        if is_checkpoint(path):
            return path
        raise UserError(f"{path} is a folder but not a checkpoint (no config.json); give the folder that "
                        f"holds config.json and the weights")
    if as_path:
        raise UserError(f"{path}: no such folder; give a checkpoint folder or an installed model name "
                        f"(`llamavid models list`)")
    entry = catalog.get(text)
    if entry is not None:
        raise UserError(f"model {entry.name!r} is not installed; download it with "
                        f"`llamavid models pull {entry.name}` ({entry.kind}, "
                        f"{'~' + human_size(entry.approx_size) if entry.approx_size else 'size unknown'})")
    installed = [m.name for m in list_models(dd, sizes=False)]
    raise UserError(f"unknown model {text!r}; installed: {', '.join(installed) or 'none'}. "
                    f"`llamavid models list --available` shows the models you can pull; a checkpoint "
                    f"folder path works too")


def remove_model(data_dir: DataDir | str | os.PathLike[str], name: str) -> tuple[str, Path]:
    """Forget a model. Registered: only unregister. Symlink: only the link. Pulled: delete the folder.

    Returns (what was done: "unregistered" / "unlinked" / "deleted", path). Confirmation is the
    caller's job; the user's own folders are never deleted here.
    """
    dd = data_dir_of(data_dir)
    registry = read_registry(dd)
    if name in registry:
        path = Path(registry.pop(name)["path"])
        _save_registry(dd, registry)
        return "unregistered", path
    folder = dd.models / name
    if name == SHARED or name.startswith(".") or "/" in name or os.sep in name:
        raise UserError(f"{name!r} is not a model name; `llamavid models list` shows the installed ones")
    if folder.is_symlink():
        target = folder.resolve()
        folder.unlink()
        return "unlinked", target
    if folder.is_dir():
        shutil.rmtree(folder)
        return "deleted", folder
    installed = [m.name for m in list_models(dd, sizes=False)]
    raise UserError(f"no installed model called {name!r}; installed: {', '.join(installed) or 'none'}")


def shared_manifest(dd: DataDir) -> dict:
    """What ``pull`` recorded about the shared parts (sizes and hashes at download time)."""
    data = read_json(shared_dir(dd) / MANIFEST) if (shared_dir(dd) / MANIFEST).exists() else None
    return data if isinstance(data, dict) and isinstance(data.get("files"), dict) else {"format": 1, "files": {}}
