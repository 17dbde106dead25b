"""The one ASGI application: the OpenAI-compatible API and, for ``llamavid web``, the web UI.

:func:`create_app` builds it from :class:`~app.server.settings.ServerSettings` (tests call it
directly: no port needed); :func:`start` runs it on uvicorn in a background thread and
:func:`serve` until Ctrl+C. The model loads in the chat service's worker when the server starts;
``/health`` says 503 until it has.
"""
from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
import webbrowser
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware

from app.chat_service import ChatService, chat_models
from app.model_convert import conversion_offer
from app.server.converting import Conversion
from app.server.errors import ApiError, bad_request, from_error, from_kind
from app.server.indexing import Indexer
from app.server.routes import api
from app.server.security import Guard, ResponseWatch
from app.server.settings import ServerSettings
from app.settings import load_settings
from llamavid.errors import UserError, require
from llamavid.paths import DataDir
from llamavid.storage import human_size

log = logging.getLogger(__name__)

_upload_dir: Path | None = None
_upload_lock = threading.Lock()


def upload_dir() -> Path:
    """The web UI's upload folder: one per process, private (0700), removed at exit.

    Gradio keeps uploads under $GRADIO_TEMP_DIR (by default a ``gradio`` folder in /tmp shared by
    every Gradio app of the machine, whose files it would serve); this server's uploads live apart,
    and its guard serves nothing else from Gradio's file route.
    """
    global _upload_dir
    with _upload_lock:
        if _upload_dir is None:
            _upload_dir = Path(tempfile.mkdtemp(prefix="llamavid-uploads-")).resolve()
            os.environ["GRADIO_TEMP_DIR"] = str(_upload_dir)
            atexit.register(shutil.rmtree, _upload_dir, True)
        return _upload_dir


def make_service(settings: ServerSettings) -> ChatService:
    """The chat service a server answers with: the model, language and load options its options
    name, else ``<data>/settings.json``'s, else the first installed chat model."""
    data = DataDir(settings.data_dir).create()
    saved = load_settings(data)
    model = settings.model or saved.model or next((m.name for m in chat_models(data)), None)
    return ChatService(data.root, model=model, language=settings.language or saved.language,
                       load=saved.load_options().replace(**settings.load_options.changed()),
                       max_waiting=settings.max_waiting, max_video_frames=settings.max_video_frames)


def create_app(settings: ServerSettings, service: ChatService | None = None) -> FastAPI:
    """The server's app (see the module docstring). ``service`` may be given (tests); otherwise it
    is made from ``settings`` (:func:`make_service`) and closed when the app shuts down."""
    own_service = service is None
    service = service or make_service(settings)
    indexer = Indexer(service.data, may_add_folders=bool(settings.allow_add_folders))
    conversion = Conversion(service.data)  # the web UI's llama.cpp conversion child, stopped with the app
    temp_dir = Path(tempfile.mkdtemp(prefix="llamavid-server-"))  # videos sent in requests, briefly

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.warm_up()
        try:
            yield
        finally:
            indexer.stop()
            conversion.stop()
            if own_service:
                service.close()
            shutil.rmtree(temp_dir, ignore_errors=True)

    # no /docs page: Swagger UI loads its scripts from a CDN, and nothing here reaches the network
    app = FastAPI(title="llamavid", version="1", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url="/openapi.json" if not settings.ui else None)
    app.state.service, app.state.settings, app.state.indexer, app.state.temp_dir = service, settings, indexer, temp_dir
    app.include_router(api)
    _error_handlers(app)
    uploads = None
    if settings.ui:
        uploads = upload_dir()
        _mount_ui(app, service, indexer, settings, uploads, conversion)
    else:
        @app.get("/", include_in_schema=False)
        def index() -> dict[str, Any]:
            return {"name": "llamavid", "api": "/v1", "models": "/v1/models", "movies": "/v1/movies",
                    "health": "/health", "openapi": "/openapi.json"}
    app.add_middleware(_Bugs)  # the innermost: a route's unexpected exception still answers in OpenAI's shape
    # the last added is the outermost: the guard stands in front of the API and Gradio alike, and CORS
    # (only with --cors-origin) in front of the guard, since a browser's preflight carries no key
    app.add_middleware(Guard, settings=settings, upload_dir=uploads)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_credentials=False,
                           allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
                           allow_headers=["Authorization", "Content-Type"])
    return app


def _mount_ui(app: FastAPI, service: ChatService, indexer: Indexer, settings: ServerSettings, uploads: Path,
              conversion: Conversion | None = None) -> None:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no usage statistics leave the machine
    gr = require("gradio", purpose="the web UI")
    from app.server.ui import CSS, HEAD, build_ui, theme  # imports gradio: only when the UI is served

    blocks = build_ui(service, indexer, uploads, conversion)
    blocks.queue(default_concurrency_limit=None)
    gr.mount_gradio_app(app, blocks, path="/", allowed_paths=[], blocked_paths=[str(service.data.root)],
                        max_file_size=settings.max_upload_bytes, ssr_mode=False, mcp_server=False,
                        footer_links=[], show_error=True, theme=theme(), css=CSS, head=HEAD,
                        server_name=settings.host, server_port=settings.port)


class ErrorResponse(JSONResponse):
    """An error in OpenAI's shape, as ASCII JSON: whatever text a client sent (a lone surrogate
    escape) and an error message quotes, the body can be written."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


def _problem(problem: ApiError, headers: dict[str, str] | None = None) -> ErrorResponse:
    return ErrorResponse(problem.body(), status_code=problem.status, headers=headers)


#: where FastAPI says a request's part was found: the param an error names leaves it out
_LOCATIONS = {"body", "path", "query", "header", "cookie"}


def _error_handlers(app: FastAPI) -> None:
    """Every error a route or the framework raises, in OpenAI's shape: a refused request (a bad body,
    path or query, malformed JSON, a wrong content type) is a 400 naming the field, an unknown route
    a 404, a wrong method a 405, and a bug a 500 ``internal_error`` (logged with its traceback)."""
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _problem(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        if first.get("type") == "json_invalid":
            why = (first.get("ctx") or {}).get("error", "malformed")
            return _problem(bad_request(f"the body is not valid JSON ({why})"))
        loc = list(first.get("loc", ()))
        if loc and loc[0] in _LOCATIONS:
            loc = loc[1:]
        where = ".".join(str(p) for p in loc) or None
        message = str(first.get("msg", "invalid value"))
        if first.get("type") == "model_attributes_type" and not loc:
            message = "the body must be a JSON object (Content-Type: application/json)"
        return _problem(bad_request(f"{where}: {message}" if where else message, where))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {400: "invalid_request", 404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        message = str(exc.detail)  # a 400: FastAPI could not read the body (not UTF-8, ...)
        if exc.status_code == 404:
            message = f"not found: no route {request.url.path} (the API is under /v1)"
        elif exc.status_code == 405:
            message = f"method {request.method} is not allowed on {request.url.path}"
        kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
        return _problem(ApiError(exc.status_code, message, kind, code=code), headers=exc.headers)

    @app.exception_handler(UserError)
    async def user_error(request: Request, exc: UserError) -> JSONResponse:
        problem = from_error(exc)
        return _problem(problem, {"Retry-After": "5"} if problem.code == "queue_full" else None)

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception) -> JSONResponse:
        # Starlette logs the traceback (it raises the exception again after this answer is sent)
        return _problem(from_kind("internal", f"internal error ({type(exc).__name__}); the server log has the details"))


class _Bugs:
    """A route's unexpected exception as a 500 ``internal_error`` in OpenAI's shape, logged with its
    traceback, on a connection that stays usable (Starlette's handler for ``Exception`` answers too,
    but raises again, and uvicorn then drops the client's keep-alive connection). An exception after
    the response has begun goes on up: only closing the connection can tell the client then."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        watched = ResponseWatch(send)
        try:
            await self.app(scope, receive, watched)
        except Exception as exc:
            if watched.started:
                raise
            log.exception("internal error answering %s %s", scope.get("method"), scope.get("path"))
            problem = from_kind("internal", f"internal error ({type(exc).__name__}); the server log has the details")
            await _problem(problem)(scope, receive, send)


# -- running it ------------------------------------------------------------------------------------------
@dataclass
class Running:
    """A server started by :func:`start`: its URL, the app, and ``stop()``."""

    url: str
    app: FastAPI
    server: Any
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=120)


def free_port(host: str, port: int) -> int:
    """``port`` if it can be bound on ``host`` (a free one for 0), else a UserError saying what to do."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, port))
            return int(s.getsockname()[1])
    except OSError as exc:
        if port == 0:
            raise UserError(f"cannot listen on {host}: {exc.strerror or exc}; pass --host 127.0.0.1") from exc
        raise UserError(f"port {port} on {host} is not available ({exc.strerror or exc}); another llamavid may be "
                        "running. Pass --port with another number, or --port 0 for any free port.") from exc


def start(settings: ServerSettings, **app_args: Any) -> Running:
    """Check the settings, build the app and serve it on uvicorn in a background thread."""
    import uvicorn  # imported here: llamavid --help imports the web command, which imports this lazily

    settings.check_exposure()
    settings.port = free_port(settings.host, settings.port)
    app = create_app(settings, **app_args)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=5, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="llamavid-uvicorn", daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise UserError(f"the server could not start on {settings.host}:{settings.port}; pass --port 0 "
                            "for any free port")
        time.sleep(0.05)
    return Running(settings.url, app, server, thread)


def serve(settings: ServerSettings, what: str = "web UI and API") -> int:
    """Run until Ctrl+C (or SIGTERM); prints one line saying where."""
    running = start(settings)
    service: ChatService = running.app.state.service
    model = service.shown_model or "none installed (see the page for how to get one)"
    print(f"llamavid {what} running at {running.url}  (API: {running.url}v1, model: {model}, "
          f"data folder: {settings.data_dir}; press Ctrl+C to stop)", flush=True)
    _say_conversion(service, settings.ui)
    if settings.open_browser:
        webbrowser.open(running.url)
    previous = signal.signal(signal.SIGTERM, _interrupt) if threading.current_thread() is threading.main_thread() \
        else None
    try:
        while running.thread.is_alive():
            # not thread.join(): a KeyboardInterrupt raised inside join() marks the thread as ended while
            # it still runs (CPython 3.11), and stop() then returned before the service saved its work
            time.sleep(0.1)
    except KeyboardInterrupt:
        pass
    finally:
        running.stop()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0


def _say_conversion(service: ChatService, ui: bool) -> None:
    """Where the model cannot answer until its llama.cpp conversion is made, say what to run."""
    offer = conversion_offer(service.data, service.model_name, service.load_options)
    if offer is not None:
        page = " or press Convert on the web page" if ui else ""
        print(f"note: {offer.name} runs on llama.cpp here ({offer.why}) and answers once converted: run "
              f"`llamavid models convert-gguf {offer.name}`{page} (about {human_size(offer.needed)} of disk, "
              f"{human_size(offer.free)} free)", flush=True)


def _interrupt(signum: int, frame: Any) -> None:  # noqa: ARG001 - a signal handler's signature
    raise KeyboardInterrupt
