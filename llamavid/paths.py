"""Where llamavid keeps its state: one data folder, laid out the same everywhere.

Everything the project writes or looks up (model weights, the feature cache, the
library database, settings, logs) lives under a single root so a user can move,
back up or delete it in one go, and tests can point it at a temporary folder.

The root is chosen, first match wins, from:

1. the ``--data-dir`` option of the command line,
2. the ``LLAMAVID_DATA_DIR`` environment variable,
3. the platform's user data folder for "llamavid" (``platformdirs``), e.g.
   ``~/.local/share/llamavid`` on Linux.

Layout::

    <root>/models/<name>/config.json   model checkpoints (one folder each, may be symlinks)
    <root>/cache/features/             extracted video features
    <root>/library.db                  the movie library (SQLite)
    <root>/settings.json               user settings
    <root>/logs/                       log files
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from llamavid.errors import UserError

__all__ = [
    "APP_NAME",
    "ENV_VAR",
    "DataDir",
    "InstalledModel",
    "default_data_dir",
    "resolve_data_dir",
    "installed_models",
]

APP_NAME = "llamavid"
ENV_VAR = "LLAMAVID_DATA_DIR"


def default_data_dir() -> Path:
    """The platform's per-user data folder for llamavid (no env var, no option)."""
    import platformdirs  # small, but only needed when no folder was given

    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def resolve_data_dir(
    option: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Path:
    """Pick the data folder: ``--data-dir`` > ``$LLAMAVID_DATA_DIR`` > platform default.

    The result is absolute (``~`` expanded) so that it means the same thing to every
    part of the program, whatever the working directory. An empty option or variable
    counts as unset. The folder is *not* created here; see :meth:`DataDir.create`.

    Raises:
        UserError: the chosen path exists but is not a folder.
    """
    env = os.environ if environ is None else environ
    if option is not None and str(option) != "":
        chosen, source = Path(option), "--data-dir"
    elif env.get(ENV_VAR):
        chosen, source = Path(env[ENV_VAR]), ENV_VAR
    else:
        chosen, source = default_data_dir(), "the default data folder"
    path = Path(os.path.abspath(chosen.expanduser()))
    if path.exists() and not path.is_dir():
        raise UserError(
            f"{source} points to {path}, which is a file, not a folder; "
            f"pass --data-dir with a folder (it is created if missing) or change ${ENV_VAR}."
        )
    return path


@dataclass(frozen=True)
class DataDir:
    """The layout of one data folder; build it with ``DataDir(args.data_dir)``."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def models(self) -> Path:
        """One sub-folder per model checkpoint (``models/<name>/config.json``)."""
        return self.root / "models"

    @property
    def cache(self) -> Path:
        """Things that can be rebuilt from the movies and models; safe to delete."""
        return self.root / "cache"

    @property
    def features(self) -> Path:
        """Extracted per-movie video features (large; part of the cache)."""
        return self.cache / "features"

    @property
    def database(self) -> Path:
        """The SQLite library database."""
        return self.root / "library.db"

    @property
    def settings(self) -> Path:
        """User settings (JSON)."""
        return self.root / "settings.json"

    @property
    def logs(self) -> Path:
        """Log files."""
        return self.root / "logs"

    def folders(self) -> dict[str, Path]:
        """Every path of the layout by name, for display (``doctor``, the app)."""
        return {
            "root": self.root,
            "models": self.models,
            "features": self.features,
            "database": self.database,
            "settings": self.settings,
            "logs": self.logs,
        }

    def create(self) -> DataDir:
        """Create the folders of the layout (files are created by their owners).

        Raises:
            UserError: a folder cannot be created (read-only disk, permissions...).
        """
        for folder in (self.root, self.models, self.features, self.logs):
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise UserError(
                    f"cannot create the data folder {folder}: {exc.strerror or exc}; "
                    f"pass --data-dir with a writable folder or set ${ENV_VAR}."
                ) from exc
        return self


@dataclass(frozen=True)
class InstalledModel:
    """A model checkpoint folder found under ``<data>/models``."""

    name: str
    path: Path
    size_bytes: int

    @property
    def size_human(self) -> str:
        """The size as a person reads it ("13.5 GB")."""
        return human_size(self.size_bytes)


def human_size(n: int | float) -> str:
    """Format a byte count with decimal units, as file managers and the hub show them."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def _folder_size(folder: Path) -> int:
    """Total size of the files in ``folder``, following symlinks.

    Hugging Face downloads are often symlinks into a blob store, so sizes are taken from
    the link targets; broken links count as 0 instead of failing the whole listing.
    """
    total = 0
    for dirpath, _dirnames, filenames in os.walk(folder, followlinks=True):
        for name in filenames:
            try:
                total += os.stat(os.path.join(dirpath, name)).st_size
            except OSError:
                continue
    return total


def installed_models(data_dir: DataDir | str | os.PathLike[str]) -> list[InstalledModel]:
    """The model folders under ``<data>/models``: each direct sub-folder holding a ``config.json``.

    Symlinked folders count (users link a checkpoint they keep elsewhere). The list is
    sorted by name; a missing ``models`` folder simply gives an empty list.
    """
    dd = data_dir if isinstance(data_dir, DataDir) else DataDir(Path(data_dir))
    if not dd.models.is_dir():
        return []
    found = []
    for entry in sorted(dd.models.iterdir(), key=lambda p: p.name.lower()):
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        if (entry / "config.json").is_file():
            found.append(InstalledModel(name=entry.name, path=entry, size_bytes=_folder_size(entry)))
    return found
