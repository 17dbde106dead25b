"""``llamavid web``: serve the local web UI (:mod:`app.web`), bound to 127.0.0.1 by default."""
from __future__ import annotations

import argparse

from app import web

HELP = "serve the web UI on this computer (http://127.0.0.1:7860 by default)"


def _port(text: str) -> int:
    """argparse type: a TCP port, 0 meaning 'any free port'."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port number (use 1-65535, or 0 for any free port)")
    return value


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """--host/--port/--open-browser, shared by ``llamavid web`` and ``llamavid app``."""
    parser.add_argument(
        "--host",
        default=web.DEFAULT_HOST,
        help="address the web UI listens on; 127.0.0.1 keeps it private to this computer, "
        "0.0.0.0 opens it to your network (no password!)",
    )
    parser.add_argument("--port", type=_port, default=web.DEFAULT_PORT,
                        help="port of the web UI; 0 picks a free one")
    parser.add_argument("--open-browser", action="store_true", help="open the web UI in the default browser")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_server_arguments(parser)


def run(args: argparse.Namespace) -> int:
    return web.serve(args.data_dir, args.host, args.port, args.open_browser)
