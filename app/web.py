"""The local web UI (gradio), bound to 127.0.0.1 by default: ``llamavid web``, and what
``llamavid app`` falls back to when there is no display (the commands live in :mod:`llamavid.cli.web`
and :mod:`llamavid.cli.app`). What the page shows comes from :mod:`app.status`, shared with the
desktop window. gradio is imported only when a server starts: ``llamavid --help`` imports this module.
"""

from __future__ import annotations

import os
import socket
import webbrowser
from pathlib import Path
from typing import Any

from app import status as st
from llamavid.errors import UserError, require

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "build_ui", "serve", "start"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860


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
