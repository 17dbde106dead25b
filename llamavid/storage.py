"""Writing files safely and talking about their sizes, the same way everywhere.

Downloads, the feature cache, the model registry and settings all need the same three things:
a free-space check before a large write (with a message that says how much is missing), a
folder fsync so a rename survives a power cut, and atomic writes (:func:`atomic_write`, and
:func:`write_json_atomic` on top of it): the data goes to a temporary file of a unique name beside
the target, is fsynced and renamed over it, so a crash leaves the old file or the new one, never
half of one; two writers never share a temporary file; a failed write (a full disk, a memory
error, an interrupt) removes its temporary file and leaves the old file as it was.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from llamavid.errors import UserError


def human_size(n: int | float) -> str:
    """A byte count with decimal units, as file managers and the hub show them (1.5 GB)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def existing_ancestor(path: Path) -> Path:
    """The nearest folder of ``path`` that exists (where its free space is measured)."""
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def free_bytes(folder: Path) -> int:
    return shutil.disk_usage(existing_ancestor(folder)).free


def check_free_space(folder: Path, needed: int, what: str,
                     advice: str = "free some space, or move the data folder (--data-dir DIR or $LLAMAVID_DATA_DIR)",
                     error: type[Exception] = UserError) -> None:
    """Raise ``error`` before writing ``needed`` more bytes into ``folder`` if they would not fit."""
    free = free_bytes(folder)
    if needed > free:
        raise error(f"not enough disk space for {what}: it needs {human_size(needed)} more, but only "
                    f"{human_size(free)} is free on the disk of {existing_ancestor(folder)}; {advice}")


def fsync_dir(folder: Path) -> None:
    """Make a rename or a new file in ``folder`` durable (no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0o022)  # read at import (one thread): os.umask can only be read by setting it
    os.umask(mask)
    return mask


_UMASK = _umask()


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb", encoding: str | None = None) -> Iterator[IO]:
    """Write ``path`` whole or not at all: yields a file open on a new temporary file beside it
    (``<name>.<random>.tmp``, so concurrent writers never share one), then fsyncs it, renames it over
    ``path`` and fsyncs the folder. On any failure, an interrupt or a ``MemoryError`` included, the
    temporary file is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with contextlib.suppress(OSError):  # mkstemp makes it 0600; a plain open() would not
            os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, mode, encoding=encoding) as fh:
            fd = -1  # the file object owns it now
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON so that a crash leaves the old file or the new one, never half of one."""
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"  # a value that cannot be written fails first
    with atomic_write(path, "w", encoding="utf-8") as fh:
        fh.write(text)
