"""``llamavid app``: open the desktop window, or the web UI where no window can open.

Qt aborts the whole process (it does not raise) when its platform plugin cannot
start, e.g. with DISPLAY set to a dead X server or missing xcb libraries. So
before opening the window we (1) look for a display in the environment and
(2) start a throw-away Qt application in a child process; if either fails the
web UI is served instead, with a one-line note saying why.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Mapping

from app import web
from cli.web import add_server_arguments, server_options

__all__ = ["HELP", "add_arguments", "display_problem", "qt_problem", "run"]

HELP = "open the desktop app (falls back to the local web UI where there is no display)"

# Creating a QApplication is what fails (or aborts) without a usable display.
_QT_PROBE = (
    "from PySide6.QtWidgets import QApplication; app = QApplication(['llamavid-probe']); print(app.platformName())"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--web", action="store_true", help="skip the desktop window and serve the web UI")
    add_server_arguments(parser)


def display_problem(environ: Mapping[str, str] | None = None, platform: str | None = None) -> str | None:
    """Why no desktop window can be shown, judged from the environment alone; None if it looks fine."""
    env = os.environ if environ is None else environ
    plat = sys.platform if platform is None else platform
    qpa = env.get("QT_QPA_PLATFORM", "").split(":", 1)[0]
    if qpa in ("offscreen", "minimal"):
        return f"QT_QPA_PLATFORM={qpa} shows no window"
    if plat.startswith(("win", "darwin", "cygwin")):
        return None
    if not env.get("DISPLAY") and not env.get("WAYLAND_DISPLAY"):
        return "no display found (DISPLAY and WAYLAND_DISPLAY are unset)"
    return None


def qt_problem(timeout: float = 30.0) -> str | None:
    """Try to start Qt in a child process; returns why it failed, or None when it works."""
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _QT_PROBE], capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return f"the desktop toolkit (Qt) did not start within {timeout:.0f} s"
    if proc.returncode == 0:
        return None
    lines = [line.strip() for line in (proc.stderr or "").splitlines() if line.strip()]
    # Qt prints several lines, some misleading (it blames xcb-cursor for any xcb failure):
    # prefer the most specific one; an ImportError's message is the last line.
    hint = lines[-1] if lines else ""
    for marker in ("could not connect to display", "Could not load the Qt platform plugin", "platform plugin"):
        found = [line for line in lines if marker in line]
        if found:
            hint = found[0].removeprefix("qt.qpa.xcb: ")
            break
    return f"the desktop toolkit (Qt) cannot start: {hint or f'exit status {proc.returncode}'}"


def run(args: argparse.Namespace) -> int:
    problem = None if args.web else (display_problem() or qt_problem())
    if args.web or problem:
        if problem:
            print(f"llamavid: {problem}; starting the web UI instead.", file=sys.stderr, flush=True)
        return web.serve(args.data_dir, args.host, args.port, args.open_browser, **server_options(args))
    from app.desktop import run_desktop  # Qt: only once a window can open (see the module docstring)

    return run_desktop(args.data_dir)
