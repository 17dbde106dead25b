"""The local web UI and API, as ``llamavid web`` and ``llamavid app``'s fallback start them.

The server itself lives in :mod:`app.server` (``docs/server.md``); this module keeps the small
entry points the commands call. Nothing heavy is imported here: ``llamavid --help`` imports it.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from app.server.settings import DEFAULT_HOST, DEFAULT_PORT, ServerSettings

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "serve", "settings_for", "start"]


def settings_for(data_dir: Path, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, open_browser: bool = False,
                 api_key: str | None = None, model: str | None = None, cors_origins: Sequence[str] = (),
                 ui: bool = True, allow_add_folders: bool | None = None) -> ServerSettings:
    return ServerSettings(data_dir=Path(data_dir), model=model, host=host, port=port, api_key=api_key,
                          cors_origins=tuple(cors_origins), ui=ui, open_browser=open_browser,
                          allow_add_folders=allow_add_folders)


def start(data_dir: Path, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, **options: Any) -> Any:
    """Start the web UI and API in background threads; returns the running server (``.url``,
    ``.stop()``). Refuses a non-loopback host without ``api_key``."""
    settings = settings_for(data_dir, host, port, **options)
    settings.check_exposure()  # before importing torch and the rest: a refusal is one quick line
    from app.server.app import start as start_server  # FastAPI, uvicorn, gradio: only when a server starts

    return start_server(settings)


def serve(data_dir: Path, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, open_browser: bool = False,
          **options: Any) -> int:
    """Run the web UI and API until Ctrl+C (or SIGTERM)."""
    settings = settings_for(data_dir, host, port, open_browser, **options)
    settings.check_exposure()
    from app.server.app import serve as serve_server  # FastAPI, uvicorn, gradio: only when a server starts

    return serve_server(settings)
