"""``llamavid mcp``: the library and its chat as MCP tools over stdio (list films, search quotes, ask
about a film), for Claude Desktop, editors and other MCP clients; :mod:`app.mcp_server`, docs/mcp.md.

An MCP client starts this command itself and speaks JSON-RPC on its stdin and stdout: nothing else
may be printed there (logs go to stderr)."""
from __future__ import annotations

import argparse

from cli.options import add_load_arguments, load_options_from
from cli.web import add_model_argument
from llamavid.errors import UserError, require

HELP = "serve the library to MCP clients (Claude Desktop, editors...) over stdio: list films, search, ask_film"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_argument(parser)
    parser.add_argument("--language", metavar="XX",
                        help="subtitle language to prefer (two letters; default: settings.json's, else the locale's)")
    parser.add_argument("--max-tokens", type=int, metavar="N",
                        help="longest answer in tokens (default: settings.json's max_new_tokens, else 512)")
    parser.add_argument("--temperature", type=float,
                        help="0 = greedy (default: settings.json's temperature, else 0.2)")
    parser.add_argument("--preload", action="store_true",
                        help="load the model when the server starts, not on the first question")
    add_load_arguments(parser)


def run(args: argparse.Namespace) -> int:
    if args.max_tokens is not None and args.max_tokens < 1:
        raise UserError("--max-tokens must be 1 or more")
    if args.temperature is not None and not 0 <= args.temperature <= 2:
        raise UserError("--temperature must be from 0 (greedy) to 2")
    load = load_options_from(args)
    require("mcp", purpose="`llamavid mcp`")
    from app.mcp_server import serve  # the SDK, torch and the chat service: only when the server starts

    return serve(args.data_dir, model=args.model, load=load, language=args.language, max_tokens=args.max_tokens,
                 temperature=args.temperature, preload=args.preload)
