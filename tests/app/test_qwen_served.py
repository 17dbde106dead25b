"""Both families behind one server: a tiny LLaMA-VID and a tiny Qwen3-VL (the released layout, random
weights) installed in one data folder, served on 127.0.0.1 and asked with the real ``openai`` client.

Each Qwen answer is checked against the same question asked of the tiny Qwen directly in this
process (:class:`~llamavid.runtime.qwen_chat.QwenChat` on the same film turn, image or text), so an
answer equal to it was given by the Qwen model and no other; the film's moments come from the index.
"""
from __future__ import annotations

import base64
import io
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.qwen_live import film_askable, film_plan_of, film_turn
from app.server.sample import CUES, MODEL
from app.server.settings import ServerSettings
from indexer import library
from llamavid.runtime.family import QwenVL, load_qwen
from llamavid.runtime.generate import SamplingOptions
from llamavid.runtime.options import LoadOptions
from llamavid.runtime.qwen_chat import QwenChat, image_turn, text_turn
from tests.support import qwen_vl as support
from tests.support.movies import movie as a_movie
from tests.support.served import serving

pytestmark = pytest.mark.slow

QWEN = "qwen3-vl-tiny"
TREASURE = "Where is the treasure buried?"  # the 40-44 s cue says it
GREEDY = {"temperature": 0, "max_tokens": 6}
OPTS = SamplingOptions(temperature=0, max_new_tokens=6)


@pytest.fixture(scope="module")
def library_with_qwen(served_library, tmp_path_factory) -> tuple[Path, Path]:
    data, films = served_library
    shutil.copytree(support.tiny_qwen_vl(tmp_path_factory), data / "models" / QWEN)
    return data, films


@pytest.fixture(scope="module")
def server(library_with_qwen):
    data, _ = library_with_qwen
    with serving(ServerSettings(data_dir=data, model=MODEL, port=0, ui=False,
                                load_options=LoadOptions(device="cpu", dtype="fp32"))) as running:
        yield running


@pytest.fixture(scope="module")
def direct(library_with_qwen) -> QwenVL:
    """The tiny Qwen loaded here, to know the answers the served one must give."""
    data, _ = library_with_qwen
    return load_qwen(data / "models" / QWEN, device="cpu", dtype="fp32")


@pytest.fixture(scope="module")
def film(library_with_qwen) -> library.Movie:
    data, _ = library_with_qwen
    db = library.open_library(data)
    return next(m for m in library.list_movies(db) if Path(m.rel_path).stem == "Harbor")


def extra(obj, name: str):
    return (obj.model_extra or {}).get(name)


def movie_message(text: str, movie_id: int) -> list[dict]:
    return [{"role": "user", "content": [{"type": "text", "text": text}, {"type": "movie", "movie_id": movie_id}]}]


def png(seed: int = 0, size: int = 48) -> tuple[str, np.ndarray]:
    pixels = (np.random.default_rng(seed).random((size, size, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode(), pixels


def answer(chat: QwenChat, question: str) -> str:
    return "".join(chat.ask(question, OPTS))


# ---------------------------------------------------------------- the film prompt from the library
def test_film_prompt_from_the_library_holds_the_planned_frames_markers_and_cues(library_with_qwen, film):
    """The 130 s Harbor film (64x48): 2 frames a second (Qwen3-VL's rate caps a short film), so 260
    frames in 130 pairs, one marker per pair, and each of the three cues once, after its pair."""
    data, _ = library_with_qwen
    db = library.open_library(data)
    plan = film_plan_of(film)
    first, track = film_turn(db, film)
    prompt = first.build("Who speaks?", None)
    text = prompt.text()
    assert (len(plan.times), plan.pairs) == (260, 130) and track is not None
    assert len(prompt.groups) == plan.pairs and sum(len(g.frames) for g in prompt.groups) == 260
    assert all(g.size == plan.size for g in prompt.groups)
    markers = [float(m) for m in re.findall(r"<(\d+\.\d) seconds>", text)]
    pairs = zip(plan.times[::2], plan.times[1::2], strict=True)
    assert markers == [round((a + b) / 2, 1) for a, b in pairs]
    assert [text.count(line) for _s, _e, line in CUES] == [1, 1, 1]
    segments = re.split(r"<\d+\.\d seconds>", text)[1:]
    for _start, end, line in CUES:  # after the pair shown when it ends, before the next pair's marker
        where = next(i for i, seg in enumerate(segments) if line in seg)
        assert plan.times[2 * where] <= end < (plan.times[2 * where + 2] if 2 * where + 2 < 260 else 1e9)
    assert first.frame_times == list(plan.times) and prompt.visual_tokens() == plan.visual_tokens


def test_a_probed_film_is_askable_before_its_pictures_are_indexed(tmp_path):
    file = tmp_path / "f.mp4"
    file.write_bytes(b"x")
    probed = a_movie(path=str(file), duration=60.0, width=64, height=48, features_complete=False, cue_count=0)
    assert film_askable(probed)
    assert not film_askable(a_movie(path=str(file), duration=None, width=None, height=None))


# ---------------------------------------------------------------- the served API
def test_models_lists_both_families(server, http):
    listed = {m["id"]: m for m in http.get("/v1/models").json()["data"]}
    assert (listed[MODEL]["family"], listed[QWEN]["family"]) == ("llama-vid", "qwen-vl")
    assert listed[QWEN]["kind"] == "qwen-vl" and listed[QWEN]["status"] == "complete"


def test_film_question_and_follow_up_are_answered_by_qwen_with_moments(server, client, http, direct, film,
                                                                       library_with_qwen):
    data, _ = library_with_qwen
    first = client.chat.completions.create(model=QWEN, messages=movie_message(TREASURE, film.id), **GREEDY)
    conversation = extra(first, "conversation_id")
    follow = client.chat.completions.create(model=QWEN, messages=[{"role": "user", "content": "And then?"}],
                                            extra_body={"conversation_id": conversation}, **GREEDY)

    turn, _track = film_turn(library.open_library(data), film)
    chat = QwenChat(direct, turn)
    assert first.choices[0].message.content == answer(chat, TREASURE)
    assert follow.choices[0].message.content == answer(chat, "And then?")
    moments = extra(first, "moments")
    assert (moments[0]["start"], moments[0]["end"]) == (40.0, 44.0)  # the cue, from the index
    kept = http.get(f"/v1/conversations/{conversation}").json()
    assert kept["model"] == QWEN and [t["question"] for t in kept["turns"]] == [TREASURE, "And then?"]


def test_an_image_question_is_answered_by_qwen(server, client, direct):
    url, pixels = png(seed=3)
    got = client.chat.completions.create(model=QWEN, messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is in the picture?"}, {"type": "image_url", "image_url": {"url": url}}]}],
        **GREEDY)
    assert got.choices[0].message.content == answer(QwenChat(direct, image_turn([pixels])), "What is in the picture?")


def test_switching_the_model_gives_each_family_its_own_answer(server, client, direct):
    def ask(model: str) -> str:
        msg = [{"role": "user", "content": "Say something about ships."}]
        reply = client.chat.completions.create(model=model, messages=msg, **GREEDY)
        assert reply.model == model
        return reply.choices[0].message.content

    llama, qwen, llama_again = ask(MODEL), ask(QWEN), ask(MODEL)
    assert qwen == answer(QwenChat(direct, text_turn()), "Say something about ships.")
    assert llama == llama_again and llama != qwen


def test_a_kept_conversation_keeps_its_model_and_its_state_across_a_switch(server, client, direct, film,
                                                                          library_with_qwen):
    """A Qwen film conversation, then a LLaMA-VID question (the Qwen conversation's cache goes to disk
    as the model is switched), then the conversation's follow-up asked naming LLaMA-VID: it is still
    answered by Qwen, from the saved state, as an uninterrupted conversation would be."""
    data, _ = library_with_qwen
    first = client.chat.completions.create(model=QWEN, messages=movie_message(TREASURE, film.id), **GREEDY)
    conversation = extra(first, "conversation_id")
    client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hello?"}], **GREEDY)
    assert (data / "states" / f"qwen-conversation-{conversation}.state").is_file()
    follow = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Who said it?"}],
                                            extra_body={"conversation_id": conversation}, **GREEDY)

    turn, _track = film_turn(library.open_library(data), film)
    chat = QwenChat(direct, turn)
    assert first.choices[0].message.content == answer(chat, TREASURE)
    assert follow.choices[0].message.content == answer(chat, "Who said it?") and follow.model == QWEN
