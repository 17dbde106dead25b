"""Errors a person can fix, typed so that every front end can word them its own way.

Library code raises :class:`UserError` (or one of its kinds below) for problems caused by
input or setup: a bad path, a missing optional package, a busy port, a video that cannot be
read, a prompt longer than the context. The message itself says what went wrong *and* what
to do about it. The command line (``cli``) prints it as one line
``llamavid: error: <message>`` without a traceback; an HTTP API maps the kinds to status
codes, a window to a dialog. Bugs stay ordinary exceptions so their tracebacks are kept.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["BadMedia", "Cancelled", "CheckpointError", "ContextOverflow", "MemoryInUse", "NotEnoughMemory",
           "UserError", "error_kind", "error_message", "require"]


class UserError(Exception):
    """A problem the user can fix; the message is shown as is, without a traceback.

    ``kind`` names the problem for a front end that words it its own way: the chat's ``error``
    events carry it, and the server maps it to an HTTP status in one table
    (``app.server.errors.KIND_STATUS``). A new kind of error sets its own ``kind``.
    """

    kind = "user_error"


class CheckpointError(UserError, ValueError):
    """A checkpoint file is missing, unreadable or does not fit the model; the message names it."""

    kind = "model"


class BadMedia(UserError):
    """An image or video cannot be used (empty, truncated, no video stream, unknown codec).

    Retrying cannot help: the indexer fails the film at once, a chat refuses the file.
    """

    kind = "bad_media"


class ContextOverflow(UserError, ValueError):
    """A prompt does not fit the model's context window (``needed`` > ``limit`` tokens)."""

    kind = "context_overflow"

    def __init__(self, message: str, needed: int = 0, limit: int = 0):
        super().__init__(message)
        self.needed, self.limit = needed, limit


class NotEnoughMemory(UserError, MemoryError):
    """The request would not fit the free memory of the device; checked before any work starts."""

    kind = "not_enough_memory"


class MemoryInUse(NotEnoughMemory):
    """What was asked fits this machine but not the memory free *now* (a kept conversation's saved
    state, the context its film was planned with): nothing is dropped, the question is refused and
    the message says how much is needed, how much is free and what to free; asking again once
    memory is free works (``needed`` and ``available`` in bytes)."""

    kind = "memory_in_use"

    def __init__(self, message: str, needed: int = 0, available: int = 0):
        super().__init__(message)
        self.needed, self.available = needed, available


class Cancelled(Exception):
    """The caller stopped the work (a Stop button, a closed connection, Ctrl-C).

    Not a :class:`UserError`: nothing went wrong, and a front end says so in its own words.
    """

    kind = "cancelled"


def error_kind(exc: BaseException) -> str:
    """The kind a front end words ``exc`` by: its own ``kind``, ``not_found`` for a lookup of
    something that does not exist (a ``KeyError``), else ``internal`` (a bug)."""
    kind = getattr(type(exc), "kind", None)
    if isinstance(kind, str):
        return kind
    return "not_found" if isinstance(exc, KeyError) else "internal"


def error_message(exc: BaseException) -> str:
    """The message to show: a ``KeyError``'s text without its quotes, or the class name when empty."""
    return str(exc).strip("'\"") or exc.__class__.__name__


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
