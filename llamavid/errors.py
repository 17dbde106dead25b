"""Errors a person can fix, and the one way the command line reports them.

Library code raises :class:`UserError` for problems caused by input or setup (a bad
path, a missing optional package, a busy port). ``llamavid.cli.main`` catches it and
prints ``llamavid: error: <message>`` on one line with no traceback, so the message
itself must say what went wrong *and* what to do about it. Bugs stay ordinary
exceptions so their tracebacks are kept.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["UserError", "require"]


class UserError(Exception):
    """A problem the user can fix; the message is shown as is, without a traceback."""


def require(module: str, package: str | None = None, purpose: str = "this command") -> ModuleType:
    """Import an optional dependency or raise a :class:`UserError` naming the package to install.

    Heavy or optional parts (torch, PySide6, gradio, llama-cpp-python...) are imported
    lazily inside ``run`` functions so that ``llamavid --help`` stays fast; this turns a
    failed import there into one actionable sentence instead of a traceback.

    Args:
        module: the module to import, e.g. ``"PySide6.QtWidgets"``.
        package: the pip distribution that provides it, e.g. ``"PySide6-Essentials"``;
            defaults to the top-level module name.
        purpose: what needs it, used in the message ("the desktop app").
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # also covers a shared library that fails to load
        pkg = package or module.split(".")[0]
        raise UserError(
            f"{purpose} needs the Python package {pkg!r}, which failed to import ({exc}). "
            f"Install it with: pip install {pkg}  (or re-run ./run.sh, which installs everything); "
            f"`llamavid doctor` lists what is missing."
        ) from exc
