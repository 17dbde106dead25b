"""The web UI (Gradio), mounted into the server's FastAPI app: Movie chat, Quick chat, Library.

It asks through the same engine as the API (:mod:`app.server.engine`), so a question typed here
and one sent by an API client wait in the same queue. The film player is a plain ``<video>``
element fed by ``/v1/movies/{id}/video`` (Range requests: it seeks without downloading the film);
Gradio never copies a film. Moments under the player are links: a click sets the player's
``currentTime`` (a small script in the page's head, :data:`HEAD`).

"Fast answers" (a conversation that starts from the film's prepared state, see
:mod:`indexer.prepare`) is a checkbox of the Movie chat, on by default for a prepared film; the
Library tab shows which films are prepared and asks the indexer to prepare one, its size shown
on the button before the click.
"""
from __future__ import annotations

import html
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gradio as gr

from app import status as st
from app.chat_service import ChatEvent, fast_by_default
from app.server.engine import ConversationJob, DirectJob, Engine, Request, short_title
from app.server.indexing import Indexer
from app.server.routes import movie_object
from indexer.library import Movie
from llamavid.errors import UserError
from llamavid.media.load import load_image
from llamavid.runtime.generate import SamplingOptions
from llamavid.storage import human_size

log = logging.getLogger(__name__)

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
CSS = """
#llamavid-player { width: 100%; max-height: 60vh; background: #000; border-radius: 6px; }
.moments a { display: inline-block; margin: 0 .4rem .3rem 0; padding: .1rem .5rem; border-radius: 1rem;
             background: var(--color-accent-soft); text-decoration: none; }
table.library { width: 100%; border-collapse: collapse; }
table.library td, table.library th { padding: .25rem .5rem; border-bottom: 1px solid var(--border-color-primary); }
"""
NEW = 0  # the conversation dropdown's "new conversation"
FAST_INFO = ("Answers start from the film read once ahead (seconds instead of minutes); "
             "exact mode reads the film with your question.")


def prepared_label(movie: Movie, estimate: int | None) -> str:
    """What the library says about a film's fast answers: its prepared size, or what it will take."""
    if movie.prepared_bytes:
        return f"prepared ({human_size(movie.prepared_bytes)})"
    about = f" (about {human_size(estimate)})" if estimate else ""
    return f"to be prepared{about}" if movie.prepare_wanted else "no"


def theme() -> Any:
    """The default theme with system fonts: the stock one loads fonts from Google."""
    return gr.themes.Default(font=["system-ui", "Segoe UI", "Helvetica", "Arial", "sans-serif"],
                             font_mono=["ui-monospace", "Consolas", "monospace"])


def clock(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def moments_html(moments: list[dict] | None) -> str:
    if not moments:
        return ""
    links = []
    for m in moments:
        why = html.escape("; ".join(m.get("why") or []), quote=True)
        links.append(f'<a href="#" class="moment" data-seek="{float(m["start"]):.3f}" title="{why}">'
                     f'{clock(m["start"])}&ndash;{clock(m["end"])}</a>')
    return '<div class="moments" id="moments-list"><strong>Moments:</strong> ' + "".join(links) + "</div>"


def player_html(movie_id: int | None) -> str:
    if movie_id is None:
        return "<p>Pick an indexed film.</p>"
    return (f'<video id="llamavid-player" controls preload="metadata" '
            f'src="/v1/movies/{int(movie_id)}/video"></video>')


def progress_text(event: ChatEvent) -> str | None:
    if event.type == "queued":
        return f"Waiting for the model: {event.position} question(s) ahead" if event.position else "Starting..."
    if event.type == "progress" and event.progress is not None and event.progress.phase != "answer":
        return event.progress.describe().capitalize()
    return None


class UiState:
    """What the UI keeps per browser session: the request under way (Stop cancels it)."""

    def __init__(self) -> None:
        self._requests: dict[str, Request] = {}
        self._lock = threading.Lock()

    def start(self, session: str, request: Request) -> None:
        with self._lock:
            self._requests[session] = request

    def stop(self, session: str) -> None:
        with self._lock:
            request = self._requests.pop(session, None)
        if request is not None:
            request.cancel()

    def done(self, session: str, request: Request) -> None:
        with self._lock:
            if self._requests.get(session) is request:
                del self._requests[session]


def build_ui(engine: Engine, indexer: Indexer, upload_dir: Path) -> Any:
    """The Blocks (see the module docstring); every list is re-read on page load and on refresh."""
    running = UiState()

    def session(request: Any) -> str:
        return getattr(request, "session_hash", None) or "default"

    # -- what the panels show --------------------------------------------------------------------------
    def setup_markdown() -> str:
        status = st.collect_status(engine.data.root)
        if engine.model_name is None:
            return f"{st.TAGLINE}\n\n**Data folder:** `{status.data_dir}`\n\n{st.instructions_markdown(status)}"
        loaded = "loaded" if engine.model_loaded else (engine.load_error or "loads with the first question")
        return f"**Model:** `{engine.model_name}` ({loaded}) · **Data folder:** `{status.data_dir}`"

    def model_choices() -> Any:
        names = [m.name for m in engine.models()]
        current = engine.model_name
        if current and current not in names:
            names.insert(0, current)
        return gr.update(choices=names, value=current, visible=len(names) > 1)

    def films() -> list[tuple[str, int]]:
        return [(Path(m.rel_path).stem, m.id) for m in engine.service.movies() if m.features_complete]

    def find_movie(movie_id: int | None) -> Movie | None:
        try:
            return engine.service.movie(int(movie_id)) if movie_id is not None else None
        except KeyError:
            return None

    def fast_choice(movie_id: int | None, conversation: int | None = None) -> Any:
        """The checkbox for a new conversation (the film's default), or a kept one's mode (fixed)."""
        if conversation:
            return gr.update(value=engine.service.conversation(conversation).fast, interactive=False)
        return gr.update(value=fast_by_default(find_movie(movie_id)), interactive=True)

    def film_choices(current: int | None = None) -> Any:
        choices = films()
        ids = [i for _, i in choices]
        value = current if current in ids else (ids[0] if ids else None)
        return gr.update(choices=choices, value=value)

    def conversation_choices(movie_id: int | None, current: int | None = NEW) -> Any:
        choices = [("New conversation", NEW)]
        if movie_id is not None:
            choices += [(f"{c.title} ({time_label(c.updated_at)})", c.id)
                        for c in engine.service.conversations(movie_id)]
        ids = [i for _, i in choices]
        return gr.update(choices=choices, value=current if current in ids else NEW)

    def library_html() -> str:
        movies = engine.service.movies()
        if not movies:
            return "<p>The library is empty: add a folder of films below.</p>"
        rows = []
        for m in movies:
            info = movie_object(m)
            done, total = info["progress"]["done"], info["progress"]["total"]
            state = m.state
            if m.state in ("running", "queued") and total:
                state += f" {100 * done // max(total, 1)}%"
                if m.eta_seconds:
                    state += f", {clock(m.eta_seconds)} left"
            if m.error:
                state += f": {m.error}"
            tracks = ", ".join(sorted({t["language"] or "?" for t in info["subtitle_tracks"]})) or "none"
            estimate = engine.service.prepare_estimate(m) if m.prepare_wanted and not m.prepared_bytes else None
            rows.append(f"<tr><td>{m.id}</td><td>{html.escape(info['title'])}</td><td>{html.escape(state)}</td>"
                        f"<td>{clock(m.duration)}</td><td>{html.escape(tracks)}</td>"
                        f"<td>{html.escape(prepared_label(m, estimate))}</td></tr>")
        return ('<table class="library"><thead><tr><th>#</th><th>Film</th><th>Index</th><th>Length</th>'
                "<th>Subtitles</th><th>Fast answers</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>")

    def prepare_choices(current: int | None = None) -> Any:
        choices = [(Path(m.rel_path).stem, m.id) for m in engine.service.movies()]
        ids = [i for _, i in choices]
        return gr.update(choices=choices, value=current if current in ids else (ids[0] if ids else None))

    def prepare_controls(movie_id: int | None) -> tuple[Any, Any, Any]:
        """What the film's fast answers are, and the buttons: Prepare with its size before the click
        (while not prepared nor asked for), Forget (once prepared or asked for)."""
        movie = find_movie(movie_id)
        if movie is None:
            return "", gr.update(visible=False), gr.update(visible=False)
        estimate = engine.service.prepare_estimate(movie)
        about = f" (about {human_size(estimate)})" if estimate else ""
        name = Path(movie.rel_path).stem
        if movie.prepared_bytes:
            line = f"**{name}** is prepared for fast answers: {human_size(movie.prepared_bytes)} on disk."
        elif movie.prepare_wanted:
            line = f"**{name}** is waiting for the indexer to prepare it{about}."
        else:
            line = (f"**{name}** is not prepared: a fast conversation about it first reads the whole film. "
                    f"Preparing it ahead takes{about or ' some'} disk space.")
        asked = bool(movie.prepared_bytes or movie.prepare_wanted)
        return (line, gr.update(value=f"Prepare for fast answers{about}", visible=not asked),
                gr.update(visible=asked))

    def queue_markdown() -> str:
        counts = indexer.counts()
        parts = [f"{n} {state}" for state, n in sorted(counts.items()) if n]
        line = "Queue: " + (", ".join(parts) if parts else "empty")
        line += " · indexer " + ("running" if indexer.running() else "idle")
        if indexer.paused():
            line += " · **paused**"
        return line

    # -- actions ------------------------------------------------------------------------------------
    def refresh_all(movie_id: int | None, prepare_id: int | None) -> tuple:
        installed = engine.models()
        if engine.model_name is None and installed:  # a model was installed since the server started
            engine.select_model(installed[0].name)
        film = film_choices(movie_id)
        chosen = film["value"]
        prepare = prepare_choices(prepare_id)
        return (setup_markdown(), model_choices(), film, player_html(chosen), conversation_choices(chosen),
                fast_choice(chosen), library_html(), queue_markdown(), prepare, *prepare_controls(prepare["value"]))

    def pick_model(name: str | None) -> str:
        if name:
            try:
                engine.select_model(name)
            except (KeyError, UserError) as exc:
                raise gr.Error(str(exc.args[0] if isinstance(exc, KeyError) else exc)) from None
        return setup_markdown()

    def pick_film(movie_id: int | None) -> tuple:
        return player_html(movie_id), conversation_choices(movie_id), [], "", None, "", fast_choice(movie_id)

    def pick_conversation(conversation_id: int | None, movie_id: int | None) -> tuple:
        if not conversation_id:
            return [], "", None, fast_choice(movie_id)
        conv = engine.service.conversation(conversation_id)
        turns = list(getattr(conv, "shown_turns", conv.turns))
        messages = []
        for t in turns:
            messages += [{"role": "user", "content": t.question},
                         {"role": "assistant", "content": t.answer + (" *(stopped)*" if t.stopped else "")}]
        return (messages, moments_html(turns[-1].moments if turns else None), conversation_id,
                fast_choice(movie_id, conversation_id))

    def answer(request: Request, history: list, user_session: str) -> Iterator[tuple[list, str, str | None]]:
        """Follow a request, yielding (chat, progress line, moments html or None for unchanged)."""
        text = ""
        history = [*history, {"role": "assistant", "content": ""}]
        try:
            for event in request:
                line = progress_text(event)
                if event.type == "text":
                    text += event.text
                    history[-1] = {"role": "assistant", "content": text}
                    yield history, "", None
                elif line is not None:
                    yield history, line, None
                elif event.type == "moments":
                    yield history, "", moments_html([m.to_dict() for m in event.moments])
                elif event.type == "error":
                    note = "stopped" if event.kind == "cancelled" else f"error: {event.text}"
                    history[-1] = {"role": "assistant", "content": f"{text}\n\n*({note})*".strip()}
                    yield history, "", None
        finally:
            running.done(user_session, request)
            if not request.finished:
                request.cancel()

    def ask_movie(question: str, movie_id: int | None, conversation_id: int | None, history: list,
                  temperature: float, max_tokens: float, fast: bool, request: gr.Request) -> Iterator[tuple]:
        question = (question or "").strip()
        if not question:
            raise gr.Error("Type a question about the film.")
        if movie_id is None:
            raise gr.Error("Pick an indexed film first.")
        if engine.model_name is None:
            raise gr.Error("No model is installed yet: see the instructions at the top of the page.")
        if not conversation_id:
            conversation_id = engine.service.new_conversation(movie_id, title=short_title(question),
                                                              fast=bool(fast)).id
        try:
            job = engine.submit(ConversationJob(question, sampling(temperature, max_tokens),
                                                conversation_id=conversation_id))
        except UserError as exc:
            raise gr.Error(str(exc)) from None
        user_session = session(request)
        running.start(user_session, job)
        history = [*history, {"role": "user", "content": question}]
        moments = gr.update()
        fixed = fast_choice(movie_id, conversation_id)  # the conversation's mode, fixed from now on
        for chat, line, found in answer(job, history, user_session):
            if found is not None:
                moments = found
            yield chat, line, moments, conversation_id, "", gr.update(), fixed
        yield chat, "", moments, conversation_id, "", conversation_choices(movie_id, conversation_id), fixed

    def stop(request: gr.Request) -> None:
        running.stop(session(request))

    def ask_quick(question: str, image: str | None, video: str | None, history: list, temperature: float,
                  max_tokens: float, request: gr.Request) -> Iterator[tuple]:
        question = (question or "").strip()
        if not question:
            raise gr.Error("Type a question about the picture or the video.")
        if engine.model_name is None:
            raise gr.Error("No model is installed yet: see the instructions at the top of the page.")
        if image and video:
            raise gr.Error("Ask about the image or the video, not both: remove one of them.")
        pairs = [(history[i]["content"], history[i + 1]["content"]) for i in range(0, len(history) - 1, 2)
                 if history[i]["role"] == "user" and history[i + 1]["role"] == "assistant"]
        try:
            images = [load_image(image)] if image else []
            job = engine.submit(DirectJob(question, sampling(temperature, max_tokens), images=images,
                                          video=Path(video) if video else None, history=pairs))
        except UserError as exc:
            raise gr.Error(str(exc)) from None
        user_session = session(request)
        running.start(user_session, job)
        history = [*history, {"role": "user", "content": question}]
        for chat, line, _ in answer(job, history, user_session):
            yield chat, line, ""

    def forget_upload(path: str | None) -> None:
        """An upload is deleted once it is replaced or removed (and Gradio sweeps what is left)."""
        if path and Path(path).is_file() and Path(path).resolve().is_relative_to(upload_dir.resolve()):
            Path(path).unlink(missing_ok=True)

    def keep_upload(new: str | None, old: str | None) -> tuple[str | None, list]:
        if old and old != new:
            forget_upload(old)
        return new, []  # a new picture starts a new quick chat

    def add_folder(folder: str) -> tuple[str, str, str]:
        folder = (folder or "").strip()
        if not folder:
            raise gr.Error("Type the path of a folder of films on this computer.")
        try:
            report = indexer.add_folder(folder)
        except UserError as exc:
            raise gr.Error(str(exc)) from None
        return library_html(), queue_markdown(), f"Added {folder}: {report.summary()}"

    def start_indexing() -> tuple[str, str]:
        if not indexer.start():
            gr.Info("Nothing to index (or the queue is paused: press Resume).")
        return library_html(), queue_markdown()

    def pause() -> str:
        indexer.pause()
        return queue_markdown()

    def set_prepared(movie_id: int | None, wanted: bool) -> tuple:
        if movie_id is None:
            raise gr.Error("Pick a film first.")
        try:
            message = engine.service.set_prepared(int(movie_id), wanted)
        except (KeyError, UserError) as exc:
            raise gr.Error(str(exc.args[0] if isinstance(exc, KeyError) else exc)) from None
        if wanted and not indexer.start():
            message += " (the indexer starts when the queue is resumed)" if indexer.paused() else ""
        gr.Info(message)
        return (library_html(), queue_markdown(), *prepare_controls(movie_id))

    def resume() -> tuple[str, str]:
        indexer.resume()
        return library_html(), queue_markdown()

    # -- the page -------------------------------------------------------------------------------------
    with gr.Blocks(title=f"{st.TITLE} - movie assistant", delete_cache=(1800, 3600)) as demo:
        with gr.Row(equal_height=True):
            gr.Markdown(f"# {st.TITLE}", elem_id="title")
            model = gr.Dropdown(label="Model", elem_id="model", interactive=True, scale=0, min_width=280,
                                **_update_args(model_choices()))
            refresh = gr.Button("Refresh", elem_id="refresh", size="sm", scale=0, min_width=100)
        status = gr.Markdown(setup_markdown(), elem_id="status")
        with gr.Accordion("Answer settings", open=False, elem_id="answer-settings"):
            with gr.Row():
                temperature = gr.Slider(0, 1.5, value=SamplingOptions.temperature, step=0.05, label="Temperature",
                                        info="0: always the most likely words", elem_id="temperature")
                max_tokens = gr.Slider(1, 2048, value=SamplingOptions.max_new_tokens, step=1,
                                       label="Longest answer (tokens)", elem_id="max-tokens")
        initial_films = film_choices()
        with gr.Tabs(selected="movie" if initial_films["value"] is not None else "library"):
            with gr.Tab("Movie chat", id="movie"):
                with gr.Row():
                    with gr.Column(scale=3):
                        film = gr.Dropdown(label="Film", elem_id="film", interactive=True,
                                           **_update_args(initial_films))
                        player = gr.HTML(player_html(initial_films["value"]), elem_id="player")
                        moments = gr.HTML("", elem_id="moments")
                    with gr.Column(scale=2):
                        conversation = gr.Dropdown(label="Conversation", elem_id="conversation", interactive=True,
                                                   **_update_args(conversation_choices(initial_films["value"])))
                        conversation_id = gr.State(None)
                        fast = gr.Checkbox(label="Fast answers", elem_id="fast-answers", info=FAST_INFO,
                                           **_update_args(fast_choice(initial_films["value"])))
                        movie_chat, movie_progress, movie_question, movie_ask, movie_stop = _chat_area(
                            "movie", "Ask about the film (Shift+Enter for a new line)")
            with gr.Tab("Quick chat", id="quick"):
                with gr.Row():
                    with gr.Column(scale=2):
                        image = gr.Image(type="filepath", sources=["upload", "clipboard"], label="Image",
                                         elem_id="quick-image")
                        video = gr.File(file_types=["video"], type="filepath", label="Short video",
                                        elem_id="quick-video")
                        # the session's uploads: deleted when replaced, removed, or when the session ends
                        image_path = gr.State(None, delete_callback=forget_upload)
                        video_path = gr.State(None, delete_callback=forget_upload)
                    with gr.Column(scale=3):
                        quick_chat, quick_progress, quick_question, quick_ask, quick_stop = _chat_area(
                            "quick", "Ask about the picture or the video")
            with gr.Tab("Library", id="library"):
                library = gr.HTML(library_html(), elem_id="library")
                queue_line = gr.Markdown(queue_markdown(), elem_id="queue")
                with gr.Row():
                    index_now = gr.Button("Index now", elem_id="index-now")
                    pause_button = gr.Button("Pause", elem_id="pause")
                    resume_button = gr.Button("Resume", elem_id="resume")
                with gr.Row():
                    folder = gr.Textbox(label="Add a folder of films (on this computer)", elem_id="folder", scale=4)
                    add = gr.Button("Add folder", elem_id="add-folder", scale=1)
                added = gr.Markdown("", elem_id="added")
                gr.Markdown("### Fast answers\nA prepared film has been read once ahead, so a new question about it "
                            "is answered in seconds instead of minutes. It takes disk space (about 4 GB per hour "
                            "of film for a 7B model).")
                initial_prepare = prepare_choices()
                with gr.Row():
                    prepare_film = gr.Dropdown(label="Film", elem_id="prepare-film", interactive=True, scale=2,
                                               **_update_args(initial_prepare))
                    prepare_info = gr.Markdown(elem_id="prepare-info")
                with gr.Row():
                    prepare = gr.Button("Prepare for fast answers", elem_id="prepare", visible=False)
                    forget = gr.Button("Forget prepared state", elem_id="forget-prepared", visible=False)
                ticker = gr.Timer(5)

        prepare_outputs = [prepare_info, prepare, forget]
        everything = [status, model, film, player, conversation, fast, library, queue_line, prepare_film,
                      *prepare_outputs]
        demo.load(refresh_all, inputs=[film, prepare_film], outputs=everything)
        refresh.click(refresh_all, inputs=[film, prepare_film], outputs=everything)
        model.input(pick_model, inputs=model, outputs=status)
        film.input(pick_film, inputs=film, outputs=[player, conversation, movie_chat, moments, conversation_id,
                                                    movie_progress, fast])
        conversation.input(pick_conversation, inputs=[conversation, film],
                           outputs=[movie_chat, moments, conversation_id, fast])
        ask_inputs = [movie_question, film, conversation_id, movie_chat, temperature, max_tokens, fast]
        ask_outputs = [movie_chat, movie_progress, moments, conversation_id, movie_question, conversation, fast]
        movie_ask.click(ask_movie, ask_inputs, ask_outputs, concurrency_limit=None)
        movie_question.submit(ask_movie, ask_inputs, ask_outputs, concurrency_limit=None)
        movie_stop.click(stop, None, None, concurrency_limit=None)
        image.change(keep_upload, [image, image_path], [image_path, quick_chat])
        video.change(keep_upload, [video, video_path], [video_path, quick_chat])
        quick_inputs = [quick_question, image, video, quick_chat, temperature, max_tokens]
        quick_outputs = [quick_chat, quick_progress, quick_question]
        quick_ask.click(ask_quick, quick_inputs, quick_outputs, concurrency_limit=None)
        quick_question.submit(ask_quick, quick_inputs, quick_outputs, concurrency_limit=None)
        quick_stop.click(stop, None, None, concurrency_limit=None)
        add.click(add_folder, folder, [library, queue_line, added])
        index_now.click(start_indexing, None, [library, queue_line])
        pause_button.click(pause, None, queue_line)
        resume_button.click(resume, None, [library, queue_line])
        prepare_film.input(prepare_controls, prepare_film, prepare_outputs)
        prepare.click(lambda movie_id: set_prepared(movie_id, True), prepare_film,
                      [library, queue_line, *prepare_outputs])
        forget.click(lambda movie_id: set_prepared(movie_id, False), prepare_film,
                     [library, queue_line, *prepare_outputs])
        ticker.tick(lambda movie_id: (library_html(), queue_markdown(), *prepare_controls(movie_id)), prepare_film,
                    [library, queue_line, *prepare_outputs], show_progress="hidden")
    return demo


def _chat_area(name: str, placeholder: str) -> tuple[Any, Any, Any, Any, Any]:
    """The answers, the progress line, the question box and Ask / Stop of one chat tab; element ids
    ``NAME-chat``, ``NAME-progress``, ``NAME-question``, ``NAME-ask``, ``NAME-stop`` (the browser tests
    find them by these)."""
    chat = gr.Chatbot(elem_id=f"{name}-chat", height=420, show_label=False)
    progress = gr.Markdown("", elem_id=f"{name}-progress")
    question = gr.Textbox(elem_id=f"{name}-question", show_label=False, lines=2, placeholder=placeholder)
    with gr.Row():
        ask = gr.Button("Ask", variant="primary", elem_id=f"{name}-ask")
        stop = gr.Button("Stop", elem_id=f"{name}-stop")
    return chat, progress, question, ask, stop


def sampling(temperature: float, max_tokens: float) -> SamplingOptions:
    return SamplingOptions(temperature=float(temperature), max_new_tokens=max(1, int(max_tokens)))


def _update_args(update: dict) -> dict:
    """A ``gr.update(...)`` as constructor arguments."""
    return {k: v for k, v in update.items() if k in ("choices", "value", "visible", "interactive")}


def time_label(stamp: float) -> str:
    return time.strftime("%d %b %H:%M", time.localtime(stamp))
