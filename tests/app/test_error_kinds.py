"""Each typed error names its own kind, and one table turns a kind into an HTTP status: the chat's
``error`` events, the API's status codes and the messages all come from the error itself."""
from __future__ import annotations

import gc

import app.chat_service  # noqa: F401 - defines QueueFull and NoModel
import app.server.app  # noqa: F401 - every module an error may come from is imported
import indexer.library
from app.questions import ChatEvent
from app.server.errors import KIND_STATUS, from_error, from_kind
from llamavid.errors import (
    BadMedia,
    Cancelled,
    CheckpointError,
    ContextOverflow,
    NotEnoughMemory,
    UserError,
    error_kind,
    error_message,
)


def _all_subclasses(cls: type) -> set[type]:
    found = set()
    for sub in cls.__subclasses__():
        found |= {sub, *_all_subclasses(sub)}
    return found


def kinds_without_a_status() -> dict[str, str]:
    """Error classes whose kind the server has no status for (kind -> class name)."""
    classes = {UserError, Cancelled, indexer.library.FeaturesNotReady, *_all_subclasses(UserError)}
    return {c.kind: c.__qualname__ for c in classes if c.kind not in KIND_STATUS}


def test_every_error_kind_has_an_http_status() -> None:
    assert kinds_without_a_status() == {}


def test_a_new_kind_without_a_status_is_caught() -> None:
    """Negative control: an error kind added without a row in KIND_STATUS is reported."""
    class Forgotten(UserError):
        kind = "forgotten_kind"

    missing = kinds_without_a_status()
    del Forgotten
    gc.collect()  # the class leaves UserError.__subclasses__() for the tests after this one
    assert list(missing) == ["forgotten_kind"] and missing["forgotten_kind"].endswith("<locals>.Forgotten")
    assert kinds_without_a_status() == {}


def test_the_kind_comes_from_the_error_itself() -> None:
    cases = {BadMedia("x"): "bad_media", CheckpointError("x"): "model", ContextOverflow("x", 9, 8): "context_overflow",
             NotEnoughMemory("x"): "not_enough_memory", Cancelled("x"): "cancelled", UserError("x"): "user_error",
             app.chat_service.QueueFull("x"): "queue_full", app.chat_service.NoModel("x"): "no_model",
             indexer.library.FeaturesNotReady("x"): "not_ready", KeyError("no movie 7"): "not_found",
             RuntimeError("a bug"): "internal"}
    assert {type(e).__name__: error_kind(e) for e in cases} == {type(e).__name__: k for e, k in cases.items()}


def test_event_status_and_message_agree_for_a_refused_question() -> None:
    exc = app.chat_service.QueueFull("32 questions are already waiting")
    event = ChatEvent.failure(exc)
    assert (event.type, event.kind, event.text) == ("error", "queue_full", "32 questions are already waiting")
    assert from_error(exc).status == from_kind(event.kind, event.text).status == 429
    assert from_error(exc).body()["error"]["code"] == "queue_full"


def test_a_missing_thing_is_a_404_with_the_message_unquoted() -> None:
    exc = KeyError("no conversation 12")
    assert error_message(exc) == "no conversation 12"  # str(KeyError) adds quotes
    problem = from_error(exc)
    assert (problem.status, problem.message) == (404, "no conversation 12")


def test_a_bug_is_an_internal_error_named_by_its_class_when_it_says_nothing() -> None:
    assert error_message(RuntimeError()) == "RuntimeError"
    assert from_error(RuntimeError()).status == 500
