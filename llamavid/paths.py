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
    "default_data_dir",
    "resolve_data_dir",
]

APP_NAME = "llamavid"
ENV_VAR = "LLAMAVID_DATA_DIR"


def default_data_dir() -> Path:
    """The platform's per-user data folder for llamavid (no env var, no option)."""
    import platformdirs  # not at the top: `llamavid --help` imports no third-party package (tests/test_cli.py)

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
