"""``llamavid serve``: the OpenAI-compatible API alone (no web UI), bound to 127.0.0.1 unless told
otherwise with a key. ``docs/server.md`` lists the routes and the content parts (images, short
videos, films of the library)."""
from __future__ import annotations

import argparse

from app import web
from cli.web import add_model_argument, add_server_arguments, server_options

HELP = "serve the OpenAI-compatible API (no web UI) on this computer (http://127.0.0.1:7860/v1 by default)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_argument(parser)
    add_server_arguments(parser, browser=False)


def run(args: argparse.Namespace) -> int:
    settings = web.settings_for(args.data_dir, args.host, args.port, ui=False, **server_options(args))
    settings.check_exposure()  # before importing torch and the rest: a refusal is one quick line
    from app.server.app import serve  # FastAPI, uvicorn, torch: only when the server starts

    return serve(settings, what="API")
