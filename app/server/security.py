"""Who may talk to the server, and what no request may reach: one ASGI middleware in front of
every route, the API's and the web UI's (Gradio's own routes included).

In order, for each HTTP request:

1. **Routes that reach beyond the library are closed** (404): Gradio's ``/proxy=`` (it fetches
   from the network), its ``/file=`` for anything but the files this server's UI uploaded into
   its own temporary folder (a URL, a path elsewhere, ``..`` in any encoding), and the routes of
   Gradio features this app does not use (monitoring, MCP, vibe editing, run history, reload).
2. **The Host header** must name this computer when the server listens on loopback without a
   key: a web page cannot reach the server through a DNS name that points at 127.0.0.1 (DNS
   rebinding).
3. **The Origin header**, when a browser sends one, must be the server's own page or an origin
   given with ``--cors-origin``: another site open in the same browser cannot post questions.
4. **The key** (``--api-key``), when there is one: ``Authorization: Bearer KEY`` on every route,
   or the session cookie the ``/login`` page sets for a browser. An API client gets a 401 in
   OpenAI's shape; a browser asking for a page is sent to ``/login``.
5. **Bodies** larger than the limit are refused with 413 before they are read.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from app.server.errors import ApiError
from app.server.settings import ServerSettings, is_loopback

SESSION_COOKIE = "llamavid_session"
#: ``<upload dir>/sessions/<id>/<name>``: each browser session's own copy of its upload (the web UI asks about
#: that copy and deletes it with the session). Only the server reads them, so ``/file=`` never serves them.
SESSION_UPLOADS = "sessions"
OPEN_PATHS = ("/login",)  # reachable without the key: the page that asks for it
_CLOSED = re.compile(r"/(proxy=|monitoring|gradio_api/mcp|mcp/|vibe-|run-history|runs/?$|gradio_api/dev/|"
                     r"dev/reload|"
                     # unused by this page: recordings run ffmpeg on an upload; deep links; the client API's
                     # direct calls (the page asks through the queue, gradio_api/queue/join)
                     r"gradio_api/process_recording|gradio_api/deep_link|gradio_api/call/|gradio_api/run/|"
                     r"gradio_api/api/)", re.IGNORECASE)
_FILE_ROUTE = re.compile(r"/file(=|/)(?P<rest>.*)$", re.IGNORECASE | re.DOTALL)


class ResponseWatch:
    """An ASGI ``send`` that notes when the response has begun: until then a failure can still be
    answered with an error response of its own; after, the connection can only be closed."""

    def __init__(self, send: Any):
        self.send, self.started = send, False

    async def __call__(self, message: dict) -> None:
        self.started = self.started or message["type"] == "http.response.start"
        await self.send(message)


def session_token(api_key: str) -> str:
    """What the login cookie holds: derived from the key, so the key itself never sits in a cookie."""
    return hmac.new(api_key.encode(), b"llamavid web session", hashlib.sha256).hexdigest()


class _TooLarge(BaseException):  # noqa: N818 - not an Exception: FastAPI turns those into "cannot parse" 400s
    """A body grew past the limit while it was read."""


class Guard:
    """The middleware (see the module docstring)."""

    def __init__(self, app: Any, settings: ServerSettings, upload_dir: Path | None = None):
        self.app = app
        self.settings = settings
        self.upload_dir = Path(os.path.realpath(upload_dir)) if upload_dir else None
        self.max_body = settings.max_upload_bytes * 4 // 3 + 2 * 2**20  # base64 and the JSON around it
        self.token = session_token(settings.api_key) if settings.api_key else None
        self.check_host = not settings.api_key and is_loopback(settings.host)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        problem = self.refusal(scope, headers)
        if problem is not None:
            if scope["type"] == "websocket":
                return await send({"type": "websocket.close", "code": 1008})
            return await _send_error(send, problem, scope)
        if scope["type"] == "http":
            length = headers.get("content-length")
            if length is not None and length.isdigit() and int(length) > self.max_body:
                return await _send_error(send, self._too_large(), scope)
            receive = self._counting(receive)
        watched = ResponseWatch(send)
        try:
            await self.app(scope, receive, watched)
        except _TooLarge:
            if not watched.started:
                await _send_error(send, self._too_large(), scope)

    def _too_large(self) -> ApiError:
        return ApiError(413, f"the request is larger than this server takes ({self.max_body // 2**20} MiB); "
                             "send a shorter video or smaller images", code="too_large")

    def _counting(self, receive: Any) -> Any:
        seen = 0

        async def counted() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise _TooLarge
            return message
        return counted

    def refusal(self, scope: dict, headers: dict[str, str]) -> ApiError | _Redirect | None:
        """Why this request may not go on (None: it may)."""
        path = scope.get("path", "")
        raw = scope.get("raw_path") or path.encode()
        decoded = _fully_unquoted(raw.decode("latin-1"))
        if _CLOSED.search(decoded) or _CLOSED.search(path):
            return ApiError(404, "not found", code="not_found")
        file_route = _FILE_ROUTE.search(decoded)
        if file_route and not self._own_upload(file_route["rest"]):
            return ApiError(404, "not found: this server serves only the library's films (GET "
                                 "/v1/movies/{id}/video) and the web UI's own uploads", code="not_found")
        if self.check_host and not _local_host(headers.get("host", "")):
            return ApiError(403, f"Host {headers.get('host')!r} is not this computer; open the server at "
                                 f"{self.settings.url}", "permission_error", code="host_not_allowed")
        origin = headers.get("origin")
        if origin and not self._origin_allowed(origin, scope, headers):
            return ApiError(403, f"requests from the page {origin} are not allowed; start the server with "
                                 f"--cors-origin {origin} to allow them", "permission_error", code="origin_not_allowed")
        if self.token is None or path in OPEN_PATHS or self._authorized(headers):
            return None
        if scope.get("method", "GET") == "GET" and "text/html" in headers.get("accept", "") \
                and not path.startswith(("/v1/", "/health")):
            return _Redirect("/login?next=" + quote(path, safe="/"))
        return ApiError(401, "a key is required: send the header 'Authorization: Bearer KEY' (the server's "
                             "--api-key)", "authentication_error", code="invalid_api_key")

    def _authorized(self, headers: dict[str, str]) -> bool:
        auth = headers.get("authorization", "")
        if auth[:7].lower() == "bearer " and hmac.compare_digest(auth[7:].strip().encode(),
                                                                  self.settings.api_key.encode()):
            return True
        cookie = _cookies(headers.get("cookie", "")).get(SESSION_COOKIE, "")
        return bool(cookie) and hmac.compare_digest(cookie.encode(), self.token.encode())

    def _own_upload(self, rest: str) -> bool:
        """A ``/file=`` path inside the UI's upload folder (no URL, no way out of it), and not a session's
        own copy (:data:`SESSION_UPLOADS`): the page shows Gradio's cached upload, never that copy."""
        if self.upload_dir is None or re.match(r"^[a-z][\w+.-]*:|^//", rest, re.IGNORECASE):
            return False
        target = Path(os.path.realpath(rest.split("?", 1)[0]))
        return target != self.upload_dir and target.is_relative_to(self.upload_dir) \
            and not target.is_relative_to(self.upload_dir / SESSION_UPLOADS)

    def _origin_allowed(self, origin: str, scope: dict, headers: dict[str, str]) -> bool:
        if origin in self.settings.cors_origins:
            return True
        own = f"{scope.get('scheme', 'http')}://{headers.get('host', '')}"
        return origin.lower() == own.lower()


class _Redirect:
    def __init__(self, location: str):
        self.location = location


def _fully_unquoted(text: str) -> str:
    """Undo percent-encoding until it stops changing (``%252e%252e`` is ``..`` twice encoded)."""
    for _ in range(5):
        decoded = unquote(text)
        if decoded == text:
            break
        text = decoded
    return text.replace("\\", "/")


def _local_host(host: str) -> bool:
    if not host:
        return True  # HTTP/1.0 without a Host: not a browser
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    return is_loopback(name.strip("[]"))


def _cookies(header: str) -> dict[str, str]:
    out = {}
    for part in header.split(";"):
        if "=" in part:
            key, value = part.split("=", 1)
            out[key.strip()] = value.strip()
    return out


async def _send_error(send: Any, problem: ApiError | _Redirect, scope: dict) -> None:
    if isinstance(problem, _Redirect):
        await send({"type": "http.response.start", "status": 303,
                    "headers": [(b"location", problem.location.encode()), (b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})
        return
    body = json.dumps(problem.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if problem.status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": problem.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def login_page(message: str = "", next_path: str = "/") -> str:
    """The page a browser gets before it has the key."""
    note = f'<p class="error">{_html(message)}</p>' if message else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>llamavid - sign in</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font-family:system-ui,sans-serif;max-width:28rem;margin:4rem auto;padding:0 1rem}}
input{{font-size:1rem;padding:.4rem;width:100%;box-sizing:border-box;margin:.5rem 0}}
button{{font-size:1rem;padding:.4rem 1rem}}.error{{color:#b00020}}</style></head>
<body><h1>llamavid</h1><p>This server needs its key (the <code>--api-key</code> it was started with).</p>
{note}<form method="post" action="/login"><input type="hidden" name="next" value="{_html(next_path)}">
<label>Key <input type="password" name="key" id="key" autofocus autocomplete="current-password"></label>
<button type="submit" id="sign-in">Sign in</button></form></body></html>"""


def _html(text: str) -> str:
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;"))


def safe_next(path: str) -> str:
    """Where to go after signing in: a path on this server, never another site."""
    if not path.startswith("/") or path.startswith("//") or "\\" in path or ":" in path.split("?", 1)[0]:
        return "/"
    return path
