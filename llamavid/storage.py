"""Writing files safely and talking about their sizes, the same way everywhere.

Downloads, the feature cache, the model registry and settings all need the same three things:
a free-space check before a large write (with a message that says how much is missing), a
folder fsync so a rename survives a power cut, and an atomic JSON write.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

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


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON so that a crash leaves the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)
