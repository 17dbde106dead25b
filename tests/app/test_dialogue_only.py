"""A film whose frames are not indexed yet can be asked about from its dialogue (issue 27): the
indexer's first pass reads every film's subtitles, and the answer says it comes from the dialogue
alone; its conversation stays about the dialogue once the frames are read later. The real chat
service on a tiny model and a real film made with PyAV, indexed in two passes by the real indexer."""
from __future__ import annotations

from pathlib import Path

import pytest

from app.chat_service import ChatService
from app.film_words import reading_note
from indexer import library
from indexer.library import DIALOGUE_NOTE, askable
from indexer.pipeline import IndexOptions, Pipeline
from indexer.runner import run_job, run_queue
from indexer.store import LibraryStore
from llamavid.media.synthetic import clock, srt_text, write_video
from llamavid.model.tiny import write_tiny_checkpoint
from llamavid.paths import DataDir
from llamavid.runtime.chat import DIALOGUE_ONLY
from llamavid.runtime.generate import SamplingOptions
from llamavid.runtime.options import LoadOptions

pytestmark = pytest.mark.slow
MODEL = "llama-vid-tiny-224-long-video"
GREEDY = SamplingOptions(temperature=0, max_new_tokens=4)
CUES = [(5.0, 8.0, "Hello captain, the wind is rising."), (20.0, 24.0, "The treasure is under the lighthouse.")]


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A data folder with the tiny model and one film whose dialogue is read and whose frames are not."""
    data, films = tmp_path / "data", tmp_path / "films"
    checkpoint = write_tiny_checkpoint(data / "models" / MODEL)
    write_video(films / "Harbor.mkv", clock(64, 48, 5), fps=5, seconds=30)
    (films / "Harbor.en.srt").write_text(srt_text(CUES))
    dd = DataDir(data).create()
    options = IndexOptions(vision=str(checkpoint / "eva_vit_g.pth"), speech="never")
    with LibraryStore.open(dd.database) as store:
        from indexer.controls import add_folders

        add_folders(store, [films])
        job = store.claim_next_job(first_pass=True)
        assert job["first_pass"]
        assert run_job(Pipeline(store, dd, options), store, job, options) == ("dialogue ready", None)
    return data


def _ask(service: ChatService, movie_id: int, question: str):
    events = list(service.ask_film(movie_id, question, options=GREEDY))
    done = next(e for e in events if e.type == "done")
    text = "".join(e.text for e in events if e.type == "text")
    return done, text


def test_a_film_whose_frames_are_not_read_is_answered_from_its_dialogue_and_says_so(data: Path) -> None:
    db = library.open_library(data)
    movie = library.find_movie(db, "Harbor.mkv")
    assert not movie.features_complete and movie.cue_count == 2 and askable(movie)
    service = ChatService(data, MODEL, language="en", load=LoadOptions(device="cpu", dtype="fp32"))
    try:
        done, text = _ask(service, movie.id, "Where is the treasure?")
        assert DIALOGUE_NOTE in done.notes and text
        conv = service.store.recent(movie.id)[0]
        assert service.store.get(conv.id).stride == DIALOGUE_ONLY
        assert reading_note(stride=DIALOGUE_ONLY) == f"({DIALOGUE_NOTE})"  # what a reopened conversation shows
    finally:
        service.close()

    checkpoint = data / "models" / MODEL
    run_queue(DataDir(data), IndexOptions(vision=str(checkpoint / "eva_vit_g.pth"), speech="never"))
    movie = library.find_movie(library.open_library(data), "Harbor.mkv")
    assert movie.features_complete
    service = ChatService(data, MODEL, language="en", load=LoadOptions(device="cpu", dtype="fp32"))
    try:
        events = list(service.ask(conv.id, "Who speaks first?", GREEDY))
        done = next(e for e in events if e.type == "done")
        assert DIALOGUE_NOTE in done.notes  # a dialogue conversation stays one
        fresh, _ = _ask(service, movie.id, "What does the harbor look like?")
        assert DIALOGUE_NOTE not in fresh.notes  # a new conversation reads the frames now
    finally:
        service.close()


def test_a_film_with_neither_frames_nor_dialogue_is_not_askable(tmp_path: Path) -> None:
    data, films = tmp_path / "data", tmp_path / "films"
    write_video(films / "Silent.mkv", clock(32, 32, 5), fps=5, seconds=2)
    dd = DataDir(data).create()
    with LibraryStore.open(dd.database) as store:
        from indexer.controls import add_folders

        add_folders(store, [films])
        options = IndexOptions(speech="never")
        job = store.claim_next_job(first_pass=True)
        run_job(Pipeline(store, dd, options), store, job, options)
    movie = library.find_movie(library.open_library(data), "Silent.mkv")
    assert movie.cue_count == 0 and not askable(movie)
    with pytest.raises(library.FeaturesNotReady, match="no dialogue to go by"):
        library.dialogue_visual(library.open_library(data), movie)
