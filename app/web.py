"""``llamavid web``: the local web UI (gradio), bound to 127.0.0.1 by default.

It is both a subcommand module (HELP, add_arguments, run) and the web front end
that ``llamavid app`` falls back to when there is no display. What the page shows
comes from :mod:`app.status`, shared with the desktop window. gradio is imported
only when a server starts, to keep ``llamavid --help`` fast.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import webbrowser
from pathlib import Path
from typing import Any

from app import status as st
from llamavid.errors import UserError, require

__all__ = ["HELP", "DEFAULT_HOST", "DEFAULT_PORT", "add_arguments", "add_server_arguments", "build_ui", "start", "run"]

HELP = "serve the web UI on this computer (http://127.0.0.1:7860 by default)"

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860


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
        default=DEFAULT_HOST,
        help="address the web UI listens on; 127.0.0.1 keeps it private to this computer, "
        "0.0.0.0 opens it to your network (no password!)",
    )
    parser.add_argument("--port", type=_port, default=DEFAULT_PORT, help="port of the web UI; 0 picks a free one")
    parser.add_argument("--open-browser", action="store_true", help="open the web UI in the default browser")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_server_arguments(parser)


def _free_port(host: str, port: int) -> int:
    """Return ``port`` if it can be bound on ``host`` (a free one for 0), else raise a UserError.

    Checked up front because gradio's own message for a busy port does not say what to do.
    """
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, port))
            return int(s.getsockname()[1])
    except OSError as exc:
        if port == 0:
            raise UserError(f"cannot listen on {host}: {exc.strerror or exc}; pass --host 127.0.0.1") from exc
        raise UserError(
            f"port {port} on {host} is not available ({exc.strerror or exc}); another llamavid may be running. "
            f"Pass --port with another number, or --port 0 for any free port."
        ) from exc


def _import_gradio() -> Any:
    # No usage statistics or version checks leave the machine: this is a local-first app.
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    return require("gradio", purpose="the web UI")


def _theme(gr: Any) -> Any:
    """The default theme with system fonts: the stock one loads fonts from Google, which a
    local-first app should not do (and which stalls the page when offline)."""
    return gr.themes.Default(
        font=["system-ui", "Segoe UI", "Helvetica", "Arial", "sans-serif"],
        font_mono=["ui-monospace", "Consolas", "monospace"],
    )


def build_ui(data_dir: Path) -> Any:
    """The gradio Blocks of the app shell; the status is re-read on every page load and on Refresh."""
    gr = _import_gradio()

    def current() -> str:
        return st.status_markdown(st.collect_status(data_dir))

    with gr.Blocks(title=f"{st.TITLE} - movie assistant") as demo:
        gr.Markdown(f"# {st.TITLE}", elem_id="title")
        status_md = gr.Markdown(current(), elem_id="status")
        refresh = gr.Button("Refresh", elem_id="refresh")
        refresh.click(current, outputs=status_md)
        demo.load(current, outputs=status_md)
    return demo


def start(data_dir: Path, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> tuple[Any, str]:
    """Start the web UI in background threads; returns (the gradio app, its URL).

    The caller stops it with ``app.close()``; ``run`` instead blocks until Ctrl+C.
    """
    port = _free_port(host, port)
    demo = build_ui(data_dir)
    gr = _import_gradio()
    try:
        demo.launch(
            server_name=host,
            server_port=port,
            prevent_thread_lock=True,
            share=False,
            quiet=True,
            show_error=True,
            theme=_theme(gr),
        )
    except OSError as exc:
        raise UserError(f"cannot start the web UI on {host}:{port}: {exc}; pass --port 0 for any free port") from exc
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "") else host
    url = f"http://{shown_host}:{port}/"
    return demo, url


def serve(data_dir: Path, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, open_browser: bool = False) -> int:
    """Run the web UI until Ctrl+C (or SIGTERM)."""
    demo, url = start(data_dir, host, port)
    print(f"llamavid web UI running at {url}  (data folder: {data_dir}; press Ctrl+C to stop)", flush=True)
    if open_browser:
        webbrowser.open(url)
    try:
        demo.block_thread()
    except KeyboardInterrupt:
        pass
    finally:
        demo.close()
    return 0


def run(args: argparse.Namespace) -> int:
    return serve(args.data_dir, args.host, args.port, args.open_browser)


if __name__ == "__main__":  # python -m app.web, handy when debugging the page alone
    from llamavid.cli import main

    sys.exit(main(["web", *sys.argv[1:]]))
