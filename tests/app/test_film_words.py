"""The words about a film every front end shows (app.film_words): its clock, its index state with
progress and time left, whether it is prepared for fast answers, its subtitles, a question's place
in the queue. Representative films, built as the library reads them."""
from __future__ import annotations

import pytest

from app import film_words as words
from indexer.library import Movie
from llamavid.storage import human_size
from tests.support.movies import movie


def film(**values) -> Movie:
    """A queued film that is not indexed yet, unless ``values`` say otherwise."""
    return movie(**{"state": "queued", "features_complete": False, **values})


def test_clocks() -> None:
    assert [words.clock(s) for s in (0, 59.9, 61, 3599, 3600, 5425.7, None, -3)] == [
        "0:00:00", "0:00:59", "0:01:01", "0:59:59", "1:00:00", "1:30:25", "--:--", "0:00:00"]
    assert [words.short_clock(s) for s in (0, 40, 601, 3599, 3600, 5425)] == [
        "0:00", "0:40", "10:01", "59:59", "1:00:00", "1:30:25"]
    assert (words.time_left(40), words.time_left(200), words.time_left(None), words.time_left(0)) == (
        "about 40 s left", "about 3 min left", "", "")


@pytest.mark.parametrize(("movie", "paused", "text", "bar", "tone"), [
    (film(state="done", features_complete=True), False, "ready to chat", (0, 0), "good"),
    (film(state="done", warning="no speech model"), False, "ready to chat (no speech model)", (0, 0), "good"),
    (film(state="missing"), False, "file missing (it resumes if the file comes back)", (0, 0), "bad"),
    (film(state="failed", error="decoder error"), False, "failed: decoder error", (0, 0), "bad"),
    (film(state="failed"), False, "failed: unknown error", (0, 0), "bad"),
    (film(state="cancelled"), False, "cancelled", (0, 0), ""),
    (film(state="running", stage="features", progress=(120, 2400), eta_seconds=200), False,
     "indexing, reading frames: 120 / 2,400 frames, about 3 min left", (120, 2400), ""),
    (film(state="running", stage="speech", progress=(3, 90)), False,
     "indexing, recognising speech: 3 / 90 windows", (3, 90), ""),
    (film(state="running", stage="probe"), False, "indexing, reading the file", (0, 0), ""),
    (film(state="paused", stage="features", progress=(120, 2400)), False, "paused at 120 / 2,400", (120, 2400), ""),
    (film(state="queued", progress=(120, 2400)), True, "paused at 120 / 2,400", (120, 2400), ""),
    (film(state="queued", progress=(120, 2400)), False, "waiting to resume", (120, 2400), ""),
    (film(state="queued"), False, "waiting to be indexed", (0, 0), ""),
    (film(state="queued", features_complete=True, prepare_wanted=True), False,
     "waiting to be prepared for fast answers", (0, 0), ""),
])
def test_index_state(movie: Movie, paused: bool, text: str, bar: tuple[int, int], tone: str) -> None:
    state = words.index_state(movie, paused)
    assert (state.text, (state.done, state.total), state.tone) == (text, bar, tone)
    assert state.percent == (100 * bar[0] // bar[1] if bar[1] else None)


def test_prepared_label_and_action() -> None:
    prepared = film(state="done", prepared_bytes=1_200_000_000, prepare_wanted=True)
    asked = film(state="done", prepare_wanted=True)
    plain = film(state="done")
    size = human_size(1_200_000_000)
    assert words.prepared_label(prepared) == f"prepared for fast answers ({size})"
    assert words.prepared_label(asked, 2_000_000_000) == f"to be prepared for fast answers (about {human_size(2e9)})"
    assert words.prepared_label(asked) == "to be prepared for fast answers"
    assert words.prepared_label(plain, 2_000_000_000) == "not prepared"
    assert words.prepare_action(plain, 2_000_000_000) == f"Prepare for fast answers (about {human_size(2e9)})"
    assert words.prepare_action(plain) == "Prepare for fast answers"
    assert words.prepare_action(asked) == words.prepare_action(prepared) == words.FORGET_PREPARED


def test_subtitle_summary() -> None:
    tracks = [{"source": "sidecar", "language": "fr", "status": "ok", "cue_count": 10, "kind": "text"},
              {"source": "embedded", "language": "en", "status": "ok", "cue_count": 3, "kind": "text"},
              {"source": "asr", "language": None, "status": "ok", "cue_count": 0, "kind": "text"}]
    assert words.subtitle_summary(film(subtitle_tracks=tracks)) == "subtitles: embedded, subtitle files (en, fr)"
    image = [{"source": "embedded", "language": "en", "status": "image-based", "cue_count": 0, "kind": "image"}]
    assert words.subtitle_summary(film(subtitle_tracks=image)) == "image subtitles only (not read)"
    assert words.subtitle_summary(film(state="done")) == "no subtitles"
    assert words.subtitle_summary(film()) == "no subtitles yet"


def test_queue_position() -> None:
    assert [words.queue_position(n) for n in (0, 1, 3)] == [
        "starting…", "waiting for the model: 1 question ahead", "waiting for the model: 3 questions ahead"]
