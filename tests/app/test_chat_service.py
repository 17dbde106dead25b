"""The chat service and the engine hooks under it, on a tiny model in the released layout and a real
film made with PyAV and indexed by the real indexer: cancel, progress, pre-flight, kept
conversations across processes, subtitle tracks, the request queue, moments."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import cli
from app.chat_service import ChatService
from app.conversations import ConversationStore
from app.moments import CueHit, rank_moments
from indexer import library
from llamavid.errors import Cancelled, ContextOverflow
from llamavid.media.synthetic import clock, srt_text, write_video
from llamavid.model.tiny import write_tiny_checkpoint
from llamavid.runtime.api import LlamaVid
from llamavid.runtime.chat import Chat
from llamavid.runtime.control import Control
from llamavid.runtime.generate import SamplingOptions
from llamavid.runtime.options import LoadOptions

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SECONDS = 130  # 130 frames at 1 fps: two Q-Former blocks of 64 and a remainder
GREEDY = SamplingOptions(temperature=0, max_new_tokens=6)
EN = [(5.0, 8.0, "Hello captain, the wind is rising."),
      (40.0, 44.0, "The treasure is buried under the old lighthouse."),
      (90.0, 93.0, "We sail at night.")]
FR = [(5.0, 8.0, "Bonjour capitaine, le vent se lève."), (90.0, 93.0, "Nous partons cette nuit.")]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "llama-vid-tiny-224-long-video")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, checkpoint: Path) -> Path:
    """A data folder whose library holds one indexed film with an English and a French subtitle file."""
    films, data = tmp_path_factory.mktemp("films"), tmp_path_factory.mktemp("data")
    write_video(films / "Harbor.mkv", clock(64, 48, 5), fps=5, seconds=SECONDS)
    (films / "Harbor.en.srt").write_text(srt_text(EN))
    (films / "Harbor.fr.srt").write_text(srt_text(FR))
    assert cli.main(["--data-dir", str(data), "index", "add", str(films)]) == 0
    assert cli.main(["--data-dir", str(data), "index", "run", "--vision", str(checkpoint / "eva_vit_g.pth"),
                     "--speech", "never", "--quiet"]) == 0
    return data


@pytest.fixture(scope="module")
def lv(checkpoint: Path) -> LlamaVid:
    return LlamaVid.load(checkpoint, device="cpu", dtype="fp32", load_vision=False)


@pytest.fixture(scope="module")
def film(data_dir: Path):
    db = library.open_library(data_dir)
    movie = library.find_movie(db, "Harbor.mkv")
    return movie, library.film_visual(db, movie, language="en")


def _fresh_answer(lv: LlamaVid, visual, question: str) -> str:
    return "".join(Chat(lv, visual).ask(question, GREEDY))


@pytest.mark.parametrize("phase", ["visual", "prefill", "answer"])
def test_a_cancel_in_any_phase_leaves_the_chat_as_if_the_turn_never_happened(lv, film, phase):
    _, visual = film
    expected_first = _fresh_answer(lv, visual, "Where is the treasure?")
    chat = Chat(lv, visual)
    control = Control()
    control.on_progress = lambda p: control.cancel() if p.phase == phase and p.done > 0 else None
    with pytest.raises(Cancelled):
        "".join(chat.ask("What does the captain say?", GREEDY, control=control))
    assert chat.turns == [] and chat.state.length == 0
    assert "".join(chat.ask("Where is the treasure?", GREEDY)) == expected_first
    # and after a kept first turn, a cancelled follow-up leaves the second answer unchanged
    reference = Chat(lv, visual)
    "".join(reference.ask("Where is the treasure?", GREEDY))
    expected_second = "".join(reference.ask("Who is speaking?", GREEDY))
    length = chat.state.length
    control = Control()
    control.on_progress = lambda p: control.cancel() if p.phase in ("prefill", "answer") and p.done > 0 else None
    with pytest.raises(Cancelled):
        "".join(chat.ask("What happens at night?", GREEDY, control=control))
    assert len(chat.turns) == 1 and chat.state.length == length
    assert "".join(chat.ask("Who is speaking?", GREEDY)) == expected_second


def test_progress_rises_to_its_totals(lv, film):
    _, visual = film
    events = []
    "".join(Chat(lv, visual).ask("What happens?", GREEDY, control=Control(on_progress=events.append)))
    for phase in ("visual", "prefill", "answer"):
        done = [e.done for e in events if e.phase == phase]
        assert done == sorted(done) and len(done) >= 2, (phase, done)
        assert all(e.total == events[[x.phase for x in events].index(phase)].total for e in events if e.phase == phase)
    assert [e.done for e in events if e.phase == "visual"][-1] == SECONDS
    prefill = [e for e in events if e.phase == "prefill"]
    assert prefill[-1].done == prefill[-1].total > 2 * SECONDS
    assert [e.phase for e in events].index("prefill") > max(i for i, e in enumerate(events) if e.phase == "visual")
    assert "reading the film: 130 / 130 frames" in [e for e in events if e.phase == "visual"][-1].describe()


def test_a_refused_preflight_runs_no_qformer_block(lv, film, monkeypatch):
    _, visual = film
    chat = Chat(lv, visual)
    monkeypatch.setattr(lv, "visual_tokens", lambda *a, **k: pytest.fail("the Q-Former ran"))
    with pytest.raises(ContextOverflow, match="context"):
        chat.ask("why " * 5000, GREEDY)
    assert chat.turns == [] and chat.state.length == 0


def test_only_the_chosen_subtitle_track_is_in_the_prompt(data_dir, lv, film):
    movie, english = film
    db = library.open_library(data_dir)
    french_track = next(t for t in movie.subtitle_tracks if t["language"] == "fr")
    french = library.film_visual(db, movie, language="en", track_id=french_track["id"])
    for visual, said, unsaid in ((english, "captain", "capitaine"), (french, "capitaine", "captain")):
        chat = Chat(lv, visual)
        text = chat._text("What is said?", None)
        assert said in text and unsaid not in text
    assert [c.text for c in library.film_visual(db, movie, language="fr").subtitles][0].startswith("Bonjour")
    with pytest.raises(KeyError, match="no subtitle track 999"):
        library.film_visual(db, movie, track_id=999)


def test_moments_lie_in_the_film_are_ranked_and_include_the_matching_cue(data_dir, checkpoint):
    service = ChatService(data_dir, model=str(checkpoint), language="en", load=LoadOptions(device="cpu", dtype="fp32"))
    try:
        conv = service.new_conversation("Harbor.mkv")
        events = list(service.ask(conv.id, "The treasure is buried under the old lighthouse?", GREEDY))
        moments = next(e for e in events if e.type == "moments").moments
        assert events[-1].type == "done" and events[-1].turn_id is not None
        assert moments and all(0 <= m.start <= m.end <= SECONDS + 1 for m in moments)
        assert [m.score for m in moments] == sorted((m.score for m in moments), reverse=True)
        assert (moments[0].start, moments[0].end) == (40.0, 44.0)
        assert 'subtitle: "The treasure is buried under the old lighthouse."' in moments[0].why
        kept = service.conversation(conv.id)
        assert kept.turns[0].moments[0]["start"] == 40.0 and kept.stride == 1
    finally:
        service.close()


def test_ranking_puts_a_word_for_word_cue_above_one_shared_word_and_merges_agreeing_evidence():
    times = [float(t) for t in range(100)]
    relevance = np.zeros(100)
    relevance[[30, 31, 70]] = [9.0, 8.0, 6.0]  # frames 30-31 and 70 stand out
    hits = [CueHit(30.5, 32.0, "The old key opens the chest"), CueHit(80.0, 82.0, "A key, maybe"),
            CueHit(200.0, 201.0, "the old key opens the chest")]
    ranked = rank_moments(times, relevance, hits, "the old key opens the chest", duration=100.0)
    assert ranked[0].start == 30.0 and ranked[0].end >= 32.0  # the cue and frames 30-31 agree: one moment
    assert len(ranked[0].why) == 2 and ranked[0].score > 3
    assert [m.score for m in ranked] == sorted((m.score for m in ranked), reverse=True)
    assert all(m.end <= 100.0 for m in ranked)
    alone = rank_moments(times, None, hits[1:2], "the old key opens the chest", duration=100.0)
    recall, precision = 1 / 4, 1 / 2  # one of the question's four words ("the" is no word), one of the line's two
    assert alone[0].score == pytest.approx(1 + 4 * 5 * precision * recall / (4 * precision + recall))


def test_two_clients_are_answered_in_order_and_never_mixed(data_dir, checkpoint, lv, film):
    _, visual = film
    solo = {q: _fresh_answer(lv, visual, q) for q in ("Where is the treasure?", "What happens at night?")}
    service = ChatService(data_dir, model=str(checkpoint), language="en", lv=lv)
    try:
        a, b = service.new_conversation("Harbor.mkv"), service.new_conversation("Harbor.mkv")
        results: dict[str, list] = {}
        first = service.ask(a.id, "Where is the treasure?", GREEDY)
        second = service.ask(b.id, "What happens at night?", GREEDY)
        started_after_first: list[bool] = []

        def consume(name: str, stream) -> None:
            events = []
            for event in stream:
                if name == "second" and event.type != "queued" and not started_after_first:
                    started_after_first.append(first.finished)
                events.append(event)
            results[name] = events

        threads = [threading.Thread(target=consume, args=pair) for pair in (("first", first), ("second", second))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        text = {n: "".join(e.text for e in ev if e.type == "text") for n, ev in results.items()}
        assert text == {"first": solo["Where is the treasure?"], "second": solo["What happens at night?"]}
        assert [results[n][0].position for n in ("first", "second")] == [0, 1]
        assert started_after_first == [True]
    finally:
        service.close()


def test_a_question_cancelled_while_waiting_never_runs(data_dir, checkpoint, lv):
    service = ChatService(data_dir, model=str(checkpoint), language="en", lv=lv)
    try:
        conv = service.new_conversation("Harbor.mkv")
        busy = service.ask(conv.id, "Where is the treasure?", GREEDY)
        waiting = service.ask(conv.id, "Who is speaking?", GREEDY)
        waiting.cancel()
        assert [e.type for e in busy][-1] == "done"
        events = list(waiting)
        assert events[-1].type == "error" and events[-1].kind == "cancelled"
        assert not any(e.type == "progress" for e in events)
        assert [t.question for t in service.conversation(conv.id).turns] == ["Where is the treasure?"]
    finally:
        service.close()


_RESUME = """
import json, sys
from app.chat_service import ChatService
from app.conversations import ConversationStore
from llamavid.runtime.generate import SamplingOptions
from llamavid.runtime.options import LoadOptions
data, model, conv, question = sys.argv[1:5]
service = ChatService(data, model=model, language="en", load=LoadOptions(device="cpu", dtype="fp32"))
if conv == "new":
    conv = service.new_conversation("Harbor.mkv").id
events = list(service.ask(int(conv), question, SamplingOptions(temperature=0, max_new_tokens=6)))
service.close()
print(json.dumps({"conv": int(conv), "answer": "".join(e.text for e in events if e.type == "text"),
                  "phases": sorted({e.progress.phase for e in events if e.progress})}))
"""


def _in_new_process(data_dir: Path, checkpoint: Path, conv: str, question: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", _RESUME, str(data_dir), str(checkpoint), conv, question],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_conversation_resumed_in_a_new_process_continues_exactly(data_dir, checkpoint, lv, film):
    """Across restarts: first from the state saved when the service closed (no film reading), then,
    with that state gone, rebuilt from the kept turns (the film read again, with progress)."""
    _, visual = film
    uninterrupted = Chat(lv, visual)
    questions = ("Where is the treasure?", "Who is speaking?", "What happens at night?")
    expected = ["".join(uninterrupted.ask(q, GREEDY)) for q in questions]
    first = _in_new_process(data_dir, checkpoint, "new", questions[0])
    assert first["answer"] == expected[0]
    state = data_dir / "states" / f"conversation-{first['conv']}.state"
    assert state.is_file()
    second = _in_new_process(data_dir, checkpoint, str(first["conv"]), questions[1])
    assert second["answer"] == expected[1] and "visual" not in second["phases"]  # read back, not re-read
    state.unlink()
    third = _in_new_process(data_dir, checkpoint, str(first["conv"]), questions[2])
    assert third["answer"] == expected[2]
    assert "visual" in third["phases"] and "prefill" in third["phases"]  # the rebuild showed progress


def test_closing_the_service_cancels_the_question_being_answered(data_dir, checkpoint, lv):
    service = ChatService(data_dir, model=str(checkpoint), language="en", lv=lv)
    conv = service.new_conversation("Harbor.mkv")
    stream = service.ask(conv.id, "Where is the treasure?", GREEDY)
    events = iter(stream)
    while next(events).type != "progress":  # wait until the film is being read
        pass
    service.close()
    rest = list(events)
    assert rest[-1].type == "error" and rest[-1].kind == "cancelled"
    assert ConversationStore(data_dir / "conversations.db").get(conv.id).turns == []


def test_a_thinned_film_says_so_with_the_answer_and_a_whole_one_does_not(data_dir, checkpoint, lv):
    service = ChatService(data_dir, model=str(checkpoint), language="en", lv=lv)
    try:
        thinned, whole = service.new_conversation("Harbor.mkv"), service.new_conversation("Harbor.mkv")
        service.store.db.execute("UPDATE conversations SET stride = 3 WHERE id = ?", [thinned.id])
        service.store.db.conn.commit()
        done = [e for e in service.ask(thinned.id, "Where is the treasure?", GREEDY) if e.type == "done"]
        assert len(done) == 1 and any("every 3rd frame" in n for n in done[0].notes), done
        assert "every 3rd frame" in " ".join(done[0].to_dict()["notes"])
        done = [e for e in service.ask(whole.id, "Where is the treasure?", GREEDY) if e.type == "done"]
        assert done[0].notes == ()  # negative control: every frame read, nothing to say
    finally:
        service.close()


def test_a_moment_names_the_question_that_weighed_its_frames():
    from app.live_chat import weighed_by
    from llamavid.runtime.chat import Turn
    from llamavid.runtime.prepared import PREPARED_QUESTION

    class _Chat:
        def __init__(self, *questions):
            self.turns = [Turn(q) for q in questions]

    first = _Chat("Where is the treasure?")
    assert weighed_by(first, first.turns[0]) == "the question"
    follow = _Chat("Where is the treasure?", "And who hid it?")
    assert weighed_by(follow, follow.turns[1]) == 'the conversation\'s first question ("Where is the treasure?")'
    fast = _Chat(PREPARED_QUESTION, "Who hid it?")
    assert "neutral question" in weighed_by(fast, fast.turns[1])
    moments = rank_moments([float(t) for t in range(20)], [0.0] * 9 + [9.0] + [0.0] * 10, [], "Who hid it?",
                           weighed_by=weighed_by(follow, follow.turns[1]))
    assert moments and moments[0].why[0].startswith("the conversation's first question")
