"""Files bundled with llamavid (configs, icons, small data), installed as package data.

Use :func:`asset_path` rather than paths relative to the source tree, so the same
code finds the files in a checkout, an editable install and a wheel install.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["ASSETS_DIR", "asset_path"]

#: The folder of this package; bundled files live below it.
ASSETS_DIR = Path(__file__).resolve().parent


def asset_path(*parts: str) -> Path:
    """Path of a bundled file, e.g. ``asset_path("icons", "llamavid.svg")``.

    Raises:
        FileNotFoundError: no such bundled file (a packaging bug, not a user error).
    """
    path = ASSETS_DIR.joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(f"bundled file {'/'.join(parts)} is missing from {ASSETS_DIR}")
    return path
