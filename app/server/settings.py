"""What one server is started with, and the rule that keeps it private by default.

:class:`ServerSettings` is what ``llamavid serve`` and ``llamavid web`` (and ``llamavid app``'s web
fallback) build from their options, and what :func:`app.server.app.create_app` takes, so a test
builds an app with no command line and no port. This module imports nothing heavy: the command
modules import it when ``llamavid --help`` runs.
"""
from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

from llamavid.errors import UserError
from llamavid.runtime.options import LoadOptions

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
API_KEY_ENV = "LLAMAVID_API_KEY"


@dataclass
class ServerSettings:
    """One server: where its data is, which model answers, who may connect and how much they may send."""

    data_dir: Path
    model: str | None = None  # None: <data>/settings.json's model, else the first installed one
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    api_key: str | None = None  # Bearer key for every route (API and web UI); required off loopback
    cors_origins: tuple[str, ...] = ()  # browser origins allowed to call the API from other pages
    ui: bool = True  # mount the web UI (``llamavid web``); False: the API alone (``llamavid serve``)
    max_upload_bytes: int = 64 * 2**20  # a request body (images and videos as data URLs) or an upload
    max_video_frames: int = 180  # a short video is sampled at 1 fps, at most this many frames kept
    max_waiting: int = 32  # questions waiting for the model; more are refused with 429
    # how load_model loads the model; settings.json's backend, bits and device where these keep the defaults
    load_options: LoadOptions = field(default_factory=LoadOptions)
    language: str | None = None  # the subtitle language; None: settings.json, else the locale's
    open_browser: bool = False
    # the web UI may add library folders (``--allow-add-folders``); None: only on loopback without a key,
    # where every client is this computer's user; a folder added is a folder whose films anyone with the
    # key may download, so a server open to others adds none unless its owner says so here
    allow_add_folders: bool | None = None

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir)
        self.cors_origins = tuple(self.cors_origins)
        if self.allow_add_folders is None:
            self.allow_add_folders = is_loopback(self.host) and not self.api_key
        if self.api_key is not None and not self.api_key.strip():
            raise UserError("--api-key is empty; give a key of at least 8 characters")
        if self.api_key is not None and len(self.api_key) < 8:
            raise UserError("--api-key is too short; give a key of at least 8 characters")

    def check_exposure(self) -> None:
        """Refuse to listen beyond this computer without a key (see :func:`is_loopback`)."""
        if not is_loopback(self.host) and not self.api_key:
            raise UserError(
                f"--host {self.host} opens the server to other computers; give it a key with --api-key KEY "
                f"(or ${API_KEY_ENV}), or keep the default --host {DEFAULT_HOST}")

    @property
    def url(self) -> str:
        shown = DEFAULT_HOST if self.host in ("0.0.0.0", "", "::") else self.host
        if ":" in shown:
            shown = f"[{shown}]"
        return f"http://{shown}:{self.port}/"


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and ``localhost`` reach only this computer; anything else (0.0.0.0, a LAN
    address, a name) may be reached from others."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def api_key_from_env() -> str | None:
    """$LLAMAVID_API_KEY, so a key need not appear on a command line (``ps`` shows those)."""
    return os.environ.get(API_KEY_ENV) or None
