"""What the web UI's panels show (app.server.views), without a browser and without Gradio running:
the library table, the film and conversation pickers, Fast answers, the queue line, a kept
conversation, a question's updates as it streams; on a real tiny library (a film indexed by the
real indexer) and on plain films and conversations. Also: each chat tab's Stop stops only its own
question (app.server.ui)."""
from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from app import status as st
from app.chat_service import ChatService
from app.conversations import Conversation, StoredTurn
from app.film_words import fast_answers_note
from app.moments import Moment
from app.questions import AskStream, ChatEvent
from app.server import views
from app.server.sample import MODEL, make_library
from app.server.ui import Handlers, UiState
from indexer.prepared_size import DEFAULT_TEXT_TOKENS, estimate_prepared_bytes, hour_bytes
from indexer.search import CueMatch
from llamavid.runtime.control import Progress
from llamavid.runtime.kv_size import BYTES_PER_VALUE
from llamavid.storage import human_size
from tests.support.movies import movie

ROOT = Path(__file__).resolve().parents[2]
GB = 1_200_000_000




def conversation(id: int, updated_at: float, title: str = "Where is the treasure?", fast: bool = False,
                 turns: list[StoredTurn] | None = None) -> Conversation:
    return Conversation(id=id, movie_id=1, movie_path="/films/Harbor.mkv", title=title, model=MODEL,
                        track_id=None, language="en", stride=None, fast=fast, created_at=updated_at,
                        updated_at=updated_at, turns=turns or [])


def turn(id: int, question: str, answer: str, stopped: bool = False, hidden: bool = False) -> StoredTurn:
    return StoredTurn(id=id, question=question, answer=answer, answer_ids=[], stopped=stopped,
                      moments=[{"start": 40.0, "end": 44.0, "score": 1.0, "why": ["treasure"]}], created_at=0.0,
                      hidden=hidden)


def row(table: str, title: str) -> str:
    """The text of the library row of ``title``, tags stripped."""
    found = next(r for r in table.split("<tr>") if f"<td>{title}</td>" in r)
    return re.sub(r"<[^>]+>", " ", found)


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[ChatService]:
    """A chat service on a real tiny library: the tiny model installed, Harbor indexed (no model loaded)."""
    data, _ = make_library(tmp_path_factory.mktemp("views"), seconds=20)
    service = ChatService(data, model=MODEL, language="en")
    try:
        yield service
    finally:
        service.close()


def test_the_views_module_imports_no_gradio() -> None:
    code = "import sys, app.server.views; print(sorted(m for m in sys.modules if m.split('.')[0] == 'gradio'))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- on the real library ------------------------------------------------------------------------------------
def test_the_library_table_shows_an_indexed_film_ready_with_its_length_subtitles_and_fast_answers(
        served: ChatService) -> None:
    table = views.library_html(served.movies(), {}, paused=False)
    text = row(table, "Harbor")
    assert "ready to chat" in text and "0:00:20" in text
    assert "subtitles: subtitle files (en)" in text and "not prepared" in text
    assert '<td class="good">' in table and "<progress" not in table, "a finished film has no bar"


def test_film_choices_offer_the_indexed_film(served: ChatService) -> None:
    (movie,) = served.movies()
    assert views.film_choices(served.movies()) == {"choices": [("Harbor", movie.id)], "value": movie.id}
    assert views.prepare_choices(served.movies(), current=999)["value"] == movie.id


def test_prepare_controls_show_the_size_preparing_will_take_before_the_click(served: ChatService) -> None:
    (movie,) = served.movies()
    estimate = served.prepare_estimate(movie)
    assert estimate, "the installed tiny model sizes the film"
    line, prepare, forget = views.prepare_controls(movie, estimate)
    assert line.startswith("**Harbor** is not prepared") and f"about {human_size(estimate)}" in line
    assert prepare == {"value": f"Prepare for fast answers (about {human_size(estimate)})", "visible": True}
    assert forget == {"value": "Forget prepared state", "visible": False}


SEVEN_B = {"num_hidden_layers": 32, "num_attention_heads": 32, "hidden_size": 4096}  # LLaMA-7B's config.json


def test_the_fast_answers_note_quotes_an_hour_with_the_model_and_its_kv_type(served: ChatService,
                                                                              tmp_path: Path) -> None:
    """The Library said "about 4 GB per hour of film for a 7B" whatever the model and its cache type; the
    figure is now the one rule's, for the model the server holds."""
    (movie,) = served.movies()
    per_hour = served.prepared_per_hour()
    shape, kv_bytes = served._kv_shape_of_model()
    assert per_hour == estimate_prepared_bytes(shape, 3600, DEFAULT_TEXT_TOKENS, kv_bytes) > 0
    handlers = Handlers(served, indexer=None, upload_dir=tmp_path)
    line, _, _ = handlers.prepare_panel(movie.id)
    assert f"about {human_size(per_hour)} per hour of film with the model chosen" in line
    assert "4 GB" not in line
    # the rule at the released size: 7,200 frame rows and 2,000 text tokens of a 7B's 32 layers
    assert human_size(hour_bytes(SEVEN_B, BYTES_PER_VALUE["q8_0"])) == "2.6 GB"
    assert human_size(hour_bytes(SEVEN_B, BYTES_PER_VALUE["f16"])) == "4.8 GB"
    assert "shown for each film once a model is chosen" in fast_answers_note(None)


def test_conversation_choices_list_the_film_conversations_newest_first_after_new_conversation(
        served: ChatService) -> None:
    (movie,) = served.movies()
    older = served.new_conversation(movie.id, title="Who is the captain?")
    newer = served.new_conversation(movie.id, title="Where is the treasure?")
    served.store.db.execute("UPDATE conversations SET updated_at = updated_at + 60 WHERE id = ?", [newer.id])
    choices = views.conversation_choices(served.conversations(movie.id), current=older.id)
    assert [i for _, i in choices["choices"]] == [views.NEW, newer.id, older.id]
    assert choices["choices"][0][0] == "New conversation"
    assert choices["choices"][1][0].startswith("Where is the treasure? (")
    assert choices["value"] == older.id


def test_setup_markdown_names_the_model_or_says_how_to_get_one(served: ChatService, data_dir: Path) -> None:
    shown = views.setup_markdown(served, st.collect_status(served.data.root))
    assert f"**Model:** `{MODEL}` (loads with the first question)" in shown and str(served.data.root) in shown
    empty = ChatService(data_dir)
    try:
        text = views.setup_markdown(empty, st.collect_status(data_dir))
    finally:
        empty.close()
    assert text.startswith(st.TAGLINE) and st.GET_MODELS_HEADING in text and str(data_dir) in text


# -- the library, on plain films ------------------------------------------------------------------------------
def test_the_library_table_shows_a_running_films_percent_and_eta() -> None:
    running = movie(state="running", stage="features", progress=(120, 2400), eta_seconds=200)
    text = row(views.library_html([running], {}), "Harbor")
    assert "indexing, reading frames: 120 / 2,400 frames, about 3 min left" in text and "5%" in text
    assert '<progress value="5" max="100">' in views.library_html([running], {})


def test_the_library_table_shows_a_failed_films_error() -> None:
    table = views.library_html([movie(state="failed", error="decoder error")], {})
    assert '<td class="bad">failed: decoder error</td>' in table


def test_the_library_table_says_paused_for_a_queued_film_while_the_queue_is_paused() -> None:
    queued = movie(state="queued", progress=(120, 2400), features_complete=False)
    assert "paused at 120 / 2,400" in row(views.library_html([queued], {}, paused=True), "Harbor")
    assert "waiting to resume" in row(views.library_html([queued], {}, paused=False), "Harbor")


def test_the_library_table_shows_the_prepared_label_with_the_size_or_the_estimate() -> None:
    prepared = movie(id=1, prepared_bytes=GB)
    wanted = movie(id=2, rel_path="Lighthouse.mkv", prepare_wanted=True)
    table = views.library_html([prepared, wanted], {2: 2 * GB})
    assert f"prepared for fast answers ({human_size(GB)})" in row(table, "Harbor")
    assert f"to be prepared for fast answers (about {human_size(2 * GB)})" in row(table, "Lighthouse")


def test_the_library_table_escapes_film_names_and_says_when_it_is_empty() -> None:
    assert "&lt;b&gt;Harbor" in views.library_html([movie(rel_path="<b>Harbor.mkv")], {})
    assert views.library_html([], {}) == "<p>The library is empty: add a folder of films below.</p>"


def test_film_choices_keep_the_current_indexed_film_else_the_first() -> None:
    movies = [movie(id=1), movie(id=2, rel_path="Lighthouse.mkv"), movie(id=3, features_complete=False)]
    assert views.film_choices(movies, current=2) == {"choices": [("Harbor", 1), ("Lighthouse", 2)], "value": 2}
    assert views.film_choices(movies, current=3)["value"] == 1, "a film not indexed cannot be chatted about"
    assert views.film_choices([], current=1) == {"choices": [], "value": None}


def test_conversation_choices_are_newest_first_and_fall_back_to_new_conversation() -> None:
    kept = [conversation(1, 1_000.0, "first"), conversation(2, 3_000.0, "third"), conversation(3, 2_000.0, "second")]
    choices = views.conversation_choices(kept, current=42)
    assert [i for _, i in choices["choices"]] == [views.NEW, 2, 3, 1] and choices["value"] == views.NEW
    assert views.conversation_choices([]) == {"choices": [("New conversation", views.NEW)], "value": views.NEW}


def test_fast_answers_default_to_the_films_prepared_state_and_a_kept_conversation_fixes_its_mode() -> None:
    assert views.fast_choice(movie(prepared_bytes=GB)) == {"value": True, "interactive": True}
    assert views.fast_choice(movie()) == {"value": False, "interactive": True}
    assert views.fast_choice(None) == {"value": False, "interactive": True}
    assert views.fast_choice(movie(), conversation(1, 0.0, fast=True)) == {"value": True, "interactive": False}


def test_prepare_controls_for_a_prepared_a_waiting_and_no_film() -> None:
    line, prepare, forget = views.prepare_controls(movie(prepared_bytes=GB), 2 * GB)
    assert line == f"**Harbor** is prepared for fast answers: {human_size(GB)} on disk."
    assert prepare == {"visible": False} and forget["visible"]
    line, prepare, forget = views.prepare_controls(movie(prepare_wanted=True), 2 * GB)
    assert line == f"**Harbor** is waiting for the indexer to prepare it (about {human_size(2 * GB)})."
    assert prepare == {"visible": False} and forget["visible"]
    assert views.prepare_controls(movie(), None)[1] == {"value": "Prepare for fast answers", "visible": True}
    assert views.prepare_controls(None, None) == ("", {"visible": False}, {"visible": False})


def test_queue_markdown_counts_films_per_state_and_says_running_and_paused() -> None:
    assert views.queue_markdown({"done": 2, "queued": 1, "failed": 0}, running=True, paused=False) == \
        "Queue: 2 done, 1 queued · indexer running"
    assert views.queue_markdown({}, running=False, paused=True) == "Queue: empty · indexer idle · **paused**"


def test_model_choices_show_the_picker_with_two_models_only() -> None:
    assert views.model_choices(["a"], "a") == {"choices": ["a"], "value": "a", "visible": False}
    assert views.model_choices(["a", "b"], "a")["visible"]
    assert views.model_choices(["a"], "/models/mine")["choices"] == ["/models/mine", "a"]
    families = {"a": "llama-vid", "q": "qwen-vl"}.get
    assert views.model_choices(["a", "q"], "q", families)["choices"] == [("a (LLaMA-VID)", "a"), ("q (Qwen3-VL)", "q")]


# -- the chat ---------------------------------------------------------------------------------------------------
def test_chat_messages_show_a_kept_conversation_and_mark_a_stopped_answer() -> None:
    turns = [turn(1, "Where?", "Under the lighthouse."), turn(2, "And then?", "They sail", stopped=True)]
    assert views.chat_messages(turns) == [
        {"role": "user", "content": "Where?"}, {"role": "assistant", "content": "Under the lighthouse."},
        {"role": "user", "content": "And then?"}, {"role": "assistant", "content": "They sail *(stopped)*"}]


def test_moments_html_links_seek_the_player_with_short_clocks() -> None:
    out = views.moments_html([{"start": 40.0, "end": 44.5, "why": ['says "treasure"']},
                              {"start": 3723.0, "end": 3730.0}])
    assert 'data-seek="40.000"' in out and "0:40&ndash;0:44" in out and "1:02:03&ndash;1:02:10" in out
    assert 'title="says &quot;treasure&quot;"' in out
    assert views.moments_html([]) == views.moments_html(None) == ""


def test_player_html_feeds_the_video_by_film_id() -> None:
    assert 'src="/v1/movies/3/video"' in views.player_html(3) and 'id="llamavid-player"' in views.player_html(3)
    assert views.player_html(None) == "<p>Pick an indexed film.</p>"


def progress(phase: str, done: int, total: int) -> Progress:
    return Progress(phase=phase, done=done, total=total, unit="frames", eta_seconds=200)


def test_answer_updates_stream_the_answer_with_the_queue_line_progress_and_moments() -> None:
    history = [{"role": "user", "content": "Where is the treasure?"}]
    events = [ChatEvent("queued", position=2), ChatEvent("queued", position=0),
              ChatEvent("progress", progress=progress("visual", 10, 20)), ChatEvent("text", "Under the "),
              ChatEvent("text", "lighthouse."), ChatEvent("moments", moments=(Moment(40.0, 44.0, 1.0, ["treasure"]),)),
              ChatEvent("done", turn_id=1)]
    updates = list(views.answer_updates(events, history))
    assert [line for _, line, _ in updates[:3]] == [
        "Waiting for the model: 2 questions ahead", "Starting…", "Reading the film: 10 / 20 frames, about 3 min left"]
    assert [chat[-1]["content"] for chat, _, _ in updates[3:5]] == ["Under the ", "Under the lighthouse."]
    chat, line, moments = updates[-1]
    assert chat == [*history, {"role": "assistant", "content": "Under the lighthouse."}] and line == ""
    assert 'data-seek="40.000"' in moments
    assert all(found is None for _, _, found in updates[:-1]), "None: the moments are left as they are"
    assert history == [{"role": "user", "content": "Where is the treasure?"}], "the caller's history is not changed"


def test_answer_updates_turn_a_cancelled_stream_into_stopped_and_a_failure_into_its_error() -> None:
    stream = AskStream("Where?", job=None)
    for event in (ChatEvent("text", "Under the"), ChatEvent("error", "cancelled", kind="cancelled")):
        stream.put(event)
    *_, (chat, _, _) = views.answer_updates(stream, [])
    assert chat[-1] == {"role": "assistant", "content": "Under the\n\n*(stopped)*"}
    *_, (chat, _, _) = views.answer_updates([ChatEvent("error", "the film is not indexed", kind="user")], [])
    assert chat[-1]["content"] == "*(error: the film is not indexed)*"


def test_history_pairs_read_a_chats_questions_and_answers() -> None:
    history = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
               {"role": "user", "content": "c"}]
    assert views.history_pairs(history) == [("a", "b")]


# -- the llama.cpp conversion --------------------------------------------------------------------------------------
def test_the_conversion_row_says_the_disk_space_then_the_progress_then_the_end() -> None:
    from app.model_convert import Offer
    from app.server.converting import ConversionState

    offer = Offer("llama-vid-7b", "no GPU", Path("/d/models/llama-vid-7b-gguf"), 19_600_000_000, 6_100_000_000,
                  80_000_000_000, 0)
    line, convert, cancel, bar = views.conversion_controls(offer, ConversionState())
    assert line.startswith("**llama-vid-7b** runs on llama.cpp on this computer (no GPU), with its LLM in q4_K_M")
    assert "about 19.6 GB of disk while it runs, 6.1 GB once done (80.0 GB free)" in line
    assert convert == {"value": "Convert for llama.cpp (6.1 GB)", "visible": True, "interactive": True}
    assert cancel == {"visible": False} and bar == ""
    running = ConversionState("llama-vid-7b", True, 4_000_000_000, 19_600_000_000, "file 1 of 3: llm-f16.gguf")
    line, convert, cancel, bar = views.conversion_controls(None, running)
    assert line == "Converting **llama-vid-7b** for llama.cpp: 4.0 GB of about 19.6 GB · file 1 of 3: llm-f16.gguf"
    assert convert == {"visible": False} and cancel == {"visible": True}
    assert bar == '<progress id="convert-bar" value="4000000000" max="19600000000"></progress>'
    stopped = ConversionState("llama-vid-7b", outcome="cancelled", message="conversion of llama-vid-7b stopped; "
                              "13.5 GB kept, and the next conversion goes on from there")
    resumable = Offer("llama-vid-7b", "no GPU", offer.folder, 6_100_000_000, 6_100_000_000, 66_500_000_000,
                      13_500_000_000)
    line, convert, _, _ = views.conversion_controls(resumable, stopped)
    assert "13.5 GB of it is already done from a stopped conversion" in line and line.endswith(
        "*Conversion of llama-vid-7b stopped; 13.5 GB kept, and the next conversion goes on from there*")
    full = Offer("llama-vid-7b", "no GPU", offer.folder, 19_600_000_000, 6_100_000_000, 5_000_000_000, 0)
    line, convert, _, _ = views.conversion_controls(full, ConversionState())
    assert "only 5.0 GB is free: free some space first" in line and convert["interactive"] is False
    done = ConversionState("llama-vid-7b", outcome="done", message="the conversion is done: llama-vid-7b runs on "
                           "llama.cpp from /d")
    assert views.conversion_controls(None, done) == ("The conversion is done: llama-vid-7b runs on llama.cpp from /d",
                                                     {"visible": False}, {"visible": False}, "")
    assert views.conversion_controls(None, ConversionState()) == ("", {"visible": False}, {"visible": False}, "")


# -- Stop, per tab ------------------------------------------------------------------------------------------------
def test_each_chat_tabs_stop_stops_only_its_own_question(served: ChatService, tmp_path: Path) -> None:
    handlers = Handlers(served, indexer=None, upload_dir=tmp_path)
    browser, other_browser = SimpleNamespace(session_hash="s1"), SimpleNamespace(session_hash="s2")
    movie, quick, elsewhere = AskStream("film?", job=None), AskStream("picture?", job=None), AskStream("x", job=None)
    followed = [handlers.follow(movie, [], "s1", "movie"), handlers.follow(quick, [], "s1", "quick"),
                handlers.follow(elsewhere, [], "s2", "movie")]
    for job, updates in zip((movie, quick, elsewhere), followed, strict=True):
        job.put(ChatEvent("queued", position=1))
        next(updates)  # following it: the tab's question under way
    handlers.stop_movie(browser)
    assert movie.cancelled and not quick.cancelled and not elsewhere.cancelled
    handlers.stop_quick(browser)
    assert quick.cancelled and not elsewhere.cancelled
    handlers.stop_movie(other_browser)
    assert elsewhere.cancelled
    for updates in followed:
        updates.close()


def test_a_finished_question_leaves_its_tab_and_a_newer_one_stays_stoppable(tmp_path: Path) -> None:
    state, first, second = UiState(), AskStream("a", job=None), AskStream("b", job=None)
    state.start("s", "movie", first)
    state.start("s", "movie", second)
    state.done("s", "movie", first)  # the older question ended after the newer one began
    state.stop("s", "quick")
    assert not second.cancelled
    state.stop("s", "movie")
    assert second.cancelled and not first.cancelled


def test_a_question_the_queue_refuses_leaves_no_conversation_behind(served: ChatService, tmp_path: Path) -> None:
    import gradio as gr

    handlers = Handlers(served, indexer=None, upload_dir=tmp_path)
    film = served.movies()[0]
    before = [c.id for c in served.conversations(film.id)]
    limit = served.max_waiting
    served.max_waiting = 0  # every question is refused at the door
    try:
        with pytest.raises(gr.Error, match="already waiting"):
            next(handlers.ask_movie("Where is the treasure?", film.id, None, [], 0.0, 4, False,
                                    SimpleNamespace(session_hash="s1")))
    finally:
        served.max_waiting = limit
    assert [c.id for c in served.conversations(film.id)] == before


# -- searching the dialogue (issue 26) --------------------------------------------------------------------------
def cue(movie_id: int, rel_path: str, start: float, text: str) -> CueMatch:
    return CueMatch(movie_id, f"/films/{rel_path}", rel_path, 1, start, start + 3, text, "sidecar", 1.0, -1.0)


def test_search_results_show_the_film_the_time_and_the_line_and_lead_to_its_start() -> None:
    found = [cue(3, "sea/Harbor.mkv", 40.0, "The treasure is buried\nunder the old lighthouse."),
             cue(7, "Forest.mp4", 3725.5, "Listen to the birds.")]
    shown = views.search_choices(found)
    assert shown == {"choices": [("Harbor · 0:00:40 · The treasure is buried / under the old lighthouse.", "3:40.000"),
                                 ("Forest · 1:02:05 · Listen to the birds.", "7:3725.500")],
                     "value": None, "visible": True}
    assert [views.search_choice(v) for _, v in shown["choices"]] == [(3, 40.0), (7, 3725.5)]
    assert views.search_choice(None) is None and views.search_choice("x:y") is None
    assert views.search_choices([]) == {"choices": [], "value": None, "visible": False}
    assert views.search_line("treasure", 2) == "2 lines found: pick one to watch it."
    assert views.search_line("treasure", 1).startswith("1 line found")
    assert views.search_line("zebra", 0) == "No line of the library's subtitles says that."
    assert views.search_line("  ", 0) == ""
    assert views.player_html(3, 40.0) == ('<video id="llamavid-player" controls preload="metadata" '
                                          'src="/v1/movies/3/video#t=40.000"></video>')
    assert 'src="/v1/movies/3/video"' in views.player_html(3)


def test_a_search_result_opens_its_film_at_the_line(served: ChatService, tmp_path: Path) -> None:
    handlers = Handlers(served, indexer=None, upload_dir=tmp_path)
    (film,) = served.movies()
    line, results = handlers.search("treasure")
    assert line.startswith("1 line found")
    assert results["choices"] == [("Harbor · 0:00:40 · The treasure is buried under the old lighthouse.",
                                   f"{film.id}:40.000")]
    assert handlers.search("zebra")[1]["visible"] is False
    # from no film chosen: the film is chosen and its player opens at the line, a new conversation
    picked, player, conversations, chat, moments, conversation_id, progress, fast = \
        handlers.open_result(f"{film.id}:40.000", None)
    assert picked["value"] == film.id and f'src="/v1/movies/{film.id}/video#t=40.000"' in player
    assert chat == [] and conversation_id is None and conversations["value"] == views.NEW
    # the film already chosen keeps its player (the page seeks it) and its conversation
    assert all(u == {"__type__": "update"} for u in handlers.open_result(f"{film.id}:40.000", film.id))
