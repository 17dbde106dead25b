"""What the web UI's panels show, as plain functions: no Gradio, no browser.

Each function takes the chat service, or plain data (films, conversations, a question's events),
and returns what a panel shows: HTML or Markdown, a dropdown's choices, a button's label and
visibility as a plain dict. :mod:`app.server.ui` lays the panels out and wraps these in
``gr.update(...)``; the tests call them directly (``tests/app/test_web_views.py``). The words
about a film (its clock, index state, fast answers, subtitles, a question's place in the queue)
come from :mod:`app.film_words`, shared with the desktop app.
"""
from __future__ import annotations

import html
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from app import film_words as words
from app import status as st
from app.chat_service import fast_by_default
from app.conversations import Conversation, StoredTurn
from app.model_convert import Offer
from app.questions import ChatEvent
from app.server.converting import ConversionState
from indexer.estimate import LibraryEstimate
from indexer.library import Movie, askable
from llamavid.runtime.control import rough_duration
from llamavid.storage import human_size

NEW = 0  # the conversation dropdown's "new conversation"
FAST_INFO = ("Answers start from the film read once ahead (seconds instead of minutes); "
             "exact mode reads the film with your question.")
STOPPED = "stopped"


def _sentence(text: str) -> str:
    """A film word on its own: its first letter capitalised (film_words' sentences start in lower case)."""
    return text[:1].upper() + text[1:]


def film_title(movie: Movie) -> str:
    return Path(movie.rel_path).stem


# -- the header -----------------------------------------------------------------------------------------
def setup_markdown(service: Any, status: st.AppStatus) -> str:
    """The line under the title: the model and whether it is loaded, or how to get one."""
    if service.shown_model is None:
        return f"{st.TAGLINE}\n\n**Data folder:** `{status.data_dir}`\n\n{st.instructions_markdown(status)}"
    loaded = "loaded" if service.model_loaded else (service.load_error or "loads with the first question")
    return f"**Model:** `{service.shown_model}` ({loaded}) · **Data folder:** `{status.data_dir}`"


def conversion_controls(offer: Offer | None, state: ConversionState) -> tuple[str, dict[str, Any], dict[str, Any], str]:
    """The setup's llama.cpp conversion: a line (what and why with its disk space; how it goes; how
    it ended), the Convert button (its size on it, shown while one is needed and none runs),
    Cancel (while one runs) and a progress bar (HTML)."""
    hidden = {"visible": False}
    if state.running:
        total = state.total or 1
        shown = f"{human_size(state.done)} of about {human_size(state.total)}" if state.total else "starting"
        line = f"Converting **{state.name}** for llama.cpp: {shown} · {state.label}"
        bar = f'<progress id="convert-bar" value="{min(state.done, total)}" max="{total}"></progress>'
        return line, hidden, {"visible": True}, bar
    ended = f"\n\n*{_sentence(state.message)}*" if state.outcome in ("cancelled", "error") else ""
    if offer is not None:
        return offer.describe() + ended, {"value": offer.button(), "visible": True, "interactive": offer.fits}, \
            hidden, ""
    return (_sentence(state.message) if state.outcome == "done" else ""), hidden, hidden, ""


def model_choices(names: Sequence[str], current: str | None,
                  family: Callable[[str], str] | None = None) -> dict[str, Any]:
    """The model picker: the installed chat models (and the current one), shown with two or more,
    each labelled with its family when ``family`` tells it (a new conversation asks the one picked)."""
    names = list(names)
    if current and current not in names:
        names.insert(0, current)
    choices = [(words.model_label(n, family(n)), n) for n in names] if family else names
    return {"choices": choices, "value": current, "visible": len(names) > 1}


# -- the movie chat -------------------------------------------------------------------------------------
def _pick(choices: list[tuple[str, int]], current: int | None, default: int | None) -> dict[str, Any]:
    ids = [i for _, i in choices]
    return {"choices": choices, "value": current if current in ids else default}


def film_choices(movies: Iterable[Movie], current: int | None = None,
                 can_ask: Callable[[Movie], bool] = askable) -> dict[str, Any]:
    """The films a chat can use (``can_ask``: the service's rule for the model answering; by default
    LLaMA-VID's, indexed or their dialogue read), ``current`` kept when it still is one, else the first."""
    choices = [(film_title(m), m.id) for m in movies if can_ask(m)]
    return _pick(choices, current, choices[0][1] if choices else None)


def time_label(stamp: float) -> str:
    return time.strftime("%d %b %H:%M", time.localtime(stamp))


def conversation_choices(conversations: Iterable[Conversation], current: int | None = NEW) -> dict[str, Any]:
    """"New conversation", then the film's kept conversations, newest first."""
    newest = sorted(conversations, key=lambda c: c.updated_at, reverse=True)
    choices = [("New conversation", NEW)] + [(f"{c.title} ({time_label(c.updated_at)})", c.id) for c in newest]
    return _pick(choices, current, NEW)


def fast_choice(movie: Movie | None, conversation: Conversation | None = None) -> dict[str, Any]:
    """The Fast answers checkbox: a kept conversation's mode (fixed), else the film's default."""
    if conversation is not None:
        return {"value": conversation.fast, "interactive": False}
    return {"value": fast_by_default(movie), "interactive": True}


def player_html(movie_id: int | None, start: float | None = None) -> str:
    """The film's player; ``start``: where it opens (a search result's line), else the film's start."""
    if movie_id is None:
        return "<p>Pick an indexed film.</p>"
    return (f'<video id="llamavid-player" controls preload="metadata" '
            f'src="{player_src(movie_id, start)}"></video>')


def player_src(movie_id: int, start: float | None = None) -> str:
    """The film's video address; ``start``: a media fragment (``#t=SECONDS``), the browser opens it there."""
    return f"/v1/movies/{int(movie_id)}/video" + (f"#t={float(start):.3f}" if start is not None else "")


def search_choices(matches: Sequence[Any]) -> dict[str, Any]:
    """The library search's results (lines and scenes, best first) as choices: "film · 0:00:40 · the
    line", each one's value ``"MOVIE_ID:START"`` (:func:`search_choice`); none chosen."""
    choices = [(words.search_label(m), f"{m.movie_id}:{m.start:.3f}") for m in matches]
    return {"choices": choices, "value": None, "visible": bool(choices)}


def search_line(query: str, found: int, scenes: int = 0) -> str:
    """What the library search says above its results: ``found`` lines said and ``scenes`` seen."""
    if not query.strip():
        return ""
    if not found and not scenes:
        return words.NO_LINE
    parts = [f"{n} {what}{'s' if n != 1 else ''}" for n, what in ((found, "line"), (scenes, "scene")) if n]
    return f"{' and '.join(parts)} found: pick one to watch it."


def search_choice(value: str | None) -> tuple[int, float] | None:
    """A search result's (film id, start in seconds), from its choice's value (None for none or a bad one)."""
    try:
        movie, start = (value or "").split(":")
        return int(movie), max(0.0, float(start))
    except ValueError:
        return None


def moments_html(moments: Sequence[Mapping[str, Any]] | None, movie_id: int | None = None) -> str:
    """The moments an answer rests on, as links that seek the player (``data-seek``: seconds); with the
    film's ``movie_id``, each has a Save clip link beside it (``GET /v1/movies/{id}/clip``, a download)."""
    if not moments:
        return ""
    links = []
    for m in moments:
        why = html.escape("; ".join(m.get("why") or []), quote=True)
        start, end = float(m["start"]), float(m["end"])
        links.append(f'<a href="#" class="moment" data-seek="{start:.3f}" title="{why}">'
                     f'{words.short_clock(m["start"])}&ndash;{words.short_clock(m["end"])}</a>')
        if movie_id is not None:
            links.append(f'<a class="clip" href="/v1/movies/{int(movie_id)}/clip?start={start:.3f}&amp;end={end:.3f}" '
                         f'download title="Save this moment as a video, 2 s either side">Save clip</a>')
    return '<div class="moments" id="moments-list"><strong>Moments:</strong> ' + "".join(links) + "</div>"


def chat_messages(turns: Iterable[StoredTurn]) -> list[dict[str, str]]:
    """A kept conversation's turns as the chat shows them (a stopped answer says so)."""
    messages = []
    for t in turns:
        messages += [{"role": "user", "content": t.question},
                     {"role": "assistant", "content": t.answer + (f" *({STOPPED})*" if t.stopped else "")}]
    return messages


def history_pairs(history: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """A chat's (question, answer) pairs, for a stateless question's earlier turns."""
    return [(history[i]["content"], history[i + 1]["content"]) for i in range(0, len(history) - 1, 2)
            if history[i]["role"] == "user" and history[i + 1]["role"] == "assistant"]


# -- a question under way -------------------------------------------------------------------------------
def progress_line(event: ChatEvent) -> str | None:
    """The line under the chat for a queued or progress event (None for any other event)."""
    if event.type == "queued":
        return _sentence(words.queue_position(event.position))
    if event.type == "progress" and event.progress is not None and event.progress.phase != "answer":
        return _sentence(event.progress.describe())
    return None


def answer_updates(events: Iterable[ChatEvent], history: Sequence[dict], movie_id: int | None = None
                   ) -> Iterator[tuple[list[dict], str, str | None]]:
    """Follow a question's events: yields (chat history with the answer so far, progress line,
    moments html or None for unchanged; ``movie_id``: the film's, for its moments' Save clip links).
    A cancelled question ends with "(stopped)", a failed one with its error."""
    text = ""
    chat = [*history, {"role": "assistant", "content": ""}]
    for event in events:
        line = progress_line(event)
        if event.type == "text":
            text += event.text
            chat = [*chat[:-1], {"role": "assistant", "content": text}]
            yield chat, "", None
        elif line is not None:
            yield chat, line, None
        elif event.type == "moments":
            yield chat, "", moments_html([m.to_dict() for m in event.moments], movie_id)
        elif event.type == "error":
            note = STOPPED if event.kind == "cancelled" else f"error: {event.text}"
            chat = [*chat[:-1], {"role": "assistant", "content": f"{text}\n\n*({note})*".strip()}]
            yield chat, "", None
        elif event.type == "done" and event.notes:  # the film was thinned: the answer says so
            chat = [*chat[:-1], {"role": "assistant", "content": f"{text}\n\n*{words.reading_note(event.notes)}*"}]
            yield chat, "", None


# -- the library ----------------------------------------------------------------------------------------
def index_cell(movie: Movie, paused: bool = False) -> str:
    """A film's index state (progress, time left, error) with its percent as a bar, as a table cell."""
    state = words.index_state(movie, paused)
    bar = ("" if state.percent is None else
           f' <progress value="{state.percent}" max="100"></progress> {state.percent}%')
    tone = f' class="{state.tone}"' if state.tone else ""
    return f"<td{tone}>{html.escape(state.text)}{bar}</td>"


def library_html(movies: Sequence[Movie], estimates: Mapping[int, int | None], paused: bool = False) -> str:
    """The library table; ``estimates``: the bytes preparing a film will take, by id (when known)."""
    if not movies:
        return "<p>The library is empty: add a folder of films below.</p>"
    rows = [f"<tr><td>{m.id}</td><td>{html.escape(film_title(m))}</td>{index_cell(m, paused)}"
            f"<td>{words.clock(m.duration)}</td><td>{html.escape(words.subtitle_summary(m))}</td>"
            f"<td>{html.escape(words.prepared_label(m, estimates.get(m.id)))}</td></tr>" for m in movies]
    return ('<table class="library"><thead><tr><th>#</th><th>Film</th><th>Index</th><th>Length</th>'
            "<th>Subtitles</th><th>Fast answers</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


def prepare_choices(movies: Iterable[Movie], current: int | None = None) -> dict[str, Any]:
    """Every film of the library (one may be prepared while it is indexed)."""
    choices = [(film_title(m), m.id) for m in movies]
    return _pick(choices, current, choices[0][1] if choices else None)


def prepare_controls(movie: Movie | None, estimate: int | None, seconds: float | None = None
                     ) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """What the film's fast answers are, and its buttons: Prepare, its size shown before the click
    (while not prepared nor asked for), Forget (once prepared or asked for)."""
    if movie is None:
        return "", {"visible": False}, {"visible": False}
    about = f" (about {human_size(estimate)})" if estimate else ""
    name = film_title(movie)
    if movie.prepared_bytes:
        line = f"**{name}** is prepared for fast answers: {human_size(movie.prepared_bytes)} on disk."
    elif movie.prepare_wanted:
        line = f"**{name}** is waiting for the indexer to prepare it{about}."
    else:
        line = (f"**{name}** is not prepared: a fast conversation about it first reads the whole film. "
                f"Preparing it ahead takes{about or ' some'} disk space"
                f"{f' and about {rough_duration(seconds)} on this computer' if seconds else ''}.")
    asked = bool(movie.prepared_bytes or movie.prepare_wanted)
    action = words.prepare_action(movie, estimate, seconds)
    prepare = {"visible": False} if asked else {"value": action, "visible": True}
    return line, prepare, {"value": words.FORGET_PREPARED, "visible": asked}


def queue_markdown(counts: Mapping[str, int], running: bool, paused: bool,
                   estimate: LibraryEstimate | None = None) -> str:
    """The indexer's queue: films per state, whether the indexer runs, paused; then the films still
    to index in order and how long they take on this computer (picking a film puts it first)."""
    parts = [f"{n} {state}" for state, n in sorted(counts.items()) if n]
    line = "Queue: " + (", ".join(parts) if parts else "empty")
    line += " · indexer " + ("running" if running else "idle")
    line += " · **paused**" if paused else ""
    if estimate is not None and estimate.films:
        line += "\n\n" + estimate.describe() + " (a film you open in Movie chat goes first)"
    return line
