"""Installed models: where they are, what state they are in, how to get and check them.

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
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from llamavid.hub import catalog, download
from llamavid.hub.catalog import CatalogEntry
from llamavid.errors import UserError
from llamavid.files import (CONFIG, EVA_FILE, INDEX_FILES, MANIFEST, PROJECTOR_FILE, SINGLE_FILES, SPEECH_FILES,
                            VISION_FILE, VOCAB_FILE, find_part, weight_index)
from llamavid.paths import DataDir
from llamavid.storage import human_size, write_json_atomic

__all__ = [
    "Finding",
    "InstalledEntry",
    "MANIFEST",
    "PullPlan",
    "add_model",
    "folder_size",
    "infer_kind",
    "list_models",
    "missing_speech_files",
    "plan_pull",
    "pull",
    "remove_model",
    "resolve_model",
    "search_dirs",
    "shared_dir",
    "verify_model",
]

SHARED = "shared"
REGISTRY = "registry.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def _dd(data_dir: DataDir | str | os.PathLike[str]) -> DataDir:
    return data_dir if isinstance(data_dir, DataDir) else DataDir(Path(data_dir))


def shared_dir(data_dir: DataDir | str | os.PathLike[str]) -> Path:
    """The folder of the parts every model shares (``eva_vit_g.pth``, ``bert_vocab.txt``)."""
    return _dd(data_dir).models / SHARED


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
    dd = _dd(data_dir)
    pulled = sorted(p for p in dd.models.iterdir() if p.is_dir() and not p.name.startswith(".")
                    and p.name != SHARED) if dd.models.is_dir() else []
    return [*pulled, *(Path(info["path"]) for info in read_registry(dd).values())]


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise UserError(f"{path} is unreadable ({exc}); delete or fix it") from exc


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ----------------------------------------------------------------------------------- registry
def read_registry(data_dir: DataDir | str | os.PathLike[str]) -> dict[str, dict]:
    """Registered local folders: name -> {"path": ..., "added": ...}."""
    data = _read_json(_dd(data_dir).models / REGISTRY) or {}
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
    dd = _dd(data_dir)
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
    registry[name] = {"path": str(path), "added": _now()}
    _save_registry(dd, registry)
    return path


# ----------------------------------------------------------------------------------- listing
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


def _config(folder: Path) -> dict:
    try:
        data = json.loads((folder / CONFIG).read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def infer_kind(folder: Path, name: str | None = None) -> str:
    """What a checkpoint is for: the catalogue's word for known names, else read from its config."""
    entry = catalog.get(name) if name else None
    if entry is not None:
        return entry.kind
    files = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
    cfg = _config(folder)
    if "model.bin" in files or "suppress_ids" in cfg:
        return "speech"  # a CTranslate2 Whisper model (faster-whisper)
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


def find_shared(name: str, folder: Path, data_dir: DataDir) -> Path | None:
    """Where the loader will find a shared part of this checkpoint (see :func:`llamavid.files.find_part`)."""
    return find_part(name, folder, search_dirs=search_dirs(data_dir))


def _quick_status(folder: Path, dd: DataDir, kind: str) -> tuple[str, str]:
    """complete / incomplete from file presence and sizes only (cheap enough for every `list`)."""
    if not folder.is_dir():
        return "missing", f"{folder} does not exist (drive unplugged or folder moved?)"
    manifest = _read_manifest(folder)
    if manifest:
        bad = [f for f, info in manifest["files"].items()
               if download.check_file(folder / f, info.get("size"), hashes=False)]
        if bad:
            partial = any(download.part_path(folder / f).exists() for f in bad)
            return "incomplete", (f"{len(bad)} of {len(manifest['files'])} files missing or wrong size"
                                  + ("; download interrupted: run `llamavid models pull` again to resume"
                                     if partial else ""))
    if not (folder / CONFIG).is_file():
        return "incomplete", "no config.json"
    if kind == "speech":
        missing = missing_speech_files(folder)
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
    if kind not in ("base-llm", "unknown") and find_shared(VOCAB_FILE, folder, dd) is None:
        return "incomplete", f"no {VOCAB_FILE} (run `llamavid models pull` for a catalogue model)"
    return "complete", ""


def _read_manifest(folder: Path) -> dict | None:
    data = _read_json(folder / MANIFEST) if (folder / MANIFEST).exists() else None
    return data if isinstance(data, dict) and isinstance(data.get("files"), dict) else None


def list_models(data_dir: DataDir | str | os.PathLike[str], *, sizes: bool = True) -> list[InstalledEntry]:
    """Pulled folders (with config.json or a pull manifest) and registered folders, by name."""
    dd = _dd(data_dir)
    found: list[InstalledEntry] = []
    if dd.models.is_dir():
        for entry in dd.models.iterdir():
            if entry.name.startswith(".") or entry.name == SHARED or not entry.is_dir():
                continue
            if not ((entry / CONFIG).is_file() or (entry / MANIFEST).is_file()):
                continue
            kind = infer_kind(entry, entry.name)
            status, detail = _quick_status(entry, dd, kind)
            manifest = _read_manifest(entry) or {}
            found.append(InstalledEntry(entry.name, entry, "pulled", kind, folder_size(entry) if sizes else 0,
                                        status, detail, manifest.get("repo_id")))
    for name, info in read_registry(dd).items():
        path = Path(info["path"])
        kind = infer_kind(path) if path.is_dir() else "unknown"
        status, detail = _quick_status(path, dd, kind)
        found.append(InstalledEntry(name, path, "registered", kind,
                                    folder_size(path) if sizes and path.is_dir() else 0, status, detail))
    return sorted(found, key=lambda m: m.name.lower())


# ----------------------------------------------------------------------------------- resolving
def resolve_model(name_or_path: str | os.PathLike[str], data_dir: DataDir | str | os.PathLike[str]) -> Path:
    """The checkpoint folder for ``--model``: an installed name, a registered name, or a folder path.

    Raises:
        UserError: saying what is wrong and what to run (pull, add, list --available).
    """
    dd = _dd(data_dir)
    text = os.fspath(name_or_path)
    if not text.strip():
        raise UserError("no model given; pass an installed name (`llamavid models list`) or a checkpoint folder")
    as_path = isinstance(name_or_path, os.PathLike) or "/" in text or os.sep in text or text.startswith((".", "~"))
    if not as_path:
        folder = dd.models / text
        if text != SHARED and (folder / CONFIG).is_file():
            return folder
        registered = read_registry(dd).get(text)
        if registered:
            path = Path(registered["path"])
            if not (path / CONFIG).is_file():
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
        if (path / CONFIG).is_file():
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


# ----------------------------------------------------------------------------------- removing
def remove_model(data_dir: DataDir | str | os.PathLike[str], name: str) -> tuple[str, Path]:
    """Forget a model. Registered: only unregister. Symlink: only the link. Pulled: delete the folder.

    Returns (what was done: "unregistered" / "unlinked" / "deleted", path). Confirmation is the
    caller's job; the user's own folders are never deleted here.
    """
    dd = _dd(data_dir)
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


# ----------------------------------------------------------------------------------- pulling
@dataclass
class PullPlan:
    """What `pull` will do for one catalogue entry, decided before any byte is downloaded."""

    entry: CatalogEntry
    folder: Path
    commit: str
    manifest: dict
    remotes: list[download.Remote] = field(default_factory=list)
    shared_remotes: list[download.Remote] = field(default_factory=list)
    present: list[str] = field(default_factory=list)  # files already complete

    @property
    def needed_bytes(self) -> int:
        """Bytes still to write: sizes minus what ``.part`` files already hold (cache copies count)."""
        total = 0
        shared = [(r, catalog.SHARED_PARTS[r.dest.name].approx_size) for r in self.shared_remotes]
        for r, guess in [*((r, None) for r in self.remotes), *shared]:
            size = r.size if r.size is not None else guess or 0  # unknown length: the catalogue's estimate
            part = download.part_path(r.dest)
            have = part.stat().st_size if part.exists() else 0
            total += max(size - have, 0)
        return total


def _shared_manifest(dd: DataDir) -> dict:
    data = _read_json(shared_dir(dd) / MANIFEST) if (shared_dir(dd) / MANIFEST).exists() else None
    return data if isinstance(data, dict) and isinstance(data.get("files"), dict) else {"format": 1, "files": {}}


def _shared_remote(part: catalog.SharedPart, dd: DataDir) -> download.Remote:
    dest = shared_dir(dd) / part.filename
    if part.repo_id:
        commit, info = download.hub_file_info(part.repo_id, part.repo_file or part.filename)
        return download.Remote(dest, f"{part.repo_id}/{part.repo_file}",
                               download.hub_resolver(part.repo_id, part.repo_file or part.filename, commit),
                               size=info.size, sha256=info.sha256 or part.sha256, git_sha1=info.git_sha1,
                               cached=download.cached_hub_file(part.repo_id, part.repo_file or part.filename,
                                                               commit), record_sha256=True)
    url = catalog.shared_part_url(part)
    assert url is not None, part
    return download.Remote(dest, url, download.http_resolver(url), size=download.http_size(url),
                           sha256=part.sha256, record_sha256=True)


def plan_pull(entry: CatalogEntry, data_dir: DataDir | str | os.PathLike[str], *, force: bool = False) -> PullPlan:
    """Ask the hub for the repo's files and decide what is missing; downloads nothing."""
    dd = _dd(data_dir)
    folder = dd.models / entry.name
    if entry.name in read_registry(dd):
        raise UserError(f"{entry.name!r} is registered for a local folder; `llamavid models rm {entry.name}` "
                        f"first if you want to download it instead")
    listing = download.hub_repo_files(entry.repo_id)
    by_name = {f.name: f for f in listing.files}
    wanted = catalog.select_repo_files(list(by_name))
    if CONFIG not in wanted:
        raise UserError(f"{entry.repo_id} has no config.json at commit {listing.commit[:8]}; it is not a "
                        f"checkpoint repo (check HF_ENDPOINT)")
    manifest = {"format": 1, "name": entry.name, "repo_id": entry.repo_id, "commit": listing.commit,
                "endpoint": download.hub_endpoint(), "files": {}, "complete": False}
    plan = PullPlan(entry, folder, listing.commit, manifest)
    before = (_read_manifest(folder) or {"files": {}})["files"]
    for name in wanted:
        info = by_name[name]
        manifest["files"][name] = {"size": info.size, "sha256": info.sha256, "git_sha1": info.git_sha1}
        dest = folder / name
        old = before.get(name, {})
        # a file the repo has changed since the last pull is fetched again even if its size is the same
        changed = any(old.get(k) not in (None, v) for k, v in (("sha256", info.sha256), ("git_sha1", info.git_sha1)))
        if not force and not changed and dest.is_file() and download.check_file(dest, info.size, hashes=False) is None:
            plan.present.append(name)
            continue
        plan.remotes.append(download.Remote(
            dest, f"{entry.repo_id}/{name}", download.hub_resolver(entry.repo_id, name, listing.commit),
            size=info.size, sha256=info.sha256, git_sha1=info.git_sha1,
            cached=download.cached_hub_file(entry.repo_id, name, listing.commit)))
    recorded = _shared_manifest(dd)["files"]
    for part_name in entry.shared:
        dest = shared_dir(dd) / part_name
        size = (recorded.get(part_name) or {}).get("size")
        if not force and dest.is_file() and download.check_file(dest, size, hashes=False) is None:
            plan.present.append(f"{SHARED}/{part_name}")
            continue
        plan.shared_remotes.append(_shared_remote(catalog.SHARED_PARTS[part_name], dd))
    return plan


def pull(plan: PullPlan, *, progress: bool | None = None, retries: int = 5, retry_wait: float = 2.0,
         say: Any = print) -> PullPlan:
    """Carry out a plan: check disk space, fetch each missing file, record what arrived."""
    dd = DataDir(plan.folder.parent.parent)
    download.check_free_space(plan.folder.parent, plan.needed_bytes, f"pulling {plan.entry.name}")
    plan.folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(plan.folder / MANIFEST, plan.manifest)
    todo = [*plan.shared_remotes, *plan.remotes]
    for i, remote in enumerate(todo, 1):
        size = human_size(remote.size) if remote.size is not None else "size unknown"
        say(f"[{i}/{len(todo)}] {remote.label} ({size})")
        result = download.fetch(remote, progress=progress, retries=retries, retry_wait=retry_wait)
        if remote.dest.parent == shared_dir(dd):
            shared = _shared_manifest(dd)
            shared["files"][remote.dest.name] = {
                "size": result.size, "sha256": result.sha256, "source": remote.label,
                "sha256_source": ("published by the hub (checked)" if remote.sha256 else
                                  "computed after download; content checked against the hub's git blob id"
                                  if remote.git_sha1 else "computed after download (no hash is published; "
                                                          "size checked)"),
                "fetched": _now()}
            write_json_atomic(shared_dir(dd) / MANIFEST, shared)
    plan.manifest["complete"] = True
    plan.manifest["pulled"] = _now()
    write_json_atomic(plan.folder / MANIFEST, plan.manifest)
    return plan


# ----------------------------------------------------------------------------------- verifying
@dataclass(frozen=True)
class Finding:
    """One line of `verify`: a file and what was found."""

    level: str  # "ok", "warning", "error"
    file: str
    message: str

    def to_dict(self) -> dict:
        return {"level": self.level, "file": self.file, "message": self.message}


def _check_torch_zip(path: Path, deep: bool) -> str | None:
    """Open a PyTorch zip checkpoint without torch: a truncated file has no central directory."""
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
            if not any(i.filename.endswith("data.pkl") for i in infos):
                return "not a PyTorch checkpoint (no data.pkl inside)"
            size = path.stat().st_size
            if any(i.header_offset + i.compress_size > size for i in infos):
                return "truncated: its entries point past the end of the file"
            if deep:
                bad = z.testzip()
                if bad is not None:
                    return f"corrupt: CRC check failed for {bad}"
    except zipfile.BadZipFile:
        with open(path, "rb") as f:
            head = f.read(2)
        if head[:1] == b"\x80":
            return None  # legacy (pre-1.6) torch pickle: no structure to check without loading it
        return "cannot be opened: truncated or corrupt (the zip directory at its end is missing)"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    return None


def _check_safetensors(path: Path) -> str | None:
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if n <= 0 or n > 100_000_000:
                return "not a safetensors file (bad header length)"
            header = json.loads(f.read(n))
    except (OSError, ValueError) as exc:
        return f"cannot read its header ({exc})"
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    expected = 8 + n + end
    actual = path.stat().st_size
    if actual != expected:
        return f"{'truncated' if actual < expected else 'too large'}: {actual} bytes, its header says {expected}"
    return None


def _check_gguf(path: Path) -> str | None:
    """Header and tensor table readable and every tensor's data inside the file."""
    try:
        import gguf

        reader = gguf.GGUFReader(path)
    except Exception as exc:  # noqa: BLE001 - gguf raises several types for damaged files
        return f"not a readable GGUF file ({exc.__class__.__name__}: {str(exc)[:120]})"
    if not reader.tensors:
        return "GGUF file without tensors"
    return None


def _check_weights_file(path: Path, deep: bool) -> str | None:
    if path.suffix == ".safetensors":
        return _check_safetensors(path)
    if path.suffix == ".gguf":
        return _check_gguf(path)
    return _check_torch_zip(path, deep)


def _deep_keys(path: Path, expected: set[str]) -> str | None:
    """Load one shard (memory-mapped) and compare its tensor names with the index."""
    from llamavid.errors import require

    torch = require("torch", purpose="`llamavid models verify --deep`")
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                keys = set(f.keys())
        else:
            keys = set(torch.load(path, map_location="cpu", weights_only=True, mmap=True))
    except Exception as exc:  # noqa: BLE001 - any failure means "this file cannot be loaded"
        return f"cannot be loaded ({exc.__class__.__name__}: {str(exc)[:160]})"
    missing = sorted(expected - keys)
    if missing:
        return f"lacks {len(missing)} tensors the index puts in it (e.g. {missing[0]})"
    return None


def verify_model(folder: Path, data_dir: DataDir | str | os.PathLike[str], *, name: str | None = None,
                 hashes: bool = False, deep: bool = False) -> list[Finding]:
    """Check every file of a checkpoint and the shared parts it uses; one finding per file.

    Always: config, index, every shard present with its expected size (from the pull manifest)
    and openable (zip directory / safetensors header, no torch needed), tokenizer, Q-Former
    vocabulary and EVA file found where the loader looks. ``hashes``: sha256 / git blob ids
    recorded at pull time. ``deep``: CRC of every zip entry and the tensor names of each shard
    against the index (loads shards memory-mapped with torch).
    """
    dd = _dd(data_dir)
    out: list[Finding] = []
    ok = lambda f, m="": out.append(Finding("ok", f, m))  # noqa: E731
    warn = lambda f, m: out.append(Finding("warning", f, m))  # noqa: E731
    if not folder.is_dir():
        return [Finding("error", str(folder), "folder does not exist")]
    pullable = bool(name and catalog.get(name))

    def fix_for(problem: str) -> str:
        """`pull` re-fetches missing or wrong-size files; a same-size corrupt file must go first."""
        if not pullable:
            return "replace it with a good copy"
        if problem.startswith(("missing", "truncated", "too large")):
            return f"run `llamavid models pull {name}` to fetch it again"
        return f"delete it, then run `llamavid models pull {name}` to fetch it again"

    def err(file: str, problem: str) -> None:
        out.append(Finding("error", file, f"{problem}; {fix_for(problem)}"))

    manifest = _read_manifest(folder) or {"files": {}}
    expected = manifest["files"]
    info = expected.get(CONFIG, {})
    cfg_problem = download.check_file(folder / CONFIG, info.get("size"), info.get("sha256"),
                                      info.get("git_sha1"), hashes=hashes)
    if cfg_problem is None and not _config(folder):
        cfg_problem = "not valid JSON"
    (err(CONFIG, cfg_problem) if cfg_problem else ok(CONFIG))
    if infer_kind(folder, name) == "speech":
        listed = {f: i for f, i in expected.items() if f != CONFIG}  # config.json: checked above
        required = [f for f in SPEECH_FILES if f != CONFIG and f not in listed]
        _verify_listed(out, folder, listed, required, hashes, err)
        return out
    try:
        index, weight_map, files = weight_index(folder)
    except UserError as exc:
        err(next(n for n in INDEX_FILES if (folder / n).is_file()), str(exc))
        index, weight_map, files = None, {}, []
    checked: set[str] = {CONFIG}
    if index is not None:
        checked.add(index.name)
        info = expected.get(index.name, {})
        problem = download.check_file(index, info.get("size"), info.get("sha256"), info.get("git_sha1"),
                                      hashes=hashes)
        (err(index.name, problem) if problem
         else ok(index.name, f"{len(files)} shards, {len(weight_map)} tensors"))
    if not files:
        err("weights", f"no weight files ({INDEX_FILES[1]} with shards, {SINGLE_FILES[1]}, "
                       f"{SINGLE_FILES[0]} or mm_projector.bin)")
    keys_by_file: dict[str, set[str]] = {}
    for key, file in weight_map.items():
        keys_by_file.setdefault(file, set()).add(key)
    for file in files:
        checked.add(file)
        path = folder / file
        info = expected.get(file, {})
        problem = download.check_file(path, info.get("size"), info.get("sha256"), info.get("git_sha1"),
                                      hashes=hashes)
        if problem is None:
            problem = _check_weights_file(path, deep)
        if problem is None and deep and keys_by_file.get(file):
            problem = _deep_keys(path, keys_by_file[file])
        if problem:
            err(file, problem)
        else:
            ok(file, human_size(path.stat().st_size))
    _verify_listed(out, folder, {f: i for f, i in expected.items() if f not in checked}, [], hashes, err)
    for part in sorted(folder.glob("*.part")):
        warn(part.name, f"unfinished download ({human_size(part.stat().st_size)}); run `llamavid models pull "
                        f"{name or '<name>'}` to resume it, or delete it")
    kind = infer_kind(folder, name)
    if kind != "pretrain" and "tokenizer.model" not in expected:
        if (folder / "tokenizer.model").is_file():
            ok("tokenizer.model")
        elif (folder / "tokenizer.json").is_file():
            ok("tokenizer.json")
        else:
            err("tokenizer.model", "missing: the LLaMA tokenizer ships inside each fine-tuned checkpoint")
    if kind in ("base-llm", "unknown"):
        return out
    _verify_shared(out, folder, dd, weight_map, hashes, deep)
    entry = catalog.get(name) if name else None
    if entry is not None and entry.base_model:
        base = dd.models / entry.base_model
        if (base / CONFIG).is_file():
            ok("base LLM", f"{entry.base_model} installed")
        else:
            warn("base LLM", f"this stage-1 projector needs {entry.base_model}: `llamavid models pull "
                             f"{entry.base_model}`")
    return out


def _verify_listed(out: list[Finding], folder: Path, expected: dict[str, dict], required: list[str],
                   hashes: bool, err: Any) -> None:
    """Files the pull manifest lists (size, hashes), plus ``required`` ones it does not list."""
    for file in required:
        (err(file, "missing") if not (folder / file).is_file() else out.append(Finding("ok", file, "")))
    for file, info in sorted(expected.items()):
        problem = download.check_file(folder / file, info.get("size"), info.get("sha256"), info.get("git_sha1"),
                                      hashes=hashes)
        (err(file, problem) if problem else out.append(Finding("ok", file, "")))


def _verify_shared(out: list[Finding], folder: Path, dd: DataDir, weight_map: dict[str, str], hashes: bool,
                   deep: bool) -> None:
    recorded = _shared_manifest(dd)["files"]
    pull_hint = "run `llamavid models pull NAME` for a catalogue model, or copy it into " + str(shared_dir(dd))
    vocab = find_shared(VOCAB_FILE, folder, dd)
    if vocab is None:
        out.append(Finding("error", VOCAB_FILE, f"not found in the checkpoint folder or {shared_dir(dd)}: the "
                                                f"Q-Former cannot tokenize without it; {pull_hint}"))
    else:
        info = recorded.get(VOCAB_FILE, {}) if vocab.parent == shared_dir(dd) else {}
        problem = download.check_file(vocab, info.get("size"), info.get("sha256"), hashes=hashes)
        if problem is None:
            lines = set(vocab.read_text(encoding="utf-8", errors="replace").splitlines())
            lacking = [t for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]") if t not in lines]
            problem = f"not a BERT vocabulary (lacks {', '.join(lacking)})" if lacking else None
        out.append(Finding("error", str(vocab), f"{problem}; {pull_hint}") if problem
                   else Finding("ok", VOCAB_FILE, str(vocab)))
    eva = find_shared(EVA_FILE, folder, dd)
    if eva is None and (folder / VISION_FILE).is_file():
        out.append(Finding("ok", EVA_FILE, "in vision.safetensors (converted for llama.cpp)"))
        return
    if eva is None:
        has_copy = any(k.startswith("model.vision_tower.vision_tower.") for k in weight_map)
        message = f"not found in the checkpoint folder or {shared_dir(dd)}"
        if has_copy:
            out.append(Finding("warning", EVA_FILE, f"{message}; the bf16 copy inside the shards will be used "
                                                    f"(the reference uses this fp16 file); {pull_hint}"))
        else:
            out.append(Finding("error", EVA_FILE, f"{message} and the shards hold no vision weights; {pull_hint}"))
        return
    info = recorded.get(EVA_FILE, {}) if eva.parent == shared_dir(dd) else {}
    problem = download.check_file(eva, info.get("size"), info.get("sha256"), hashes=hashes) or \
        _check_torch_zip(eva, deep)
    out.append(Finding("error", str(eva), f"{problem}; {pull_hint}") if problem
               else Finding("ok", EVA_FILE, f"{eva} ({human_size(eva.stat().st_size)})"))
