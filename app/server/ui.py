"""The web UI (Gradio), mounted into the server's FastAPI app: Movie chat, Quick chat, Library.

It asks through the same chat service as the API (:class:`app.chat_service.ChatService`), so a
question typed here, one sent by an API client and one from the desktop app wait in the same
queue. The film player is a plain ``<video>`` element fed by ``/v1/movies/{id}/video`` (Range
requests: it seeks without downloading the film); Gradio never copies a film. Moments under the
player are links: a click sets the player's ``currentTime`` (a small script in the page's head, :data:`HEAD`).
"Search the dialogue and scenes", under them, finds a line said or a scene seen in the whole library
(:func:`indexer.scenes_search.search_library`, as ``GET /v1/search``; scenes where the scene model is
installed); picking a result opens its film in the player at that time (a ``#t=`` media fragment), or
seeks the player when that film is already open (:data:`SEEK_RESULT`).

"Fast answers" (a conversation that starts from the film's prepared state, see
:mod:`indexer.prepare`) is a checkbox of the Movie chat, on by default for a prepared film; the
Library tab shows which films are prepared and asks the indexer to prepare one, its size shown
on the button before the click.

Where the served model runs on llama.cpp (no GPU holds it in fp16) and its q4_K_M conversion is
not made, the header offers it: its disk space on the button, then progress and Cancel
(:mod:`app.server.converting`, a child process); the model loads from it once done.

What each panel shows is a plain function of :mod:`app.server.views` (no Gradio); this module holds
the layout, one function per tab, and :class:`Handlers`, the events' thin side that reads the
service and the indexer and wraps the views in ``gr.update(...)``.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import gradio as gr

from app import status as st
from app.chat_service import ChatService
from app.film_words import FORGET_PREPARED, fast_answers_note
from app.model_convert import conversion_offer
from app.questions import AskStream
from app.server import views
from app.server.converting import Conversion, ConversionState
from app.server.indexing import Indexer
from app.server.security import SESSION_UPLOADS
from indexer.library import Movie
from indexer.scenes_search import search_library
from indexer.store import LibraryStore
from llamavid.errors import UserError
from llamavid.runtime.generate import SamplingOptions

HEAD = """
<script>
document.addEventListener('click', function (event) {
  const link = event.target.closest('[data-seek]');
  if (!link) return;
  event.preventDefault();
  const player = document.getElementById('llamavid-player');
  if (!player) return;
  player.currentTime = parseFloat(link.dataset.seek);
  player.scrollIntoView({block: 'nearest'});
});
</script>
"""
SEARCH_LIMIT, SEARCH_MAX_CHARS = 20, 500  # the dialogue search's results, and its query's length
# a search result picked for the film already in the player seeks it here, in the page (the handler
# leaves the player alone then); the inputs go on to the handler unchanged
SEEK_RESULT = """
(value, film) => {
  const [id, start] = (value || '').split(':');
  const player = document.getElementById('llamavid-player');
  if (player && id && (player.getAttribute('src') || '').split('#')[0] === '/v1/movies/' + id + '/video') {
    player.currentTime = parseFloat(start);
  }
  return [value, film];
}
"""
CSS = """
#llamavid-player { width: 100%; max-height: 60vh; background: #000; border-radius: 6px; }
.moments a { display: inline-block; margin: 0 .4rem .3rem 0; padding: .1rem .5rem; border-radius: 1rem;
             background: var(--color-accent-soft); text-decoration: none; }
.moments a.clip { background: none; font-size: .85em; margin-left: -.3rem; text-decoration: underline; }
table.library { width: 100%; border-collapse: collapse; }
table.library td, table.library th { padding: .25rem .5rem; border-bottom: 1px solid var(--border-color-primary); }
table.library td.bad { color: var(--error-text-color); }
"""
MOVIE, QUICK = "movie", "quick"  # the two chat tabs, each with its own question under way


def theme() -> Any:
    """The default theme with system fonts: the stock one loads fonts from Google."""
    return gr.themes.Default(font=["system-ui", "Segoe UI", "Helvetica", "Arial", "sans-serif"],
                             font_mono=["ui-monospace", "Consolas", "monospace"])


class UiState:
    """What the UI keeps per browser session and chat tab: the question under way, which that
    tab's Stop cancels (the other tab's question goes on)."""

    def __init__(self) -> None:
        self._requests: dict[tuple[str, str], AskStream] = {}
        self._lock = threading.Lock()

    def start(self, session: str, tab: str, request: AskStream) -> None:
        with self._lock:
            self._requests[session, tab] = request

    def stop(self, session: str, tab: str) -> None:
        with self._lock:
            request = self._requests.pop((session, tab), None)
        if request is not None:
            request.cancel()

    def done(self, session: str, tab: str, request: AskStream) -> None:
        with self._lock:
            if self._requests.get((session, tab)) is request:
                del self._requests[session, tab]


def session_of(request: Any) -> str:
    return getattr(request, "session_hash", None) or "default"


def sampling(temperature: float, max_tokens: float) -> SamplingOptions:
    return SamplingOptions(temperature=float(temperature), max_new_tokens=max(1, int(max_tokens)))


def _user_error(exc: Exception) -> gr.Error:
    """A KeyError's or a UserError's message, for the page."""
    return gr.Error(str(exc.args[0] if isinstance(exc, KeyError) else exc))


class Handlers:
    """What the page's events do: read the service and the indexer, show them through
    :mod:`app.server.views`; every list is re-read on page load and on refresh."""

    def __init__(self, service: ChatService, indexer: Indexer, upload_dir: Path,
                 conversion: Conversion | None = None) -> None:
        self.service, self.indexer, self.upload_dir = service, indexer, upload_dir
        self.running = UiState()
        self._conversion = conversion
        self._loaded_after: ConversionState | None = None  # the finished conversion the model was reloaded for

    # -- what the panels show ---------------------------------------------------------------------------
    def find_movie(self, movie_id: int | None) -> Movie | None:
        try:
            return self.service.movie(int(movie_id)) if movie_id is not None else None
        except KeyError:
            return None

    def setup(self) -> str:
        return views.setup_markdown(self.service, st.collect_status(self.service.data.root))

    def models(self) -> dict[str, Any]:
        return views.model_choices([m.name for m in self.service.models()], self.service.shown_model,
                                   self.service.family)

    def films(self, current: int | None = None) -> dict[str, Any]:
        return views.film_choices(self.service.movies(), current, self.service.can_ask)

    def conversations(self, movie_id: int | None, current: int | None = views.NEW) -> Any:
        kept = self.service.conversations(movie_id) if movie_id is not None else []
        return gr.update(**views.conversation_choices(kept, current))

    def fast(self, movie_id: int | None, conversation_id: int | None = None) -> Any:
        kept = self.service.conversation(conversation_id) if conversation_id else None
        return gr.update(**views.fast_choice(self.find_movie(movie_id), kept))

    def library(self) -> str:
        movies = self.service.movies()
        estimates = {m.id: self.service.prepare_estimate(m) for m in movies
                     if m.prepare_wanted and not m.prepared_bytes}
        return views.library_html(movies, estimates, self.indexer.paused())

    def queue(self) -> str:
        return views.queue_markdown(self.indexer.counts(), self.indexer.running(), self.indexer.paused(),
                                    self.indexer.estimate())

    def prepare_films(self, current: int | None = None) -> dict[str, Any]:
        return views.prepare_choices(self.service.movies(), current)

    def prepare_panel(self, movie_id: int | None) -> tuple[str, Any, Any]:
        movie = self.find_movie(movie_id)
        line, prepare, forget = views.prepare_controls(movie, self.service.prepare_estimate(movie) if movie else None,
                                                       self.service.prepare_seconds(movie) if movie else None)
        where = self.service.preparing().get(movie.id) if movie else None
        if where:  # read ahead in this server's queue, with the model it holds
            line += f" · preparing now: {where}"
        note = fast_answers_note(self.service.prepared_per_hour())  # follows the model and its KV type
        return f"{note}\n\n{line}".strip(), gr.update(**prepare), gr.update(**forget)

    def library_panels(self, prepare_id: int | None) -> tuple:
        return (self.library(), self.queue(), *self.prepare_panel(prepare_id))

    # -- the header -------------------------------------------------------------------------------------
    def refresh_all(self, movie_id: int | None, prepare_id: int | None) -> tuple:
        installed = self.service.models()
        if self.service.shown_model is None and installed:  # a model was installed since the server started
            self.service.select_model(installed[0].name)
        film = self.films(movie_id)
        chosen = film["value"]
        prepare = self.prepare_films(prepare_id)
        return (self.setup(), gr.update(**self.models()), gr.update(**film), views.player_html(chosen),
                self.conversations(chosen), self.fast(chosen), self.library(), self.queue(), gr.update(**prepare),
                *self.prepare_panel(prepare["value"]))

    # -- the llama.cpp conversion -------------------------------------------------------------------
    def conversion(self) -> Conversion:
        if self._conversion is None:
            self._conversion = Conversion(self.service.data)
        return self._conversion

    def _offer(self) -> Any:
        return conversion_offer(self.service.data, self.service.model_name, self.service.load_options)

    def convert_panel(self) -> tuple[str, Any, Any, str]:
        """The conversion's line, Convert (with its size), Cancel and progress; once one is done, the
        model loads from it (once)."""
        state = self.conversion().state()
        if state.outcome == "done" and state is not self._loaded_after:
            self._loaded_after = state
            self.service.warm_up()
        line, convert, cancel, bar = views.conversion_controls(None if state.running else self._offer(), state)
        return line, gr.update(**convert), gr.update(**cancel), bar

    def start_convert(self) -> tuple[str, Any, Any, str]:
        offer = self._offer()
        if offer is None:
            raise gr.Error("Nothing to convert: the model runs as it is here (or its conversion is done).")
        if not offer.fits:
            raise gr.Error("Not enough free disk space for the conversion: free some first.")
        self.conversion().start(offer.name)
        return self.convert_panel()

    def cancel_convert(self) -> tuple[str, Any, Any, str]:
        self.conversion().cancel()
        return self.convert_panel()

    def pick_model(self, name: str | None) -> str:
        if name:
            try:
                self.service.select_model(name)
            except (KeyError, UserError) as exc:
                raise _user_error(exc) from None
        return self.setup()

    # -- the chats --------------------------------------------------------------------------------------
    def pick_film(self, movie_id: int | None) -> tuple:
        movie = self.find_movie(movie_id)
        if movie is not None and not movie.features_complete:
            self.indexer.open_film(movie.id)  # a film a person opens is indexed next
        return (views.player_html(movie_id), self.conversations(movie_id), [], "", None, "", self.fast(movie_id))

    def search(self, query: str) -> tuple[str, Any]:
        """The library search, lines and scenes: its line and its results (:func:`views.search_choices`)."""
        query = (query or "").strip()
        if len(query) > SEARCH_MAX_CHARS:
            raise gr.Error(f"Search for at most {SEARCH_MAX_CHARS} characters.")
        found = []
        if query:
            with LibraryStore.open(self.service.data.database) as store:
                found = search_library(store, query, "all", limit=SEARCH_LIMIT, data_root=self.service.data.root)
        scenes = sum(m.kind == "scene" for m in found)
        return views.search_line(query, len(found) - scenes, scenes), gr.update(**views.search_choices(found))

    def open_result(self, value: str | None, movie_id: int | None) -> tuple:
        """A search result picked: its film chosen and its player opened at the line; the film already
        chosen keeps its conversation (the page seeks its player: :data:`SEEK_RESULT`)."""
        picked = views.search_choice(value)
        if picked is None:
            return (gr.update(),) * 8
        film, start = picked
        if movie_id is not None and int(movie_id) == film:
            return (gr.update(),) * 8
        films = self.films(film)
        if films["value"] != film:
            raise gr.Error("That film cannot be opened in Movie chat yet: see the Library tab.")
        player, *rest = self.pick_film(film)
        return (gr.update(**films), views.player_html(film, start), *rest)

    def pick_conversation(self, conversation_id: int | None, movie_id: int | None) -> tuple:
        if not conversation_id:
            return [], "", None, self.fast(movie_id)
        kept = self.service.conversation(conversation_id)
        turns = kept.shown_turns
        return (views.chat_messages(turns), views.moments_html(turns[-1].moments if turns else None, movie_id),
                conversation_id, gr.update(**views.fast_choice(self.find_movie(movie_id), kept)))

    def _need_model(self) -> None:
        if self.service.shown_model is None:
            raise gr.Error("No model is installed yet: see the instructions at the top of the page.")

    @staticmethod
    def _ask(ask: Callable[[], AskStream]) -> AskStream:
        try:
            return ask()
        except UserError as exc:
            raise gr.Error(str(exc)) from None

    def follow(self, job: AskStream, history: list, session: str, tab: str,
               movie_id: int | None = None) -> Iterator[tuple]:
        """The question's updates (:func:`views.answer_updates`; ``movie_id``: a film's, whose moments
        get Save clip links); Stop in ``tab`` cancels it, and so does a page that goes away (the
        generator is closed)."""
        self.running.start(session, tab, job)
        try:
            yield from views.answer_updates(job, history, movie_id)
        finally:
            self.running.done(session, tab, job)
            if not job.finished:
                job.cancel()

    def ask_movie(self, question: str, movie_id: int | None, conversation_id: int | None, history: list,
                  temperature: float, max_tokens: float, fast: bool, request: gr.Request) -> Iterator[tuple]:
        question = (question or "").strip()
        if not question:
            raise gr.Error("Type a question about the film.")
        if movie_id is None:
            raise gr.Error("Pick an indexed film first.")
        self._need_model()
        options = sampling(temperature, max_tokens)
        if conversation_id:
            job = self._ask(lambda: self.service.ask(conversation_id, question, options))
        else:  # a new conversation is made on the worker once the question is admitted: a refused one leaves none
            job = self._ask(lambda: self.service.ask_film(int(movie_id), question, fast=bool(fast), options=options))
        chat = history = [*history, {"role": "user", "content": question}]
        moments = gr.update()
        for chat, line, found in self.follow(job, history, session_of(request), MOVIE, int(movie_id)):
            moments = moments if found is None else found
            fixed = self.fast(movie_id, job.conversation_id) if job.conversation_id else gr.update(interactive=False)
            yield chat, line, moments, job.conversation_id, "", gr.update(), fixed
        conversation_id = job.conversation_id
        fixed = self.fast(movie_id, conversation_id)  # a kept conversation's mode is fixed from now on
        yield chat, "", moments, conversation_id, "", self.conversations(movie_id, conversation_id), fixed

    def ask_quick(self, question: str, image: str | None, video: str | None, history: list, temperature: float,
                  max_tokens: float, request: gr.Request) -> Iterator[tuple]:
        question = (question or "").strip()
        if not question:
            raise gr.Error("Type a question about the picture or the video.")
        self._need_model()
        if image and video:
            raise gr.Error("Ask about the image or the video, not both: remove one of them.")
        # the image is read on the service's worker, once the question is admitted
        job = self._ask(lambda: self.service.ask_about(
            question, images=[image] if image else [], video=video or None, history=views.history_pairs(history),
            options=sampling(temperature, max_tokens)))
        history = [*history, {"role": "user", "content": question}]
        for chat, line, _ in self.follow(job, history, session_of(request), QUICK):
            yield chat, line, ""

    def stop_movie(self, request: gr.Request) -> None:
        self.running.stop(session_of(request), MOVIE)

    def stop_quick(self, request: gr.Request) -> None:
        self.running.stop(session_of(request), QUICK)

    def forget_upload(self, path: str | None) -> None:
        """Delete this session's own copy of an upload (:meth:`keep_upload`), and its folder, once the
        upload is replaced or removed or the session ends (``gr.State``'s delete_callback). Nothing else
        is deleted: Gradio's cached file may be another session's upload of the same content (Gradio names
        it by a hash of the content), so it is left to Gradio's sweep (``delete_cache``)."""
        own = session_copy_of(self.upload_dir, path)
        if own is not None:
            own.unlink(missing_ok=True)
            with contextlib.suppress(OSError):  # not empty, or gone already: left alone
                own.parent.rmdir()

    def keep_upload(self, new: str | None, old: str | None) -> tuple[str | None, list]:
        """The session's own copy of a new upload (None when the upload was removed) for its ``gr.State``,
        the session's previous copy deleted; a new picture starts a new quick chat."""
        self.forget_upload(old)
        return (str(copy_for_session(self.upload_dir, Path(new))) if new else None), []

    # -- the library ------------------------------------------------------------------------------------
    def add_folder(self, folder: str) -> tuple[str, str, str]:
        folder = (folder or "").strip()
        if not folder:
            raise gr.Error("Type the path of a folder of films on this computer.")
        try:
            report = self.indexer.add_folder(folder)
        except UserError as exc:
            raise gr.Error(str(exc)) from None
        return self.library(), self.queue(), f"Added {folder}: {report.summary()}"

    def start_indexing(self) -> tuple[str, str]:
        if not self.indexer.start():
            gr.Info("Nothing to index (or the queue is paused: press Resume).")
        return self.library(), self.queue()

    def pause(self) -> str:
        self.indexer.pause()
        return self.queue()

    def resume(self) -> tuple[str, str]:
        self.indexer.resume()
        return self.library(), self.queue()

    def set_prepared(self, movie_id: int | None, wanted: bool) -> tuple:
        if movie_id is None:
            raise gr.Error("Pick a film first.")
        try:
            message = self.service.set_prepared(int(movie_id), wanted)
        except (KeyError, UserError) as exc:
            raise _user_error(exc) from None
        movie = self.find_movie(movie_id)
        if wanted and movie is not None and not movie.features_complete and not self.indexer.start():
            message += " (the indexer starts when the queue is resumed)" if self.indexer.paused() else ""
        gr.Info(message)
        return self.library_panels(movie_id)

    def prepare(self, movie_id: int | None) -> tuple:
        return self.set_prepared(movie_id, True)

    def forget(self, movie_id: int | None) -> tuple:
        return self.set_prepared(movie_id, False)


# -- the uploads of the quick chat ---------------------------------------------------------------------------
def copy_for_session(upload_dir: Path, upload: Path) -> Path:
    """A copy of ``upload`` that belongs to one session alone: ``<upload_dir>/sessions/<id>/<name>``.

    Gradio keeps an upload at a path made from a hash of its content, so two sessions that upload the
    same picture get the same file, and deleting it for one would take it from the other. The id is
    random (never derived from the content) and new for every upload; the copy is a hard link where
    the file system allows one (no bytes copied), else a copy.
    """
    sessions = upload_dir / SESSION_UPLOADS
    sessions.mkdir(mode=0o700, exist_ok=True)
    copy = Path(tempfile.mkdtemp(dir=sessions)) / _safe_name(upload.name)
    try:
        os.link(upload, copy)
    except OSError:  # another file system, or one without hard links
        shutil.copyfile(upload, copy)
    return copy


def _safe_name(name: str) -> str:
    """The upload's own name for its copy (a name never holds a separator here), never ``.`` or ``..``."""
    return name if name not in ("", ".", "..") else "upload"


def session_copy_of(upload_dir: Path, path: str | None) -> Path | None:
    """``path`` if it is a session's copy made by :func:`copy_for_session` (a file, not a link, directly
    in a folder of ``<upload_dir>/sessions``, every link of the way resolved), else None: what a
    session's state names is checked before anything is deleted."""
    if not path or Path(path).is_symlink():
        return None
    real = Path(os.path.realpath(path))
    sessions = Path(os.path.realpath(upload_dir / SESSION_UPLOADS))
    return real if real.parent.parent == sessions and real.is_file() else None


# -- the page -----------------------------------------------------------------------------------------------
class Header(NamedTuple):
    model: Any
    refresh: Any
    status: Any
    temperature: Any
    max_tokens: Any
    convert: ConvertRow


class ConvertRow(NamedTuple):
    info: Any
    start: Any
    cancel: Any
    progress: Any
    ticker: Any

    @property
    def panels(self) -> list[Any]:
        """What :meth:`Handlers.convert_panel` fills."""
        return [self.info, self.start, self.cancel, self.progress]


class ChatArea(NamedTuple):
    chat: Any
    progress: Any
    question: Any
    ask: Any
    stop: Any


class SearchRow(NamedTuple):
    query: Any
    go: Any
    info: Any
    results: Any


class MovieTab(NamedTuple):
    film: Any
    player: Any
    moments: Any
    conversation: Any
    conversation_id: Any
    fast: Any
    chat: ChatArea
    search: SearchRow


class QuickTab(NamedTuple):
    image: Any
    video: Any
    image_path: Any
    video_path: Any
    chat: ChatArea


class LibraryTab(NamedTuple):
    table: Any
    queue: Any
    index_now: Any
    pause: Any
    resume: Any
    folder: Any
    add: Any
    added: Any
    prepare_film: Any
    prepare_info: Any
    prepare: Any
    forget: Any
    ticker: Any

    @property
    def panels(self) -> list[Any]:
        """What :meth:`Handlers.library_panels` fills."""
        return [self.table, self.queue, self.prepare_info, self.prepare, self.forget]


def build_ui(service: ChatService, indexer: Indexer, upload_dir: Path, conversion: Conversion | None = None) -> Any:
    """The Blocks (see the module docstring)."""
    ui = Handlers(service, indexer, upload_dir, conversion)
    with gr.Blocks(title=f"{st.TITLE} - movie assistant", delete_cache=(1800, 3600)) as demo:
        header = _header(ui)
        films = ui.films()
        with gr.Tabs(selected=MOVIE if films["value"] is not None else "library"):
            movie = _movie_tab(ui, films)
            quick = _quick_tab(ui)
            library = _library_tab(ui)
        _wire(demo, ui, header, movie, quick, library)
    return demo


def _header(ui: Handlers) -> Header:
    """The title, the model picker, Refresh, the model's line and the answer settings."""
    with gr.Row(equal_height=True):
        gr.Markdown(f"# {st.TITLE}", elem_id="title")
        model = gr.Dropdown(label="Model", elem_id="model", interactive=True, scale=0, min_width=280, **ui.models())
        refresh = gr.Button("Refresh", elem_id="refresh", size="sm", scale=0, min_width=100)
    status = gr.Markdown(ui.setup(), elem_id="status")
    convert = _convert_row()
    with gr.Accordion("Answer settings", open=False, elem_id="answer-settings"):
        with gr.Row():
            temperature = gr.Slider(0, 1.5, value=SamplingOptions.temperature, step=0.05, label="Temperature",
                                    info="0: always the most likely words", elem_id="temperature")
            max_tokens = gr.Slider(1, 2048, value=SamplingOptions.max_new_tokens, step=1,
                                   label="Longest answer (tokens)", elem_id="max-tokens")
    return Header(model, refresh, status, temperature, max_tokens, convert)


def _convert_row() -> ConvertRow:
    """The llama.cpp conversion the served model needs here (hidden while none is): its line,
    Convert with its disk space, Cancel, the progress bar; refreshed every second."""
    with gr.Row(equal_height=True):
        info = gr.Markdown("", elem_id="convert-info")
        start = gr.Button("Convert for llama.cpp", elem_id="convert", variant="primary", visible=False, scale=0,
                          min_width=260)
        cancel = gr.Button("Cancel conversion", elem_id="convert-cancel", visible=False, scale=0, min_width=180)
    progress = gr.HTML("", elem_id="convert-progress")
    return ConvertRow(info, start, cancel, progress, gr.Timer(1))


def _chat_area(name: str, placeholder: str) -> ChatArea:
    """The answers, the progress line, the question box and Ask / Stop of one chat tab; element ids
    ``NAME-chat``, ``NAME-progress``, ``NAME-question``, ``NAME-ask``, ``NAME-stop`` (the browser tests
    find them by these)."""
    chat = gr.Chatbot(elem_id=f"{name}-chat", height=420, show_label=False)
    progress = gr.Markdown("", elem_id=f"{name}-progress")
    question = gr.Textbox(elem_id=f"{name}-question", show_label=False, lines=2, placeholder=placeholder)
    with gr.Row():
        ask = gr.Button("Ask", variant="primary", elem_id=f"{name}-ask")
        stop = gr.Button("Stop", elem_id=f"{name}-stop")
    return ChatArea(chat, progress, question, ask, stop)


def _movie_tab(ui: Handlers, films: dict[str, Any]) -> MovieTab:
    """The film and its player with the moments under it; the conversation, Fast answers and the chat."""
    chosen = films["value"]
    with gr.Tab("Movie chat", id=MOVIE), gr.Row():
        with gr.Column(scale=3):
            film = gr.Dropdown(label="Film", elem_id="film", interactive=True, **films)
            player = gr.HTML(views.player_html(chosen), elem_id="player")
            moments = gr.HTML("", elem_id="moments")
            search = _search_row()
        with gr.Column(scale=2):
            kept = views.conversation_choices(ui.service.conversations(chosen) if chosen is not None else [])
            conversation = gr.Dropdown(label="Conversation", elem_id="conversation", interactive=True, **kept)
            conversation_id = gr.State(None)
            fast = gr.Checkbox(label="Fast answers", elem_id="fast-answers", info=views.FAST_INFO,
                               **views.fast_choice(ui.find_movie(chosen)))
            chat = _chat_area(MOVIE, "Ask about the film (Shift+Enter for a new line)")
    return MovieTab(film, player, moments, conversation, conversation_id, fast, chat, search)


def _search_row() -> SearchRow:
    """Search the dialogue and scenes: a line someone remembers, found in every film's subtitles, or
    what they saw, where the films have scene vectors; the results (film · time · line) open the film
    there."""
    with gr.Row(equal_height=True):
        query = gr.Textbox(label="Search the dialogue and scenes", elem_id="search-query", scale=4,
                           placeholder="a line you remember, or what you saw, in any film of the library")
        go = gr.Button("Search", elem_id="search", scale=1)
    info = gr.Markdown("", elem_id="search-info")
    results = gr.Radio(choices=[], value=None, label="Lines and scenes", elem_id="search-results", visible=False,
                       interactive=True)
    return SearchRow(query, go, info, results)


def _quick_tab(ui: Handlers) -> QuickTab:
    """A picture or a short video uploaded from this browser, and the chat about it."""
    with gr.Tab("Quick chat", id=QUICK), gr.Row():
        with gr.Column(scale=2):
            image = gr.Image(type="filepath", sources=["upload", "clipboard"], label="Image", elem_id="quick-image")
            video = gr.File(file_types=["video"], type="filepath", label="Short video", elem_id="quick-video")
            # the session's own copies of its uploads (Handlers.keep_upload), asked about and deleted when
            # replaced, removed, or when the session ends
            image_path = gr.State(None, delete_callback=ui.forget_upload)
            video_path = gr.State(None, delete_callback=ui.forget_upload)
        with gr.Column(scale=3):
            chat = _chat_area(QUICK, "Ask about the picture or the video")
    return QuickTab(image, video, image_path, video_path, chat)


def _library_tab(ui: Handlers) -> LibraryTab:
    """The films and the queue, index now / pause / resume, add a folder, and fast answers per film."""
    with gr.Tab("Library", id="library"):
        table = gr.HTML(ui.library(), elem_id="library")
        queue = gr.Markdown(ui.queue(), elem_id="queue")
        with gr.Row():
            index_now = gr.Button("Index now", elem_id="index-now")
            pause = gr.Button("Pause", elem_id="pause")
            resume = gr.Button("Resume", elem_id="resume")
        with gr.Row():
            allowed = ui.indexer.may_add_folders
            folder = gr.Textbox(label="Add a folder of films (on this computer)", elem_id="folder", scale=4,
                                interactive=allowed, placeholder=None if allowed else
                                "this server adds no folders from the page: `llamavid index add FOLDER` on it")
            add = gr.Button("Add folder", elem_id="add-folder", scale=1, interactive=allowed)
        added = gr.Markdown("", elem_id="added")
        gr.Markdown("### Fast answers")
        with gr.Row():
            prepare_film = gr.Dropdown(label="Film", elem_id="prepare-film", interactive=True, scale=2,
                                       **ui.prepare_films())
            prepare_info = gr.Markdown(elem_id="prepare-info")
        with gr.Row():
            prepare = gr.Button("Prepare for fast answers", elem_id="prepare", visible=False)
            forget = gr.Button(FORGET_PREPARED, elem_id="forget-prepared", visible=False)
        ticker = gr.Timer(5)
    return LibraryTab(table, queue, index_now, pause, resume, folder, add, added, prepare_film, prepare_info,
                      prepare, forget, ticker)


def _wire(demo: Any, ui: Handlers, header: Header, movie: MovieTab, quick: QuickTab, library: LibraryTab) -> None:
    """Every event of the page: what it runs, reads and updates."""
    everything = [header.status, header.model, movie.film, movie.player, movie.conversation, movie.fast,
                  library.table, library.queue, library.prepare_film, library.prepare_info, library.prepare,
                  library.forget]
    for event in (demo.load, header.refresh.click):
        event(ui.refresh_all, inputs=[movie.film, library.prepare_film], outputs=everything)
    header.model.input(ui.pick_model, inputs=header.model, outputs=header.status)
    c = header.convert
    for event in (demo.load, header.refresh.click, header.model.input):
        event(ui.convert_panel, None, c.panels, show_progress="hidden")
    c.start.click(ui.start_convert, None, c.panels)
    c.cancel.click(ui.cancel_convert, None, c.panels)
    c.ticker.tick(ui.convert_panel, None, c.panels, show_progress="hidden")
    settings = [header.temperature, header.max_tokens]

    m = movie.chat
    movie.film.input(ui.pick_film, inputs=movie.film, outputs=[movie.player, movie.conversation, m.chat,
                                                               movie.moments, movie.conversation_id, m.progress,
                                                               movie.fast])
    movie.conversation.input(ui.pick_conversation, inputs=[movie.conversation, movie.film],
                             outputs=[m.chat, movie.moments, movie.conversation_id, movie.fast])
    ask_inputs = [m.question, movie.film, movie.conversation_id, m.chat, *settings, movie.fast]
    ask_outputs = [m.chat, m.progress, movie.moments, movie.conversation_id, m.question, movie.conversation,
                   movie.fast]
    for event in (m.ask.click, m.question.submit):
        event(ui.ask_movie, ask_inputs, ask_outputs, concurrency_limit=None)
    m.stop.click(ui.stop_movie, None, None, concurrency_limit=None)
    s = movie.search
    for event in (s.go.click, s.query.submit):
        event(ui.search, s.query, [s.info, s.results])
    s.results.input(ui.open_result, [s.results, movie.film],
                    [movie.film, movie.player, movie.conversation, m.chat, movie.moments, movie.conversation_id,
                     m.progress, movie.fast], js=SEEK_RESULT)

    q = quick.chat
    quick.image.change(ui.keep_upload, [quick.image, quick.image_path], [quick.image_path, q.chat])
    quick.video.change(ui.keep_upload, [quick.video, quick.video_path], [quick.video_path, q.chat])
    for event in (q.ask.click, q.question.submit):
        event(ui.ask_quick, [q.question, quick.image_path, quick.video_path, q.chat, *settings],
              [q.chat, q.progress, q.question], concurrency_limit=None)
    q.stop.click(ui.stop_quick, None, None, concurrency_limit=None)

    library.add.click(ui.add_folder, library.folder, [library.table, library.queue, library.added])
    library.index_now.click(ui.start_indexing, None, [library.table, library.queue])
    library.pause.click(ui.pause, None, library.queue)
    library.resume.click(ui.resume, None, [library.table, library.queue])
    library.prepare_film.input(ui.prepare_panel, library.prepare_film,
                               [library.prepare_info, library.prepare, library.forget])
    library.prepare.click(ui.prepare, library.prepare_film, library.panels)
    library.forget.click(ui.forget, library.prepare_film, library.panels)
    library.ticker.tick(ui.library_panels, library.prepare_film, library.panels, show_progress="hidden")
