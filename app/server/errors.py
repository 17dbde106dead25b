"""Errors in OpenAI's shape, from one place: ``{"error": {"message", "type", "param", "code"}}``.

An :class:`ApiError` carries the HTTP status; :func:`from_kind` maps an error kind (each error names
its own: ``llamavid.errors.UserError.kind``, the ``kind`` of a chat's ``error`` event) to one, in
one table, :data:`KIND_STATUS`; :func:`from_error` does it for an exception. The same
object is the body of an error response and the one ``data:`` event a failing stream sends before
``[DONE]``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llamavid.errors import error_kind, error_message

#: chat service error kind -> (HTTP status, OpenAI error type, code)
KIND_STATUS: dict[str, tuple[int, str, str]] = {
    "context_overflow": (400, "invalid_request_error", "context_length_exceeded"),
    "bad_media": (400, "invalid_request_error", "bad_media"),
    "user_error": (400, "invalid_request_error", "invalid_request"),
    "not_found": (404, "invalid_request_error", "not_found"),
    "not_ready": (409, "invalid_request_error", "movie_not_indexed"),
    "cancelled": (409, "invalid_request_error", "cancelled"),
    "queue_full": (429, "rate_limit_error", "queue_full"),
    "not_enough_memory": (503, "server_error", "not_enough_memory"),
    "memory_in_use": (503, "server_error", "memory_in_use"),
    "model": (503, "server_error", "model_unavailable"),
    "no_model": (503, "server_error", "no_model"),
    "internal": (500, "server_error", "internal_error"),
}


@dataclass
class ApiError(Exception):
    status: int
    message: str
    type: str = "invalid_request_error"
    param: str | None = None
    code: str | None = None

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def from_kind(kind: str, message: str, param: str | None = None) -> ApiError:
    status, type_, code = KIND_STATUS.get(kind, KIND_STATUS["internal"])
    return ApiError(status, message, type_, param, code)


def from_error(exc: BaseException, param: str | None = None) -> ApiError:
    """An exception as the API reports it: the status of its kind, its own message."""
    return from_kind(error_kind(exc), error_message(exc), param)


def bad_request(message: str, param: str | None = None, code: str = "invalid_request") -> ApiError:
    return ApiError(400, message, "invalid_request_error", param, code)


def not_found(message: str, param: str | None = None, code: str = "not_found") -> ApiError:
    return ApiError(404, message, "invalid_request_error", param, code)
