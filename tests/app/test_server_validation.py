"""Every request field is bounded where it is read, and every refusal is a 4xx in OpenAI's error
shape, never a 5xx: against a real uvicorn server on 127.0.0.1 (API only) with a tiny model and a
short indexed film, driven by the real ``openai`` client, raw ``httpx`` (JSON has no NaN) and a
schema-driven fuzzer (Schemathesis, from the server's own ``/openapi.json``)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import hypothesis
import openai
import pytest
import schemathesis
import torch
from schemathesis.generation import GenerationMode

from app.server.app import Running
from app.server.protocol import (
    MAX_ID,
    MAX_REPETITION_PENALTY,
    MAX_SEED,
    MIN_REPETITION_PENALTY,
    MIN_TEMPERATURE,
)
from app.server.sample import MODEL, make_library
from app.server.settings import ServerSettings
from llamavid.runtime.generate import SamplingOptions, apply_repetition_penalty, make_generator, sample
from llamavid.runtime.options import LoadOptions
from tests.support.served import serving

ERROR_FIELDS = {"message", "type", "param", "code"}
HUGE = "99999999999999999999"  # past 2**64 as well as SQLite's 2**63-1
QUESTION = [{"role": "user", "content": "Say hello."}]
SHORT = {"temperature": 0, "max_tokens": 3}


def openai_error(response: httpx.Response, status: int | None = None, param: str | None = "any") -> dict:
    """The ``error`` object of a 4xx in OpenAI's shape (``param`` checked unless "any")."""
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    if status is not None:
        assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == ERROR_FIELDS, body
    error = body["error"]
    assert isinstance(error["message"], str) and error["message"] and isinstance(error["type"], str), body
    if param != "any":
        assert error["param"] == param, body
    return error


# -- the sampler at the bounds the API lets through --------------------------------------------------
@pytest.mark.parametrize("opts", [
    SamplingOptions(temperature=MIN_TEMPERATURE, top_k=0, top_p=1.0),
    SamplingOptions(temperature=MIN_TEMPERATURE, top_p=1e-300, seed=MAX_SEED),
    SamplingOptions(temperature=2.0, repetition_penalty=MAX_REPETITION_PENALTY, top_k=2**31 - 1, seed=0),
    SamplingOptions(temperature=MIN_TEMPERATURE, repetition_penalty=MIN_REPETITION_PENALTY, seed=MAX_SEED),
])
def test_the_sampler_takes_every_value_the_api_lets_through(opts: SamplingOptions) -> None:
    """The extremes of each range, with the scores a model gives (large, zero, negative), still
    sample a token: no NaN probability, no seed the generator refuses."""
    scores = torch.cat([torch.linspace(-80, 80, 997), torch.tensor([0.0, 1e-30, -1e-30])]).float()
    seen = list(range(0, 1000, 3))
    for _ in range(5):
        penalised = apply_repetition_penalty(scores, seen, opts.repetition_penalty)
        assert torch.isfinite(penalised).all()
        token = sample(penalised, opts, make_generator(opts))
        assert 0 <= token < scores.numel()


# -- through the real server -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def library(tmp_path_factory) -> tuple[Path, Path]:
    return make_library(tmp_path_factory.mktemp("validated"), seconds=12)


@pytest.fixture(scope="module")
def server(library) -> Running:
    data, _ = library
    with serving(ServerSettings(data_dir=data, port=0, ui=False,
                                load_options=LoadOptions(device="cpu", dtype="fp32"))) as running:
        yield running


def refused(call, status: int = 400, param: str | None = "any") -> dict:
    """The error of an ``openai`` call that must fail with a 4xx in OpenAI's shape."""
    with pytest.raises(openai.APIStatusError) as caught:
        call()
    return openai_error(caught.value.response, status, param)


def movie_part(movie_id, **extra) -> list[dict]:
    return [{"role": "user", "content": [{"type": "text", "text": "What happens?"},
                                         {"type": "movie", "movie_id": movie_id, **extra}]}]


@pytest.mark.slow
def test_a_seed_past_64_bits_is_a_400_and_the_largest_one_answers(client) -> None:
    ask = client.chat.completions.create
    error = refused(lambda: ask(model=MODEL, messages=QUESTION, seed=2**64, max_tokens=2), param="seed")
    assert error["code"] == "invalid_request" and error["type"] == "invalid_request_error"
    refused(lambda: ask(model=MODEL, messages=QUESTION, seed=-1, max_tokens=2), param="seed")
    answer = ask(model=MODEL, messages=QUESTION, seed=MAX_SEED, temperature=0.7, max_tokens=2)
    assert answer.choices[0].message.content is not None


@pytest.mark.slow
def test_ids_that_cannot_exist_are_refused_and_possible_ones_not_found(client) -> None:
    ask = client.chat.completions.create
    refused(lambda: ask(model=MODEL, messages=movie_part(2**63), max_tokens=2), 400,
            "messages[0].content[1].movie_id")
    refused(lambda: ask(model=MODEL, messages=movie_part(0), max_tokens=2), 400, "messages[0].content[1].movie_id")
    refused(lambda: ask(model=MODEL, messages=movie_part("3"), max_tokens=2), 400, "messages[0].content[1].movie_id")
    refused(lambda: ask(model=MODEL, messages=movie_part(MAX_ID), max_tokens=2), 404,
            "messages[0].content[1].movie_id")
    refused(lambda: ask(model=MODEL, messages=movie_part(1, subtitle_track=2**63), max_tokens=2), 400,
            "messages[0].content[1].subtitle_track")
    refused(lambda: ask(model=MODEL, messages=QUESTION, max_tokens=2, extra_body={"conversation_id": 2**70}), 400,
            "conversation_id")
    refused(lambda: ask(model=MODEL, messages=QUESTION, max_tokens=2, extra_body={"conversation_id": MAX_ID}), 404,
            "conversation_id")


@pytest.mark.slow
@pytest.mark.parametrize(("method", "path"), [
    ("GET", f"/v1/movies/{HUGE}"), ("GET", f"/v1/movies/{HUGE}/video"), ("GET", f"/v1/conversations/{HUGE}"),
    ("DELETE", f"/v1/conversations/{HUGE}"), ("GET", f"/v1/conversations?movie_id={HUGE}"),
    ("GET", f"/v1/movies/{2**63}"), ("GET", "/v1/movies/0"), ("GET", "/v1/movies/-1"), ("GET", "/v1/movies/abc"),
    ("GET", "/v1/conversations/1.5"), ("GET", "/v1/conversations?movie_id=x"),
])
def test_a_path_or_query_id_out_of_range_is_a_400(http, method: str, path: str) -> None:
    error = openai_error(http.request(method, path), 400)
    assert error["param"] in ("movie_id", "conversation_id") and error["code"] == "invalid_request"


@pytest.mark.slow
@pytest.mark.parametrize("path", [f"/v1/movies/{MAX_ID}", f"/v1/movies/{MAX_ID}/video",
                                  f"/v1/conversations/{MAX_ID}"])
def test_the_largest_id_is_a_404(http, path: str) -> None:
    assert openai_error(http.get(path), 404)["code"] == "not_found"


@pytest.mark.slow
@pytest.mark.parametrize(("field", "raw"), [
    ("temperature", "NaN"), ("temperature", "1e999"), ("temperature", "-Infinity"), ("temperature", "1e-300"),
    ("temperature", "2.5"), ("top_p", "NaN"), ("top_p", "0"), ("top_p", "1e999"),
    ("repetition_penalty", "1e300"), ("repetition_penalty", "1e-300"), ("repetition_penalty", "NaN"),
    ("time_budget", "NaN"), ("time_budget", "1e999"), ("max_tokens", str(2**70)), ("max_tokens", "0"),
    ("max_completion_tokens", str(2**63)), ("top_k", str(2**64)), ("seed", str(2**64)), ("n", str(2**70)),
])
def test_sampling_values_that_would_make_nan_probabilities_are_refused(http, field: str, raw: str) -> None:
    valid = {"model": MODEL, "messages": QUESTION, "max_tokens": 2, "temperature": 0.5}
    valid.pop(field, None)
    body = json.dumps(valid)[:-1] + f', "{field}": {raw}}}'  # the value as raw JSON text: NaN, 1e999
    response = http.post("/v1/chat/completions", content=body, headers={"Content-Type": "application/json"})
    assert openai_error(response, 400, field)["code"] == "invalid_request"


@pytest.mark.slow
@pytest.mark.parametrize(("content", "content_type", "why"), [
    (b'{"model": "x", "messages": [', "application/json", "not valid JSON"),
    (b"\xff\xfe", "application/json", None),
    (b"[1, 2]", "application/json", "must be a JSON object"),
    (b"null", "application/json", None),
    (b"hello", "text/plain", None),
    (json.dumps({"messages": QUESTION}).encode(), "text/plain", None),
    (b'{"messages": [{"role": "user", "content": "\\ud800"}]}', "application/json", "not valid Unicode"),
    (b'{"messages": [{"role": "user", "content": [{"type": "text", "text": "\\udfff?"}]}]}', "application/json",
     "not valid Unicode"),
])
def test_a_malformed_body_is_a_400(http, content: bytes, content_type: str, why: str | None) -> None:
    response = http.post("/v1/chat/completions", content=content, headers={"Content-Type": content_type})
    error = openai_error(response, 400)
    assert why is None or why in error["message"], error


@pytest.mark.slow
def test_unknown_routes_and_wrong_methods_answer_in_openai_shape(http) -> None:
    assert openai_error(http.get("/v1/nothing-here"), 404)["code"] == "not_found"
    assert openai_error(http.post("/v2/chat/completions", json={}), 404)["code"] == "not_found"
    wrong = http.put("/v1/models")
    assert openai_error(wrong, 405)["code"] == "method_not_allowed" and "GET" in wrong.headers["allow"]
    assert openai_error(http.get("/v1/chat/completions"), 405)["code"] == "method_not_allowed"
    assert openai_error(http.delete("/v1/movies/1"), 405)["code"] == "method_not_allowed"


@pytest.mark.slow
def test_a_bug_in_a_route_is_a_500_in_openai_shape(server: Running, http) -> None:
    def broken() -> None:
        raise RuntimeError("a bug")

    server.app.add_api_route("/test-only/broken", broken, include_in_schema=False)
    response = http.get("/test-only/broken")
    assert response.status_code == 500 and response.json()["error"]["code"] == "internal_error"
    assert set(response.json()["error"]) == ERROR_FIELDS


@pytest.mark.slow
def test_after_every_refusal_the_server_still_answers(client, http) -> None:
    for path in (f"/v1/movies/{HUGE}", "/v1/nothing-here"):
        openai_error(http.get(path))
    http.post("/v1/chat/completions", content=b'{"messages": NaN}', headers={"Content-Type": "application/json"})
    answer = client.chat.completions.create(model=MODEL, messages=QUESTION, **SHORT)
    assert answer.choices[0].message.role == "assistant" and answer.usage.completion_tokens >= 1
    assert http.get("/health").status_code == 200


# -- the fuzzer: every operation of /openapi.json, valid and invalid requests ----------------------------
FUZZ_EXAMPLES = 40  # per operation and mode (valid, invalid)
FUZZ_SECONDS = 240  # the whole fuzz: the test fails past it (pytest-timeout stops it later still)
CHAT = ("/v1/chat/completions", "POST")


def bounded(case, valid: bool) -> None:
    """A valid chat body runs the model: keep its answer to a few tokens. The schema cannot say what
    a message holds, so a valid body gets a real question and the served model: the other fields
    (sampling values, ids, stream, fast...) are the fuzzer's, and reach the model when they are valid."""
    if (case.path, case.method.upper()) == CHAT and isinstance(case.body, dict):
        if valid:
            case.body.update(model=MODEL, messages=QUESTION)
        for name in ("max_tokens", "max_completion_tokens"):
            if isinstance(case.body.get(name), int) and not isinstance(case.body[name], bool):
                case.body[name] = max(-1, min(case.body[name], 3))
        case.body.setdefault("max_tokens", 3)


class Fuzz:
    """What the fuzz sent and what came back: the status counts per operation, and the failures."""

    def __init__(self, base_url: str):
        self.base_url, self.started, self.sent = base_url, time.monotonic(), 0
        self.statuses: dict[str, dict[int, int]] = {}
        self.failures: list[str] = []

    def operation(self, operation, key: str, mode) -> None:
        """``FUZZ_EXAMPLES`` requests of one operation (valid or invalid ones, as ``mode`` says),
        from Hypothesis with a fixed seed (derandomized), no shrinking."""
        valid = mode is GenerationMode.POSITIVE

        @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
        @hypothesis.settings(max_examples=FUZZ_EXAMPLES, derandomize=True, database=None, deadline=None,
                             phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
                             suppress_health_check=list(hypothesis.HealthCheck))
        def one(case) -> None:
            assert time.monotonic() - self.started < FUZZ_SECONDS, "the fuzz ran past its time"
            bounded(case, valid)
            response = case.call(base_url=self.base_url, timeout=120)
            self.sent += 1
            counts = self.statuses.setdefault(key, {})
            counts[response.status_code] = counts.get(response.status_code, 0) + 1
            self.check(response.status_code, response.content,
                       f"{case.method} {case.formatted_path} query={case.query} body={case.body!r:.300}")

        one()

    def check(self, status: int, content: bytes, where: str) -> None:
        if status >= 500:
            self.failures.append(f"{status} for {where}: {content[:300]!r}")
        elif status >= 400:
            try:
                body = json.loads(content)
                ok = set(body) == {"error"} and set(body["error"]) == ERROR_FIELDS
            except ValueError:
                ok = False
            if not ok:
                self.failures.append(f"{status} not in OpenAI's shape for {where}: {content[:300]!r}")


@pytest.mark.slow
@pytest.mark.timeout(FUZZ_SECONDS + 300)
def test_fuzzed_requests_get_no_5xx_and_every_4xx_is_in_openai_shape(server: Running, http) -> None:
    """Schemathesis reads the server's /openapi.json and sends, for every operation, requests the
    schema allows (positive) and requests it does not (negative: wrong types, out-of-range ids and
    values, missing fields), on 127.0.0.1 only."""
    spec = http.get("/openapi.json").json()
    schema = schemathesis.openapi.from_dict(spec)
    fuzz = Fuzz(server.url.rstrip("/"))
    no_invalid: list[str] = []
    for path, methods in spec["paths"].items():
        for method in methods:
            key = f"{method.upper()} {path}"
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                try:
                    fuzz.operation(schema[path][method.upper()], key, mode)
                except hypothesis.errors.Unsatisfiable:
                    if mode is GenerationMode.POSITIVE:
                        raise
                    no_invalid.append(key)  # no parameter, no body: nothing to get wrong
    seconds = time.monotonic() - fuzz.started
    print(f"fuzzed {fuzz.sent} requests in {seconds:.1f} s:", json.dumps(fuzz.statuses, indent=1),
          "no invalid request possible:", no_invalid)
    assert not fuzz.failures, "\n".join(fuzz.failures[:20])
    assert fuzz.sent >= 10 * FUZZ_EXAMPLES
    assert http.get("/health").status_code == 200  # and the server still answers
