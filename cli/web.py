"""``llamavid web``: the web UI and the OpenAI-compatible API on this computer (:mod:`app.server`),
bound to 127.0.0.1 unless told otherwise with a key."""
from __future__ import annotations

import argparse

from app import web
from app.server.settings import API_KEY_ENV, api_key_from_env

HELP = "serve the web UI and the OpenAI-compatible API on this computer (http://127.0.0.1:7860 by default)"


def _port(text: str) -> int:
    """argparse type: a TCP port, 0 meaning 'any free port'."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port number (use 1-65535, or 0 for any free port)")
    return value


def add_server_arguments(parser: argparse.ArgumentParser, browser: bool = True) -> None:
    """--host/--port/--api-key/--cors-origin(/--open-browser), shared by ``web``, ``serve`` and ``app``."""
    parser.add_argument(
        "--host", default=web.DEFAULT_HOST,
        help="address to listen on; 127.0.0.1 keeps it private to this computer, any other (0.0.0.0: every "
             "network) needs --api-key")
    parser.add_argument("--port", type=_port, default=web.DEFAULT_PORT, help="port to listen on; 0 picks a free one")
    parser.add_argument(
        "--api-key", metavar="KEY", default=None,
        help=f"key every request must carry ('Authorization: Bearer KEY'; the web UI asks for it once); "
             f"default ${API_KEY_ENV}")
    parser.add_argument("--cors-origin", metavar="URL", action="append", default=[],
                        help="a web page origin allowed to call the API from a browser (repeat for several); "
                             "none by default")
    parser.add_argument(
        "--allow-add-folders", action=argparse.BooleanOptionalAction, default=None,
        help="let the web UI add library folders (whose films every client may then play); default: on for "
             "127.0.0.1 without a key, off with --api-key or another --host")
    if browser:
        parser.add_argument("--open-browser", action="store_true", help="open the web UI in the default browser")


def add_model_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", "-m", default=None,
                        help="installed model name or checkpoint folder (default: the one in settings.json, "
                             "else the first installed)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_argument(parser)
    add_server_arguments(parser)


def server_options(args: argparse.Namespace) -> dict:
    """The keyword arguments of :func:`app.web.serve` from the parsed options."""
    return {"api_key": args.api_key or api_key_from_env(), "cors_origins": tuple(args.cors_origin),
            "model": getattr(args, "model", None), "allow_add_folders": getattr(args, "allow_add_folders", None)}


def run(args: argparse.Namespace) -> int:
    return web.serve(args.data_dir, args.host, args.port, args.open_browser, **server_options(args))
