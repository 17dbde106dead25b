"""The OpenAI-compatible API on a real uvicorn server on 127.0.0.1, driven by the real ``openai``
client: a tiny model in the released layout, a film written with PyAV and indexed by the real
indexer, images and a short video sent as data URLs."""
from __future__ import annotations

import base64
import io
import json
import socket
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
from PIL import Image

from app.server.app import Running, start
from app.server.sample import MODEL, make_library
from app.server.settings import ServerSettings
from indexer import library as films
from llamavid.media.synthetic import clock, write_video
from llamavid.runtime.api import LlamaVid
from llamavid.runtime.chat import Chat
from llamavid.runtime.generate import SamplingOptions
from llamavid.runtime.gguf_export import convert
from llamavid.runtime.options import LoadOptions
from llamavid.runtime.prepared import PREPARED_QUESTION, neutral_turn
from tests.support.served import serving

pytestmark = pytest.mark.slow

TREASURE = "The treasure is buried under the old lighthouse?"  # a subtitle says it word for word (40-44 s)
GREEDY = {"temperature": 0, "max_tokens": 6}
LONGER = {"temperature": 0, "max_tokens": 24}  # long enough for the tiny model's two modes to answer apart


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> tuple[Path, Path]:
    return make_library(tmp_path_factory.mktemp("served"))


@pytest.fixture(scope="module")
def server(library) -> Running:
    data, _ = library
    with serving(ServerSettings(data_dir=data, port=0, ui=False,
                                load_options=LoadOptions(device="cpu", dtype="fp32"))) as running:
        yield running


def png_url(seed: int = 0, size: int = 48) -> str:
    pixels = (np.random.default_rng(seed).random((size, size, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def image_message(text: str, url: str | None = None) -> list[dict]:
    return [{"role": "user", "content": [{"type": "text", "text": text},
                                         {"type": "image_url", "image_url": {"url": url or png_url()}}]}]


def movie_message(text: str, movie_id: int, **extra) -> list[dict]:
    return [{"role": "user", "content": [{"type": "text", "text": text},
                                         {"type": "movie", "movie_id": movie_id, **extra}]}]


def film_id(http: httpx.Client) -> int:
    movies = http.get("/v1/movies").json()["data"]
    return next(m["id"] for m in movies if m["title"] == "Harbor")


def extra(obj, name: str):
    """An extension field of an openai response object (kept by the client, not typed)."""
    return (obj.model_extra or {}).get(name)


def stream_chunks(client: openai.OpenAI, **request) -> list:
    return list(client.chat.completions.create(model=MODEL, stream=True, **request))


def chunk_text(chunks: list) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_models_health_and_movies_describe_what_is_served(client, http) -> None:
    assert [m.id for m in client.models.list()] == [MODEL]
    health = http.get("/health")
    assert health.status_code == 200 and health.json()["model"] == MODEL and health.json()["model_loaded"]
    movie = http.get(f"/v1/movies/{film_id(http)}").json()
    assert movie["indexed"] and movie["state"] == "done" and movie["duration"] == pytest.approx(130, abs=1)
    assert [t["language"] for t in movie["subtitle_tracks"]] == ["en"]
    assert movie["video_url"] == f"/v1/movies/{movie['id']}/video" and not movie["path"].startswith("/")


def test_an_image_answer_streamed_equals_the_plain_answer(client) -> None:
    messages = image_message("Describe the scene.")
    plain = client.chat.completions.create(model=MODEL, messages=messages, **GREEDY)
    assert plain.choices[0].message.role == "assistant" and plain.choices[0].message.content
    assert plain.choices[0].finish_reason == "length" and plain.usage.completion_tokens == 6
    chunks = stream_chunks(client, messages=messages, **GREEDY)
    assert chunk_text(chunks) == plain.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "length"
    progress = [extra(c, "progress") for c in chunks if extra(c, "progress")]
    assert progress[0]["phase"] == "queued" and "prefill" in {p["phase"] for p in progress}
    first_text = next(i for i, c in enumerate(chunks) if c.choices and c.choices[0].delta.content)
    assert all(i < first_text for i, c in enumerate(chunks) if extra(c, "progress")), \
        "progress arrives before the first token"


def test_a_film_answer_carries_its_moments_and_its_conversation(server, client, http) -> None:
    movie = film_id(http)
    plain = client.chat.completions.create(model=MODEL, messages=movie_message(TREASURE, movie), **GREEDY)
    moments = extra(plain, "moments")
    assert (moments[0]["start"], moments[0]["end"]) == (40.0, 44.0)
    assert "treasure is buried" in moments[0]["why"][0]
    conversation = extra(plain, "conversation_id")
    kept = http.get(f"/v1/conversations/{conversation}").json()
    assert kept["movie_id"] == movie and [t["question"] for t in kept["turns"]] == [TREASURE]
    assert kept["turns"][0]["answer"] == plain.choices[0].message.content
    exported = server.app.state.service.export_markdown(conversation)  # what the desktop's Export writes
    assert "Moments: 0:00:40-0:00:44" in exported and plain.choices[0].message.content in exported

    chunks = stream_chunks(client, messages=movie_message(TREASURE, movie), **GREEDY)
    phases = [extra(c, "progress")["phase"] for c in chunks if extra(c, "progress")]
    assert "visual" in phases and "prefill" in phases, phases
    assert chunk_text(chunks) == plain.choices[0].message.content
    last = next(c for c in chunks if c.choices and c.choices[0].finish_reason)
    assert extra(last, "moments")[0]["start"] == 40.0 and extra(last, "conversation_id") not in (None, conversation)


def test_a_follow_up_continues_the_conversation_without_reading_the_film_again(client, http) -> None:
    movie = film_id(http)
    first = client.chat.completions.create(model=MODEL, messages=movie_message(TREASURE, movie), **GREEDY)
    conversation = extra(first, "conversation_id")
    chunks = stream_chunks(client, messages=[{"role": "user", "content": "Who is speaking?"}],
                           extra_body={"conversation_id": conversation}, **GREEDY)
    phases = {extra(c, "progress")["phase"] for c in chunks if extra(c, "progress")}
    assert "visual" not in phases, "the film's tokens come from the conversation's cache"
    kept = http.get(f"/v1/conversations/{conversation}").json()
    assert [t["question"] for t in kept["turns"]] == [TREASURE, "Who is speaking?"]
    assert kept["turns"][1]["answer"] == chunk_text(chunks)

    # a client that resends the whole history (Open WebUI does) continues the same conversation
    history = [*movie_message(TREASURE, movie), {"role": "assistant", "content": first.choices[0].message.content},
               {"role": "user", "content": "Who is speaking?"},
               {"role": "assistant", "content": kept["turns"][1]["answer"]},
               {"role": "user", "content": "What happens at night?"}]
    resent = stream_chunks(client, messages=history, **GREEDY)
    last = next(c for c in resent if c.choices and c.choices[0].finish_reason)
    assert extra(last, "conversation_id") == conversation
    assert "visual" not in {extra(c, "progress")["phase"] for c in resent if extra(c, "progress")}


def test_moments_start_at_the_line_a_question_or_a_follow_up_says_in_other_words(client, http) -> None:
    movie = film_id(http)
    first = client.chat.completions.create(model=MODEL, **GREEDY,
                                           messages=movie_message("When does the wind rise for the captain?", movie))
    moments = extra(first, "moments")
    assert (moments[0]["start"], moments[0]["end"]) == (5.0, 8.0)
    assert moments[0]["why"][0] == 'subtitle: "Hello captain, the wind is rising."'
    follow = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Who sails by night?"}],
                                            extra_body={"conversation_id": extra(first, "conversation_id")}, **GREEDY)
    assert extra(follow, "moments")[0]["start"] == 90.0  # its frames were weighed by the first question


def test_the_library_search_finds_lines_by_quote_or_paraphrase(http) -> None:
    movie = film_id(http)
    found = http.get("/v1/search", params={"q": "Where was the treasure buried?"})
    assert found.status_code == 200 and found.json()["object"] == "list"
    best = found.json()["data"][0]
    assert best == {"object": "search.result", "kind": "quote", "title": "Harbor", "movie_id": movie,
                    "path": "Harbor.mp4", "start": 40.0, "end": 44.0,
                    "text": "The treasure is buried under the old lighthouse.", "score": best["score"],
                    "thumbnail_url": f"/v1/movies/{movie}/frame?t=40"} and 0.5 < best["score"] < 1
    picture = http.get(best["thumbnail_url"])
    assert picture.status_code == 200 and picture.headers["content-type"] == "image/jpeg"
    assert picture.content[:3] == b"\xff\xd8\xff"  # a JPEG
    assert http.get(f"/v1/movies/{movie}/frame", params={"t": 10**6}).status_code == 400
    quote = http.get("/v1/search", params={"q": "we sail at night", "limit": 1, "movie_id": movie}).json()["data"]
    assert [(r["start"], r["score"]) for r in quote] == [(90.0, 1.0)]
    assert http.get("/v1/search", params={"q": "the"}).json()["data"] == []  # a stop word alone says nothing
    for params, param in (({}, "q"), ({"q": "  "}, "q"), ({"q": "x" * 501}, "q"), ({"q": "wind", "limit": 0}, "limit"),
                          ({"q": "wind", "limit": 101}, "limit"), ({"q": "wind", "limit": "all"}, "limit"),
                          ({"q": "wind", "limit": 10**30}, "limit"), ({"q": "wind", "movie_id": 0}, "movie_id"),
                          ({"q": "wind", "kind": "lines"}, "kind")):
        refused = http.get("/v1/search", params=params)
        assert refused.status_code == 400, params
        assert refused.json()["error"]["param"] == param and refused.json()["error"]["type"] == "invalid_request_error"
    gone = http.get("/v1/search", params={"q": "wind", "movie_id": 2**62})
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "not_found"


def _neutral_first(data: Path, movie_id: int, question: str, language: str | None) -> str:
    """The answer of a chat about the film whose first question was the neutral one (same model,
    loaded here on its own, greedy as LONGER)."""
    lv = LlamaVid.load(data / "models" / MODEL, device="cpu", dtype="fp32", load_vision=False)
    db = films.open_library(data)
    chat = Chat(lv, films.film_visual(db, films.get_movie(db, movie_id), language=language))
    chat.restore([neutral_turn(chat)])
    return "".join(chat.ask(question, SamplingOptions(temperature=0, max_new_tokens=LONGER["max_tokens"])))


def _phases(chunks: list) -> set[str]:
    return {extra(c, "progress")["phase"] for c in chunks if extra(c, "progress")}


def _conversation_of(chunks: list) -> int:
    return extra(next(c for c in chunks if c.choices and c.choices[0].finish_reason), "conversation_id")


def test_fast_answers_start_from_the_prepared_film_and_keep_their_mode(client, http, server, library) -> None:
    data, _ = library
    movie = film_id(http)
    before = http.get(f"/v1/movies/{movie}").json()
    assert before["prepared"] == 0 and before["prepare_estimate_bytes"] > 0 and not before["prepare_wanted"]
    expected = _neutral_first(data, movie, TREASURE, server.app.state.service.language)
    exact_first = client.chat.completions.create(model=MODEL, messages=movie_message(TREASURE, movie), **LONGER)
    assert exact_first.choices[0].message.content != expected, "the modes differ, so the text tells them apart"

    first = stream_chunks(client, messages=movie_message(TREASURE, movie), extra_body={"fast": True}, **LONGER)
    assert chunk_text(first) == expected and "visual" in _phases(first)  # no prepared state yet: prepared now
    first_id = _conversation_of(first)
    kept = http.get(f"/v1/conversations/{first_id}").json()
    assert kept["fast"] is True and [t["question"] for t in kept["turns"]] == [TREASURE]  # the neutral turn is hidden
    assert http.get(f"/v1/movies/{movie}").json()["prepared"] > 0

    second = stream_chunks(client, messages=movie_message(TREASURE, movie), extra_body={"fast": True}, **LONGER)
    second_id = _conversation_of(second)
    assert second_id != first_id and chunk_text(second) == expected
    assert "visual" not in _phases(second) and "prefill" in _phases(second), "the prepared state was read back"

    # a client resending the history continues a conversation of the same mode, never one of the other
    history = [*movie_message(TREASURE, movie), {"role": "assistant", "content": expected},
               {"role": "user", "content": "Who is speaking?"}]
    fast_again = client.chat.completions.create(model=MODEL, messages=history, extra_body={"fast": True}, **LONGER)
    assert extra(fast_again, "conversation_id") == second_id  # the newest fast one with those turns
    exact = client.chat.completions.create(model=MODEL, messages=history, **LONGER)
    assert extra(exact, "conversation_id") not in (first_id, second_id)
    listed = {c["id"]: c["fast"] for c in http.get("/v1/conversations", params={"movie_id": movie}).json()["data"]}
    assert listed[extra(exact, "conversation_id")] is False and listed[second_id] is True
    # a history no conversation holds starts a fast one after the hidden neutral turn
    unknown = [*history[:1], {"role": "assistant", "content": "Under the old lighthouse."}, history[2]]
    seeded = client.chat.completions.create(model=MODEL, messages=unknown, extra_body={"fast": True}, **LONGER)
    turns = server.app.state.service.conversation(extra(seeded, "conversation_id")).turns
    assert [(t.question, t.hidden) for t in turns] == [(PREPARED_QUESTION, True), (TREASURE, False),
                                                       ("Who is speaking?", False)]

    with pytest.raises(openai.BadRequestError) as mode:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "And then?"}],
                                       extra_body={"conversation_id": first_id, "fast": False}, **LONGER)
    assert mode.value.param == "fast" and "fast answers" in mode.value.message


def test_stateless_history_becomes_earlier_turns(client) -> None:
    alone = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "And the sky?"}],
                                           **GREEDY)
    with_history = client.chat.completions.create(
        model=MODEL, **GREEDY,
        messages=[{"role": "system", "content": "ignored: the template has its own"},
                  {"role": "user", "content": "What colour is the car?"}, {"role": "assistant", "content": "Red."},
                  {"role": "user", "content": "And the sky?"}])
    assert with_history.usage.prompt_tokens > alone.usage.prompt_tokens + 5
    assert with_history.choices[0].message.content


def test_a_short_video_as_a_data_url(client, server, tmp_path) -> None:
    clip = write_video(tmp_path / "clip.mp4", clock(64, 48, 4), fps=4, seconds=4)
    data = base64.b64encode(clip.read_bytes()).decode()
    for part in ({"type": "video_url", "video_url": {"url": "data:video/mp4;base64," + data}},
                 {"type": "input_video", "input_video": {"data": data, "format": "mp4"}}):
        answer = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": [{"type": "text", "text": "What happens?"}, part]}],
            **GREEDY)
        assert answer.choices[0].message.content and answer.usage.prompt_tokens > 4
    assert list(server.app.state.temp_dir.iterdir()) == [], "uploaded videos are deleted after use"


def test_bad_input_gets_a_4xx_and_the_server_keeps_answering(client, http) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model=MODEL, messages=image_message(
            "What is this?", "data:image/png;base64," + base64.b64encode(b"not a picture").decode()), **GREEDY)
    assert bad.value.code == "bad_media" and bad.value.param == "messages[0].content[1]"
    assert "not an image" in bad.value.message
    with pytest.raises(openai.BadRequestError) as remote:
        client.chat.completions.create(model=MODEL, messages=image_message("What?", "https://example.com/a.png"),
                                       **GREEDY)
    assert remote.value.code == "remote_url_refused" and "never fetches" in remote.value.message
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model=MODEL, messages=movie_message("Why?", 999), **GREEDY)
    assert "no movie 999" in missing.value.message
    with pytest.raises(openai.NotFoundError) as unknown:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Hi"}], **GREEDY)
    assert unknown.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as overflow:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "why " * 5000}], **GREEDY)
    assert overflow.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as last:
        client.chat.completions.create(model=MODEL, messages=[{"role": "assistant", "content": "Hello"}], **GREEDY)
    assert "last message must come from the user" in last.value.message
    raw = http.post("/v1/chat/completions", json={"messages": []})
    assert raw.status_code == 400 and set(raw.json()["error"]) == {"message", "type", "param", "code"}
    after = client.chat.completions.create(model=MODEL, messages=image_message("Describe the scene."), **GREEDY)
    assert after.choices[0].message.content


def test_a_client_that_disconnects_frees_the_model_for_the_next_request(client, http, server) -> None:
    before = server.app.state.service.status()
    stream = client.chat.completions.create(model=MODEL, stream=True, temperature=0, max_tokens=3000,
                                            messages=[{"role": "user", "content": "Tell me a long story."}])
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            break  # the answer has begun: leave
    stream.close()
    after = client.chat.completions.create(model=MODEL, messages=image_message("Describe the scene."), **GREEDY)
    assert after.choices[0].message.content
    status = http.get("/health").json()
    assert status["cancelled"] == before["cancelled"] + 1, "the abandoned answer was stopped, not finished"
    assert status["answered"] == before["answered"] + 1 and not status["busy"]


def test_a_plain_request_whose_client_leaves_is_cancelled_too(http, server) -> None:
    before = http.get("/health").json()
    body = json.dumps({"model": MODEL, "max_tokens": 3000, "temperature": 0,
                       "messages": [{"role": "user", "content": "Tell me a long story."}]}).encode()
    port = int(server.url.rstrip("/").rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        while not http.get("/health").json()["busy"]:
            pass  # wait until the answer is being generated, then leave
    while http.get("/health").json()["busy"]:
        pass
    after = http.get("/health").json()
    assert after["cancelled"] == before["cancelled"] + 1 and after["answered"] == before["answered"]


def long_story(client: openai.OpenAI):
    """A streamed answer of up to 3000 tokens, read up to its first words (the model is then busy)."""
    stream = client.chat.completions.create(model=MODEL, stream=True, temperature=0, max_tokens=3000,
                                            messages=[{"role": "user", "content": "Tell me a long story."}])
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            return stream
    pytest.fail("the long answer ended before its first words")


def test_the_api_answers_while_a_generation_runs(client, http) -> None:
    stream = long_story(client)
    try:
        assert http.get("/health").json()["busy"]
        assert http.get("/v1/models").json()["data"][0]["id"] == MODEL
        assert http.get("/v1/movies").status_code == 200
        assert http.get("/health").json()["busy"], "the generation was still running meanwhile"
    finally:
        stream.close()


def test_a_second_client_waits_its_turn_and_is_answered(client) -> None:
    stream = long_story(client)
    try:
        second = client.chat.completions.create(model=MODEL, stream=True, messages=image_message("Describe it."),
                                                **GREEDY)
        seen = []
        for chunk in second:
            seen.append(chunk)
            if extra(chunk, "progress"):
                break
        assert extra(seen[-1], "progress") == {"phase": "queued", "position": 1,
                                               "message": "waiting for the model: 1 question ahead"}
    finally:
        stream.close()  # the first client leaves: the second is answered
    assert chunk_text([*seen, *second])


def test_a_request_for_another_installed_model_switches_to_it(client, http, library) -> None:
    data, _ = library
    (data / "models" / "llama-vid-tiny-second").symlink_to(data / "models" / MODEL, target_is_directory=True)
    assert sorted(m.id for m in client.models.list()) == sorted([MODEL, "llama-vid-tiny-second"])
    answer = client.chat.completions.create(model="llama-vid-tiny-second", messages=image_message("Describe it."),
                                            **GREEDY)
    assert answer.model == "llama-vid-tiny-second" and answer.choices[0].message.content
    health = http.get("/health").json()
    assert health["model"] == "llama-vid-tiny-second" and health["model_loaded"]
    back = client.chat.completions.create(model=MODEL, messages=image_message("Describe it."), **GREEDY)
    assert back.model == MODEL and back.choices[0].message.content == answer.choices[0].message.content


@pytest.fixture(scope="module")
def gguf_server(library) -> Running:
    """The same library served by the tiny model converted for llama.cpp (one context, one sequence)."""
    data, _ = library
    convert(data / "models" / MODEL, data / "models" / "llama-vid-tiny-gguf", types=("f32",))
    shared = data / "models" / "shared"  # where `llamavid models pull` puts EVA for every model
    shared.mkdir(exist_ok=True)
    (shared / "eva_vit_g.pth").symlink_to(data / "models" / MODEL / "eva_vit_g.pth")
    running = start(ServerSettings(data_dir=data, model="llama-vid-tiny-gguf", port=0, ui=False,
                                   load_options=LoadOptions(device="cpu", dtype="fp32", kv_type="f32")))
    try:
        yield running
    finally:
        running.stop()


def test_llama_cpp_a_stateless_chat_between_two_turns_leaves_the_conversation_intact(gguf_server, http) -> None:
    client = openai.OpenAI(base_url=gguf_server.url + "v1", api_key="unused", max_retries=0, timeout=600)
    model, movie = "llama-vid-tiny-gguf", film_id(http)
    follow = [{"role": "user", "content": "Who is speaking?"}]

    def two_turns(between: bool) -> str:
        first = client.chat.completions.create(model=model, messages=movie_message(TREASURE, movie), **GREEDY)
        if between:  # a stateless image question takes the single llama.cpp context meanwhile
            assert client.chat.completions.create(model=model, messages=image_message("Describe it."),
                                                  **GREEDY).choices[0].message.content
        second = client.chat.completions.create(model=model, messages=follow, **GREEDY,
                                                extra_body={"conversation_id": extra(first, "conversation_id")})
        return second.choices[0].message.content

    assert two_turns(between=True) == two_turns(between=False)
    assert gguf_server.app.state.service.status()["failed"] == 0
