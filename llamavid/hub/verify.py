"""``llamavid models verify``: every file of a checkpoint and the shared parts it uses, one finding each.

Structure checks need no torch (zip directories, safetensors headers, GGUF tables); ``--deep``
loads shards memory-mapped to compare tensor names with the index.
"""
from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llamavid.errors import UserError, require
from llamavid.files import (
    CONFIG,
    EVA_FILE,
    INDEX_FILES,
    SINGLE_FILES,
    SPEECH_FILES,
    VISION_FILE,
    VOCAB_FILE,
    weight_index,
)
from llamavid.hub import catalog, download
from llamavid.hub.installed import (
    config_of,
    data_dir_of,
    find_shared,
    infer_kind,
    missing_scene_files,
    read_manifest,
    shared_dir,
    shared_manifest,
)
from llamavid.paths import DataDir
from llamavid.storage import human_size


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
        import gguf  # not at the top: `llamavid --help` imports this module, and no third-party package

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
    torch = require("torch", purpose="`llamavid models verify --deep`")
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open  # third-party: not at `llamavid --help` time (see gguf above)

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
    dd = data_dir_of(data_dir)
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

    manifest = read_manifest(folder) or {"files": {}}
    expected = manifest["files"]
    info = expected.get(CONFIG, {})
    cfg_problem = download.check_file(folder / CONFIG, info.get("size"), info.get("sha256"),
                                      info.get("git_sha1"), hashes=hashes)
    if cfg_problem is None and not config_of(folder):
        cfg_problem = "not valid JSON"
    (err(CONFIG, cfg_problem) if cfg_problem else ok(CONFIG))
    if infer_kind(folder, name) == "speech":
        listed = {f: i for f, i in expected.items() if f != CONFIG}  # config.json: checked above
        required = [f for f in SPEECH_FILES if f != CONFIG and f not in listed]
        _verify_listed(out, folder, listed, required, hashes, err)
        return out
    if infer_kind(folder, name) == "scenes":  # its own files: no LLaMA tokenizer, no shared parts
        listed = {f: i for f, i in expected.items() if f != CONFIG}
        _verify_listed(out, folder, listed, [], hashes, err)
        for file in (*SINGLE_FILES, "tokenizer.json", "vocab.json", "merges.txt"):
            if file not in listed and (folder / file).is_file():
                ok(file)
        for problem in missing_scene_files(folder):
            err(problem, "missing")
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
    recorded = shared_manifest(dd)["files"]
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
