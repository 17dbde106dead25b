"""A conversation's state on disk: its KV cache and what the chat knows, saved and read back whole.

On a CPU the LLM reads a film prompt (7,200 visual rows plus the dialogue) for minutes; reading a
saved cache back takes seconds. A state file is only ever used for the conversation it was made
for: its header carries a key (format, project version, backend and KV type, a fingerprint of the
model's weights, the frame stride and the context the chat runs in, and what the caller adds: the
film's fingerprint, the subtitle track) and a state whose key differs is refused
(:class:`StateMismatch`), so the caller rebuilds. The payload's length and SHA-256 digest are
checked before anything is loaded, so a truncated or damaged file is detected
(:class:`StateCorrupt`) instead of answering from garbage. Both are *wrong* states, which a caller
deletes. A right state that does not fit the memory free now is another matter: :func:`load_chat`
refuses it with :class:`~llamavid.errors.MemoryInUse` (not a :class:`StateError`), and the caller
keeps it for when memory is free. llama.cpp's cache is written into, and read from, a mapping of
the file, never copied into the process's own memory: an hour's 2 GB state is held once, in
llama.cpp's context. Files are
written with :func:`llamavid.storage.atomic_write` (a unique temporary name, fsynced and renamed,
removed when the write fails): a crash or a full disk leaves the old file or none.

Layout: ``MAGIC``, an 8-byte little-endian header length, the JSON header, then the payload: the
backend's cache bytes (safetensors for transformers, ``llama_state_seq_get_data`` for llama.cpp).
"""
from __future__ import annotations

import hashlib
import json
import mmap
import os
from pathlib import Path
from typing import Any

import torch

from llamavid.files import weight_index
from llamavid.fingerprint import fingerprint
from llamavid.runtime.chat import Chat, Turn
from llamavid.runtime.memory import require_free
from llamavid.storage import atomic_write
from llamavid.system import llamavid_version

MAGIC = b"LLAMAVID-STATE\x00\x01"
FORMAT = 2  # 2: SHA-256 payload digest (1: BLAKE2b)
CHUNK = 1 << 22


class StateError(Exception):
    """A saved state cannot be used; the conversation is rebuilt instead."""


class StateMismatch(StateError):
    """The state was made for another model, film, stride, subtitle track, backend or version."""


class StateCorrupt(StateError):
    """The file is truncated or damaged."""


def weights_fingerprint(lv) -> str:
    """Identifies the weights the LLM runs (the GGUF file for llama.cpp, the shards otherwise)."""
    cached = getattr(lv, "_weights_fingerprint", None)
    if cached is not None:
        return cached
    files = [Path(lv.backend.path)] if getattr(lv.backend, "path", None) else \
        [lv.report.folder / name for name in weight_index(lv.report.folder)[2]]
    digest = hashlib.blake2b(digest_size=16)
    for path in sorted(files):
        digest.update(path.name.encode() + b"\0" + fingerprint(path).encode())
    lv._weights_fingerprint = digest.hexdigest()
    return lv._weights_fingerprint


def state_key(chat: Chat, **parts: Any) -> dict[str, Any]:
    """What a state must match to be used: the engine's identity plus the caller's ``parts``."""
    backend = chat.backend
    return {"format": FORMAT, "version": llamavid_version(), "backend": backend.name,
            "kv_type": getattr(backend, "kv_type", str(chat.lv.model.dtype)), "model": weights_fingerprint(chat.lv),
            "stride": chat.stride, "n_ctx": chat.context_length(), **parts}


def _chat_fields(chat: Chat) -> dict[str, Any]:
    s = chat.state
    return {"turns": [{"question": t.question, "answer": t.answer, "answer_ids": t.answer_ids, "stopped": t.stopped}
                      for t in chat.turns],
            "last_token": chat.last_token, "length": s.length, "seen_ids": list(s.seen_ids),
            "pending": list(s.pending),
            "relevance": chat.relevance.tolist() if chat.relevance is not None else None}


def save_chat(chat: Chat, path: str | Path, key: dict[str, Any]) -> int:
    """Write the chat's state atomically; returns the file's size in bytes."""
    path = Path(path)
    fields = _chat_fields(chat)
    if hasattr(chat.backend, "export_cache_into"):
        return _save_mapped(chat, path, key, fields)
    payload = chat.backend.export_cache(chat.state)
    header = _header_bytes(key, fields, len(payload), _digest(payload))
    with atomic_write(path) as fh:
        fh.write(MAGIC + len(header).to_bytes(8, "little") + header)
        view = memoryview(payload)
        for start in range(0, len(view), CHUNK):
            fh.write(view[start:start + CHUNK])
        size = fh.tell()
    return size


def _header_bytes(key: dict[str, Any], fields: dict[str, Any], size: int, digest: str, width: int = 0) -> bytes:
    """The JSON header, padded with spaces to ``width`` (JSON ignores them): a header rewritten after
    its payload keeps its length."""
    header = json.dumps({"key": key, "chat": fields, "payload_bytes": size, "payload_sha256": digest}).encode()
    if width and len(header) > width:
        raise AssertionError("a rewritten state header outgrew its room")
    return header.ljust(width)


def _digest(data) -> str:
    """SHA-256 of the payload, fed in chunks (a slice of a mapping is read without a copy). SHA-256,
    not BLAKE2b: with the SHA extensions of current x86 CPUs it ran at 1.7 GB/s here against 0.7."""
    digest = hashlib.sha256()
    with memoryview(data) as view:
        for start in range(0, view.nbytes, CHUNK):
            with view[start:start + CHUNK] as part:
                digest.update(part)
    return digest.hexdigest()


def _save_mapped(chat: Chat, path: Path, key: dict[str, Any], fields: dict[str, Any]) -> int:
    """llama.cpp's cache written by llama.cpp into the mapped file: held once (by llama.cpp), not
    twice. The header is written first with room to spare and rewritten with the digest after."""
    size = chat.backend.cache_size(chat.state)
    width = len(_header_bytes(key, fields, size, "0" * 64)) + 16
    with atomic_write(path, "w+b") as fh:
        fh.write(MAGIC + width.to_bytes(8, "little") + _header_bytes(key, fields, size, "0" * 64, width))
        fh.flush()
        start = fh.tell()
        if size:
            os.posix_fallocate(fh.fileno(), start, size)  # a full disk fails here, not as SIGBUS in the mapping
            with mmap.mmap(fh.fileno(), start + size) as mapped, memoryview(mapped) as view:
                with view[start:] as payload:
                    written = chat.backend.export_cache_into(chat.state, payload)
                with view[start:start + written] as payload:
                    digest = _digest(payload)
                mapped.flush()
        else:
            written, digest = 0, _digest(b"")
        fh.truncate(start + written)
        fh.seek(len(MAGIC) + 8)
        fh.write(_header_bytes(key, fields, written, digest, width))
        fh.seek(0, os.SEEK_END)
        return fh.tell()


def read_header(path: str | Path) -> dict[str, Any]:
    """The header of a state file (its key and the chat's bookkeeping), without its payload."""
    with open(path, "rb") as fh:
        return _header(fh, Path(path))


def _header(fh, path: Path) -> dict[str, Any]:
    if fh.read(len(MAGIC)) != MAGIC:
        raise StateCorrupt(f"{path}: not a llamavid state file")
    try:
        size = int.from_bytes(fh.read(8), "little")
        return json.loads(fh.read(size))
    except (ValueError, UnicodeDecodeError) as exc:
        raise StateCorrupt(f"{path}: damaged header ({exc})") from exc


def load_chat(chat: Chat, path: str | Path, key: dict[str, Any], what: str = "this conversation's saved state"
              ) -> None:
    """Put a saved state into a new chat (same visual input, same stride) so it continues exactly.

    StateError: the state is wrong (another key, damaged): delete it. MemoryInUse: it is right but
    its cache does not fit the memory free now (``what`` names it in the message): keep it."""
    path = Path(path)
    if chat.turns:
        raise ValueError("load_chat() fills a new chat; this one already has turns")
    with open(path, "rb") as fh:
        header = _header(fh, path)
        if header.get("key") != key:
            saved = header.get("key", {})
            differs = sorted(k for k in {**key, **saved} if saved.get(k) != key.get(k))
            raise StateMismatch(f"{path}: made with another {', '.join(differs)}")
        size, start = header.get("payload_bytes"), fh.tell()
        stored = path.stat().st_size - start
        if stored != size:  # known without reading it: a truncated state is wrong whatever memory is free
            raise StateCorrupt(f"{path}: truncated ({stored} of {size} payload bytes)")
        if hasattr(chat.backend, "export_cache_into") and size:
            _load_mapped(chat, fh, start, header, path)
        else:
            require_free(size, chat.backend.free_memory(), what)  # before the payload is read into memory
            payload = fh.read()
            _check_digest(payload, header, path)
            _import(chat, payload, header, path)
    fields = header["chat"]
    chat.state.seen_ids[:] = fields["seen_ids"]
    chat.state.pending = list(fields["pending"])
    chat.last_token = fields["last_token"]
    chat.turns = [Turn(t["question"], t["answer"], len(t["answer_ids"]), t["stopped"], list(t["answer_ids"]))
                  for t in fields["turns"]]
    if fields["relevance"] is not None:
        chat.relevance = torch.tensor(fields["relevance"])


def _check_digest(payload, header: dict[str, Any], path: Path) -> None:
    if _digest(payload) != header.get("payload_sha256"):
        raise StateCorrupt(f"{path}: the payload does not match its digest")


def _import(chat: Chat, payload, header: dict[str, Any], path: Path) -> None:
    try:
        chat.backend.import_cache(chat.state, payload, header["chat"]["length"])
    except ValueError as exc:  # the backend could not take the bytes
        raise StateCorrupt(f"{path}: {exc}") from exc


def _load_mapped(chat: Chat, fh, start: int, header: dict[str, Any], path: Path) -> None:
    """Read the payload through a private mapping of the file: its pages are the page cache's, so a
    2 GB cache costs no anonymous memory beside the context llama.cpp already allocated (whose size
    the film's plan checked against the memory free when the context was made)."""
    with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_COPY) as mapped, memoryview(mapped) as view:
        with view[start:] as payload:
            _check_digest(payload, header, path)
            _import(chat, payload, header, path)
