"""The PySide6 desktop app: the library, a player and the chat about the open film.

This package imports Qt, so only import it once a window is really wanted (``cli.app``
does so inside ``run``). ``docs/desktop.md`` describes the window and how its work is spread over
threads and child processes; :mod:`app.desktop.window` holds the window itself.
"""
from __future__ import annotations

from app.desktop.window import MainWindow, run_desktop

__all__ = ["MainWindow", "run_desktop"]
