"""The HTTP routes besides the chat itself: models, the library, a film's video and clips of its moments
(:mod:`app.clips`) and its picture at a time, the library's search (lines said and scenes seen,
:func:`indexer.scenes_search.search_library`), conversations, health and the sign-in page.
Each is a few lines over the chat service (``app.state.service``,
:class:`app.chat_service.ChatService`); the chat itself is :mod:`app.server.completions`.
"""
from __future__ import annotations

import hmac
import mimetypes
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.background import BackgroundTask

from app.chat_service import ChatService, no_model_hint
from app.clips import MARGIN, clip_lines, clip_name, export_moment, srt_text
from app.server.completions import chat_completions
from app.server.errors import ApiError, bad_request, from_error, not_found
from app.server.protocol import Id
from app.server.security import SESSION_COOKIE, login_page, safe_next, session_token
from indexer.library import Movie, film_file
from indexer.scenes_search import KINDS, ScenesUnavailable, search_library
from indexer.store import LibraryStore
from llamavid.errors import UserError
from llamavid.media.clip import clip_span
from llamavid.media.still import frame_at, jpeg

api = APIRouter()
api.add_api_route("/v1/chat/completions", chat_completions, methods=["POST"],
                  summary="OpenAI-compatible chat: text, images, short videos and films of the library")


def _service(request: Request) -> ChatService:
    return request.app.state.service


@api.get("/v1/models", summary="the chat models installed here")
async def models(request: Request) -> dict[str, Any]:
    service = _service(request)
    entries = service.models()
    served = service.shown_model
    data = [{"id": m.name, "object": "model", "created": 0, "owned_by": "llamavid", "kind": m.kind,
             "family": "qwen-vl" if m.kind == "qwen-vl" else "llama-vid",
             "status": m.status, "loaded": m.name == served and service.model_loaded} for m in entries]
    if served and all(m.name != served for m in entries):  # --model named a folder outside the data folder
        data.insert(0, {"id": served, "object": "model", "created": 0, "owned_by": "llamavid", "kind": None,
                        "status": "complete", "loaded": service.model_loaded})
    return {"object": "list", "data": data}


@api.get("/v1/models/{model_id:path}", summary="one chat model")
async def model(model_id: str, request: Request) -> dict[str, Any]:
    for entry in (await models(request))["data"]:
        if entry["id"] == model_id:
            return entry
    raise ApiError(404, f"model {model_id!r} is not installed here", param="model", code="model_not_found")


def movie_object(movie: Movie, prepare_estimate: int | None = None) -> dict[str, Any]:
    """A film as the API shows it: no absolute paths, its index state and what a chat can use,
    with its prepared state for fast answers (``prepared``: bytes on disk, 0 when none) and what
    preparing it would take with the served model (None when no model is known)."""
    done, total = movie.progress
    return {
        "id": movie.id, "object": "movie", "title": Path(movie.rel_path).stem, "path": movie.rel_path,
        "state": movie.state, "indexed": movie.features_complete, "error": movie.error, "warning": movie.warning,
        "stage": movie.stage, "progress": {"done": done, "total": total}, "eta_seconds": movie.eta_seconds,
        "duration": movie.duration, "width": movie.width, "height": movie.height, "frames": movie.frames,
        "subtitle_tracks": [{"id": t.get("id"), "language": t.get("language"), "source": t.get("source"),
                             "forced": bool(t.get("forced")), "sdh": bool(t.get("sdh")),
                             "cues": t.get("cue_count"), "status": t.get("status")}
                            for t in movie.subtitle_tracks],
        "prepared": movie.prepared_bytes, "prepare_wanted": movie.prepare_wanted,
        "prepare_estimate_bytes": prepare_estimate,
        "video_url": f"/v1/movies/{movie.id}/video",
    }


def served_movie(service: ChatService, movie: Movie) -> dict[str, Any]:
    """:func:`movie_object` with the served model's estimate of the film's prepared size."""
    return movie_object(movie, service.prepare_estimate(movie))


@api.get("/v1/movies", summary="the films of the library, their index state and whether they are prepared")
def movies(request: Request) -> dict[str, Any]:
    service = _service(request)
    return {"object": "list", "data": [served_movie(service, m) for m in service.movies()]}


def _movie(service: ChatService, movie_id: Id) -> Movie:
    try:
        return service.movie(movie_id)
    except KeyError:
        raise not_found(f"no movie {movie_id} in the library (GET /v1/movies lists them)", "movie_id") from None


@api.get("/v1/movies/{movie_id}", summary="one film")
def movie(movie_id: Id, request: Request) -> dict[str, Any]:
    service = _service(request)
    return served_movie(service, _movie(service, movie_id))


@api.get("/v1/movies/{movie_id}/video", summary="the film's file, with HTTP Range requests (a player seeks)")
def movie_video(movie_id: Id, request: Request) -> FileResponse:
    service = _service(request)
    film = _movie(service, movie_id)
    path = library_file(service, film)
    name = Path(film.path)  # the type by the name the indexer found it under (a link's target may have none)
    media_type = mimetypes.guess_type(name.name)[0] or "application/octet-stream"
    if name.suffix.lower() == ".mkv":
        media_type = "video/x-matroska"
    return FileResponse(path, media_type=media_type, headers={"Cache-Control": "no-store"},
                        content_disposition_type="inline")


def library_file(service: ChatService, movie: Movie) -> Path:
    """The film's file (links resolved), only if :func:`indexer.library.film_file` allows it: the
    indexer probed a video stream in it and its real path lies inside one of the library's folders.
    Anything else is a 404, whatever the reason (a client learns nothing about the disk)."""
    with LibraryStore.open(service.data.database) as store:
        path = film_file(store, movie)
    if path is None:
        raise not_found(f"movie {movie.id} has no video file this server may serve (not probed as a video, "
                        "or not in the library any more)", "movie_id", "movie_file_missing")
    return path


#: The most seconds a clip keeps on either side of its moment; clips cut at once (each costs a core or two).
CLIP_MAX_MARGIN, CLIP_SLOTS = 30.0, threading.Semaphore(2)


@api.get("/v1/movies/{movie_id}/clip", summary="a moment of the film as a short MP4 (start, end: seconds; margin "
                                               "seconds each side, default 2; 5 minutes at most), or with "
                                               "format=srt its subtitle lines, timed from the clip's start")
def movie_clip(movie_id: Id, request: Request, start: float | None = None, end: float | None = None,
               margin: float = MARGIN, format: str = "mp4") -> Response:  # noqa: A002 - the query parameter's name
    if start is None or end is None:
        raise bad_request("start and end: give the moment's span in seconds (?start=65&end=69)",
                          "start" if start is None else "end")
    if not 0 <= margin <= CLIP_MAX_MARGIN:
        raise bad_request(f"margin: from 0 to {CLIP_MAX_MARGIN:g} seconds, got {margin}", "margin")
    if format not in ("mp4", "srt"):
        raise bad_request(f"format: mp4 or srt, got {format!r}", "format")
    service = _service(request)
    film = _movie(service, movie_id)
    library_file(service, film)  # a 404 for a file this server may not read, as for the film's video
    try:
        low, high = clip_span(start, end, film.duration, margin)
    except UserError as exc:
        raise bad_request(str(exc), "start") from None
    if format == "srt":
        with LibraryStore.open(service.data.database) as store:
            lines = clip_lines(store, film, low, high)
        name = _ascii(clip_name(film, start, ".srt"))
        return Response(srt_text(lines), media_type="application/x-subrip; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})
    service.data.cache.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="clip-", dir=service.data.cache))  # gone once the response is sent
    try:
        with CLIP_SLOTS, LibraryStore.open(service.data.database) as store:
            made = export_moment(store, film, start, end, folder / "clip.mp4", margin=margin, snap_back=0.0,
                                 write_subtitles=False)
    except UserError as exc:
        shutil.rmtree(folder, ignore_errors=True)
        raise from_error(exc) from None
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return FileResponse(made.clip.path, media_type="video/mp4", filename=clip_name(film, start),
                        headers={"Cache-Control": "no-store"},
                        background=BackgroundTask(shutil.rmtree, folder, ignore_errors=True))


def _ascii(name: str) -> str:
    """A file name safe inside a quoted Content-Disposition header."""
    return "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in name)


#: GET /v1/search's bounds: the query's length in characters, and the most lines one answer holds
SEARCH_MAX_CHARS, SEARCH_MAX_LIMIT = 500, 100
SEARCH_KINDS = KINDS  # quote, scene, all (indexer.scenes_search)


@api.get("/v1/search", summary="the library's lines that say what q says and scenes that look like it, best "
                               "first (kind: quote, scene or all; movie_id: one film's); each with a thumbnail_url")
def search(request: Request, q: str | None = None, limit: int = 20, movie_id: Id | None = None,
           kind: str = "all") -> dict[str, Any]:
    if q is None or not q.strip():
        raise bad_request("q: give the words to search for (?q=...)", "q")
    if len(q) > SEARCH_MAX_CHARS:
        raise bad_request(f"q: at most {SEARCH_MAX_CHARS} characters, got {len(q)}", "q")
    if not 1 <= limit <= SEARCH_MAX_LIMIT:
        raise bad_request(f"limit: from 1 to {SEARCH_MAX_LIMIT}, got {limit}", "limit")
    if kind not in SEARCH_KINDS:
        raise bad_request(f"kind: one of {', '.join(SEARCH_KINDS)}, got {kind!r}", "kind")
    service = _service(request)
    if movie_id is not None:
        _movie(service, movie_id)  # a 404 for a film that is not there
    with LibraryStore.open(service.data.database) as store:
        try:
            found = search_library(store, q, kind, movie_id, limit, service.data.root)
        except ScenesUnavailable as exc:
            raise ApiError(409, str(exc), param="kind", code=exc.kind) from None
    return {"object": "list", "query": q, "kind": kind,
            "data": [{"object": "search.result", "title": Path(hit.rel_path).stem, **hit.to_dict(),
                      "thumbnail_url": frame_url(hit.movie_id, getattr(hit, "time", hit.start))} for hit in found]}


def frame_url(movie_id: int, seconds: float) -> str:
    """Where a picture of the film at ``seconds`` is served (:func:`movie_frame`)."""
    return f"/v1/movies/{movie_id}/frame?t={round(seconds, 3):g}"


@api.get("/v1/movies/{movie_id}/frame", summary="the film's picture at t seconds, a JPEG (width: at most 640 px)")
def movie_frame(movie_id: Id, request: Request, t: float = 0.0, width: int = 320) -> Response:
    if not 16 <= width <= 640:
        raise bad_request(f"width: from 16 to 640 pixels, got {width}", "width")
    service = _service(request)
    film = _movie(service, movie_id)
    path = library_file(service, film)
    if not 0 <= t <= (film.duration or 0.0) + 1.0:
        raise bad_request(f"t: from 0 to the film's length ({film.duration or 0:.0f} s), got {t}", "t")
    image = frame_at(path, t)
    if image is None:
        raise not_found(f"movie {movie_id} has no picture at {t} s", "t", "no_frame")
    return Response(jpeg(image, width), media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})


@api.get("/v1/conversations", summary="kept conversations, newest first (movie_id: one film's)")
def conversations(request: Request, movie_id: Id | None = None) -> dict[str, Any]:
    found = _service(request).conversations(movie_id)
    return {"object": "list", "data": [{"id": c.id, "object": "conversation", "title": c.title,
                                        "movie_id": c.movie_id, "model": c.model, "fast": c.fast,
                                        "created": int(c.created_at), "updated": int(c.updated_at)}
                                       for c in found]}


@api.get("/v1/conversations/{conversation_id}", summary="one conversation with its turns")
def conversation(conversation_id: Id, request: Request) -> dict[str, Any]:
    try:
        conv = _service(request).conversation(conversation_id)
    except KeyError:
        raise not_found(f"no conversation {conversation_id}", "conversation_id") from None
    turns = conv.shown_turns
    return {"id": conv.id, "object": "conversation", "title": conv.title, "movie_id": conv.movie_id,
            "model": conv.model, "fast": conv.fast, "created": int(conv.created_at), "updated": int(conv.updated_at),
            "turns": [{"id": t.id, "question": t.question, "answer": t.answer, "stopped": t.stopped,
                       "moments": t.moments} for t in turns]}


@api.delete("/v1/conversations/{conversation_id}", summary="delete a conversation")
def delete_conversation(conversation_id: Id, request: Request) -> dict[str, Any]:
    try:
        _service(request).delete(conversation_id)
    except KeyError:
        raise not_found(f"no conversation {conversation_id}", "conversation_id") from None
    return {"id": conversation_id, "object": "conversation.deleted", "deleted": True}


@api.get("/health", summary="200 once the model is loaded; 503 with the reason before")
async def health(request: Request) -> JSONResponse:
    service = _service(request)
    state = service.status()
    if state["model"] is None:
        problem = ApiError(503, "no chat model is installed: " + no_model_hint(service.data), "unavailable_error",
                           code="no_model")
        return JSONResponse({**problem.body(), **state, "status": "no_model"}, status_code=503)
    if state["load_error"]:
        problem = ApiError(503, state["load_error"], "unavailable_error", code="model_unavailable")
        return JSONResponse({**problem.body(), **state, "status": "error"}, status_code=503)
    if not state["model_loaded"]:
        problem = ApiError(503, "Loading model", "unavailable_error", code="loading")
        return JSONResponse({**problem.body(), **state, "status": "loading"}, status_code=503)
    return JSONResponse({**state, "status": "ok"})


@api.get("/login", include_in_schema=False)
def login_form(request: Request, next: str = "/") -> Response:  # noqa: A002 - the query parameter's name
    if request.app.state.settings.api_key is None:
        return RedirectResponse(safe_next(next), status_code=303)
    return HTMLResponse(login_page(next_path=safe_next(next)))


@api.post("/login", include_in_schema=False)
async def login(request: Request) -> Response:
    key = request.app.state.settings.api_key
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    given, target = form.get("key", [""])[0], safe_next(form.get("next", ["/"])[0])
    if key is None:
        return RedirectResponse(target, status_code=303)
    if not hmac.compare_digest(given.encode(), key.encode()):
        await anyio.sleep(0.5)  # a guess costs time
        return HTMLResponse(login_page("That is not the key.", target), status_code=401)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(SESSION_COOKIE, session_token(key), httponly=True, samesite="strict", path="/",
                        secure=request.url.scheme == "https")
    return response
