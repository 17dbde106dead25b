"""Issue 24, hostile and careless use: a soak of the real ``llamavid serve`` process.

One server, started as a person starts it (``python -m cli --data-dir D serve --port 0``, a process of
its own, so that its memory can be read from ``/proc/<pid>/status``), serves the tiny model and the
indexed 130 s film of the session's served library (:func:`app.server.sample.make_library`). Eight
client threads, each with its own real ``openai.OpenAI`` client (and an ``httpx`` client for what the
SDK has no method for), send the same mix of ten requests, in an order shifted per client so that
every kind meets every other:

* a plain text chat completion, and a streamed one (a system message, ``include_usage``);
* a new question about the library's film (a ``movie`` content part): a new kept conversation, with
  its moments; a streamed follow-up in it (``conversation_id``); the next question with the whole
  history resent (as Open WebUI does), which must continue this client's conversation, not another's;
* a question about a small PNG sent as a data URL;
* ``GET /v1/models`` (the SDK's ``models.list``), ``GET /v1/movies`` and ``GET /v1/movies/{id}``;
* two careless clients: a streamed answer of up to 256 tokens closed after its first chunk, and a plain
  one sent with httpx and a 50 ms read timeout, then abandoned (or, if it is answered that fast, a
  normal answer).

A warm-up round of the mix (8 x 10 requests) comes first, then the soak (8 x 3 x 10 = 240 requests),
each phase ended by one film question asked alone (see :func:`settled_rss`). What must hold:

* no request gets a 5xx, an error event in its stream or any other unexpected error, and every request
  that is not abandoned gets a normal answer. The queue allows 32 waiting questions (``serve``'s
  default) and 8 clients never fill it, so a 429 ``queue_full`` is an error here too: it would mean
  abandoned questions pile up in the queue instead of being cancelled;
* the queue drains: once the clients are done, ``/health`` says nothing runs and nothing waits (polled,
  bounded, no timing asserted); the service counted every chat question once, answered or cancelled,
  at most one cancel per abandoned request, none failed; the server logged no traceback;
* the server's resident memory (VmRSS) after the soak is less than 5 % above what it was after the
  warm-up. Controls that the bound is not vacuous: the pid read owns the socket listening on the served
  port (``/proc/<pid>/fd`` against ``/proc/net/tcp``), and the same reading saw the server's memory rise
  past the bound while it worked (VmHWM, the peak) and come back down once it was done.

Observed while writing it (2 cores shared with other work, load average 5-10; the figures are printed
with ``-s``), with the settings of the ``server`` fixture: VmRSS 500 MiB with the model loaded, 539 MiB
after the warm-up, 541 MiB after the soak (+0.27 % to +0.41 % in 6 runs), a peak of 578-581 MiB (+7 %
over the warm-up's reading). Without the fixed mmap threshold the soak's figure ranged from -3.9 % to
+3.8 % over 10 runs, with the warm-up's reading anywhere from 560 to 601 MiB. Thirty rounds of the mix
in a row (2,400 requests) added 8 MiB of the server's own memory (RssAnon 346 -> 354 MiB, more slowly
towards the end), 3 KiB a request. A leak of 256 KiB per chat request, put into the server by hand (a
sitecustomize wrapping ``app.server.completions._parse``), fails the bound: +9.2 %. The service counted
204 answered, 64 cancelled and 0 failed questions (322 requests in all). The test's call took 27-33 s
(the server used 18-23 s of CPU, its start included; the clients 10-12 s), its setup 25-38 s (the served
library when no other module has made it, and the server's start). With torch's default two threads
instead of ``OMP_NUM_THREADS=1`` the same soak used 94 s of the server's CPU and took 380 s.
"""
from __future__ import annotations

import base64
import io
import os
import resource
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
from PIL import Image

from app.server.sample import MODEL
from tests.support.served import ServerProcess, serve_process
from tests.support.wait import wait_for

pytestmark = pytest.mark.slow

CLIENTS = 8
WARMUP_ROUNDS = 1  # rounds of the whole mix per client before the first memory reading
SOAK_ROUNDS = 3  # rounds of the mix per client in the soak
MAX_GROWTH = 0.05  # VmRSS after the soak over VmRSS after the warm-up
SHORT = {"temperature": 0, "max_tokens": 4}  # quick answers: the soak is about the server, not the model
LONG = {"temperature": 0, "max_tokens": 256}  # what the careless clients ask for (and leave)
ABANDON_READ_S = 0.05  # the raw client's read timeout: it leaves long before its answer
REQUEST_TIMEOUT_S = 60.0  # any one request (a few seconds at most on a loaded 2-core machine)
PHASE_S = 300.0  # a phase's clients start no request after this long (bounded in count and in time)


# ---------------------------------------------------------------- the server process
def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _listening_inodes(port: int) -> set[str]:
    """Inodes of the sockets listening on 127.0.0.1:``port`` (state 0A in /proc/net/tcp)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state, inode = fields[1], fields[3], fields[9]
        if state == "0A" and int(local.split(":")[1], 16) == port:
            inodes.add(inode)
    return inodes


def _socket_inodes(pid: int) -> set[str]:
    out = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(target[len("socket:["):-1])
    return out


@pytest.fixture
def server(served_library: tuple[Path, Path], tmp_path: Path) -> Iterator[ServerProcess]:
    """``llamavid serve`` on the served library, a process of its own, ready (its model loaded)."""
    data, _ = served_library
    env = {  # One torch thread: the server shares 2 cores with the 8 clients (and, under xdist, another test);
        # with two intra-op threads a preempted one leaves the other spinning: each answer takes ~10x as long.
        "OMP_NUM_THREADS": "1",
        # glibc's mmap threshold fixed (at its default, 128 KiB): a large buffer freed goes back to the
        # system at once. With the dynamic threshold, whether freed buffers of some MiB stay in the heap
        # is up to chance: the soak's figure moved from -3.9 % to +3.8 % from run to run, as much as the
        # bound (+0.3 % to +0.4 % with it fixed). Memory the server keeps still counts.
        "MALLOC_MMAP_THRESHOLD_": "131072"}
    with serve_process(data, tmp_path / "serve.log", env=env) as running:
        yield running


# ---------------------------------------------------------------- the clients
def png_url(seed: int, size: int = 32) -> str:
    pixels = (np.random.default_rng(seed).random((size, size, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def extra(obj, name: str):
    """An extension field of an openai response object (kept by the client, not typed)."""
    return (obj.model_extra or {}).get(name)


def _normal_completion(answer) -> None:
    assert answer.object == "chat.completion" and answer.model == MODEL, answer
    choice = answer.choices[0]
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str), answer
    assert choice.finish_reason in ("stop", "length"), answer
    assert answer.usage.prompt_tokens > 0 and 0 <= answer.usage.completion_tokens <= SHORT["max_tokens"], answer


def _normal_stream(chunks: list) -> str:
    """The text of a streamed answer that ended normally (an error event raises in the SDK)."""
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish in (["stop"], ["length"]), chunks
    assert chunks[0].choices[0].delta.role == "assistant", chunks[0]
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


@dataclass
class Tally:
    """What the clients did and saw, shared by the threads (under ``lock``)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    done: Counter = field(default_factory=Counter)  # kind -> requests that ended as expected
    abandoned: Counter = field(default_factory=Counter)  # kind -> requests left before their answer
    errors: list[str] = field(default_factory=list)
    questions: int = 0  # chat completions sent (a follow-up with no film conversation yet sends two)

    def asked(self) -> None:
        with self.lock:
            self.questions += 1

    def count(self, kind: str, abandoned: bool = False) -> None:
        with self.lock:
            (self.abandoned if abandoned else self.done)[kind] += 1

    def fail(self, what: str) -> None:
        with self.lock:
            self.errors.append(what)

    @property
    def requests(self) -> int:
        return sum(self.done.values()) + sum(self.abandoned.values())


MIX = ("text", "stream", "film", "image", "models", "leave_stream", "follow_up", "movies", "leave_plain", "resend")


class Client:
    """One careless user: its own openai and httpx clients, its own film conversation."""

    def __init__(self, index: int, server: ServerProcess, movie_id: int, tally: Tally):
        self.index, self.movie_id, self.tally = index, movie_id, tally
        self.ai = openai.OpenAI(base_url=server.url + "v1", api_key="unused", max_retries=0,
                                timeout=REQUEST_TIMEOUT_S)
        self.http = httpx.Client(base_url=server.url, timeout=REQUEST_TIMEOUT_S)
        self.conversation: int | None = None  # this client's newest film conversation
        self.turns: list[tuple[str, str]] = []  # its (question, answer) turns, as the client saw them
        self.n = 0

    def close(self) -> None:
        self.ai.close()
        self.http.close()

    def run(self, rounds: int, deadline: float) -> None:
        order = MIX[self.index % len(MIX):] + MIX[:self.index % len(MIX)]
        for _ in range(rounds):
            for kind in order:
                if time.monotonic() > deadline:
                    self.tally.fail(f"client {self.index}: out of time after {self.n} requests")
                    return
                self.n += 1
                try:
                    abandoned = getattr(self, kind)()
                except Exception as exc:  # noqa: BLE001 - every failure is reported with its request
                    status = getattr(exc, "status_code", None) or getattr(getattr(exc, "response", None),
                                                                           "status_code", None)
                    body = getattr(exc, "body", None) or getattr(getattr(exc, "response", None), "text", None)
                    self.tally.fail(f"client {self.index} request {self.n} ({kind}): {type(exc).__name__} "
                                    f"status={status} body={body!r}\n{traceback.format_exc()}")
                else:
                    self.tally.count(kind, abandoned=bool(abandoned))

    def _question(self, what: str) -> str:
        return f"{what} (client {self.index}, request {self.n})"

    def _film_part(self) -> dict:
        return {"type": "movie", "movie_id": self.movie_id}

    # -- the kinds of request; each returns True when it left before its answer --------------------
    def text(self) -> None:
        self.tally.asked()
        _normal_completion(self.ai.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": self._question("What is a harbour?")}], **SHORT))

    def stream(self) -> None:
        self.tally.asked()
        chunks = list(self.ai.chat.completions.create(
            model=MODEL, stream=True, stream_options={"include_usage": True},
            messages=[{"role": "system", "content": "Be brief."},
                      {"role": "user", "content": self._question("Name a ship.")}], **SHORT))
        _normal_stream([c for c in chunks if c.choices])
        assert chunks[-1].usage is not None and not chunks[-1].choices, chunks[-1]

    def film(self) -> None:
        """A new question about the film: a new kept conversation (the film is read)."""
        self.tally.asked()
        question = self._question("Where is the treasure buried?")
        answer = self.ai.chat.completions.create(model=MODEL, **SHORT, messages=[{"role": "user", "content": [
            {"type": "text", "text": question}, self._film_part()]}])
        _normal_completion(answer)
        assert isinstance(extra(answer, "moments"), list) and extra(answer, "turn_id"), answer
        assert isinstance(extra(answer, "conversation_id"), int), answer
        assert extra(answer, "conversation_id") != self.conversation, answer
        self.conversation = extra(answer, "conversation_id")
        self.turns = [(question, answer.choices[0].message.content)]

    def follow_up(self) -> None:
        """The next question of this client's film conversation, streamed, by ``conversation_id``."""
        if self.conversation is None:  # this client has not asked about the film yet
            self.film()
        self.tally.asked()
        question = self._question("And then?")
        chunks = list(self.ai.chat.completions.create(
            model=MODEL, stream=True, messages=[{"role": "user", "content": question}],
            extra_body={"conversation_id": self.conversation}, **SHORT))
        text = _normal_stream(chunks)
        last = next(c for c in chunks if c.choices and c.choices[0].finish_reason)
        assert extra(last, "conversation_id") == self.conversation and extra(last, "turn_id"), last
        assert isinstance(extra(last, "moments"), list), last
        self.turns.append((question, text))

    def resend(self) -> None:
        """The next question with the whole history resent (as Open WebUI does): the server must find
        this client's conversation among the others' and continue it."""
        if self.conversation is None:
            self.film()
        self.tally.asked()
        (first, first_answer), *later = self.turns
        messages = [{"role": "user", "content": [{"type": "text", "text": first}, self._film_part()]},
                    {"role": "assistant", "content": first_answer}]
        for question, answer in later:
            messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        question = self._question("Who is speaking?")
        answer = self.ai.chat.completions.create(
            model=MODEL, messages=[*messages, {"role": "user", "content": question}], **SHORT)
        _normal_completion(answer)
        assert extra(answer, "conversation_id") == self.conversation, (answer, self.conversation, self.turns)
        self.turns.append((question, answer.choices[0].message.content))

    def image(self) -> None:
        self.tally.asked()
        _normal_completion(self.ai.chat.completions.create(model=MODEL, **SHORT, messages=[{"role": "user", "content": [
            {"type": "text", "text": self._question("Describe the picture.")},
            {"type": "image_url", "image_url": {"url": png_url(seed=self.index * 1000 + self.n)}}]}]))

    def models(self) -> None:
        assert [m.id for m in self.ai.models.list()] == [MODEL]

    def movies(self) -> None:
        listed = self.http.get("/v1/movies")
        assert listed.status_code == 200, listed.text
        assert self.movie_id in [m["id"] for m in listed.json()["data"]], listed.text
        one = self.http.get(f"/v1/movies/{self.movie_id}")
        assert one.status_code == 200 and one.json()["indexed"], one.text

    def leave_stream(self) -> bool:
        """A streamed answer closed after its first chunk (the role, or the place in the queue)."""
        self.tally.asked()
        stream = self.ai.chat.completions.create(
            model=MODEL, stream=True, messages=[{"role": "user", "content": self._question("Tell a long story.")}],
            **LONG)
        try:
            first = next(iter(stream))
            assert first.choices[0].delta.role == "assistant", first
        finally:
            stream.close()
        return True

    def leave_plain(self) -> bool:
        """A plain request whose client gives up after 50 ms and closes the connection."""
        self.tally.asked()
        body = {"model": MODEL, **LONG, "messages": [{"role": "user", "content": self._question("Tell a long story.")}]}
        try:
            response = self.http.post("/v1/chat/completions", json=body,
                                      timeout=httpx.Timeout(30.0, read=ABANDON_READ_S))
        except httpx.ReadTimeout:
            return True
        # answered before the client gave up: then it must be a normal answer
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["finish_reason"] in ("stop", "length"), response.text
        return False


def run_clients(server: ServerProcess, movie_id: int, rounds: int) -> Tally:
    tally = Tally()
    clients = [Client(i, server, movie_id, tally) for i in range(CLIENTS)]
    deadline = time.monotonic() + PHASE_S
    threads = [threading.Thread(target=c.run, args=(rounds, deadline), name=f"soak-client-{c.index}", daemon=True)
               for c in clients]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=max(0.0, deadline + 2 * REQUEST_TIMEOUT_S - time.monotonic()))
        assert not any(t.is_alive() for t in threads), "a client is still waiting for an answer"
    finally:
        for c in clients:
            c.close()
    return tally


def drained(http: httpx.Client) -> Callable[[], dict | None]:
    """A predicate for wait_for: /health once nothing runs and nothing waits."""
    def check() -> dict | None:
        health = http.get("/health")
        assert health.status_code == 200, health.text
        state = health.json()
        return state if not state["busy"] and state["waiting"] == 0 else None
    return check


def settled_rss(server: ServerProcess, movie_id: int, tally: Tally) -> int:
    """VmRSS right after one film question asked alone. Which request ran last moves the reading by
    11 MiB (RssFile: the film's features, 130 x 257 x 176 halves mapped from their cache file, are
    resident after a film question): ending both phases with the same request compares the same
    state, not the luck of the last client."""
    client = Client(CLIENTS, server, movie_id, tally)
    try:
        client.film()
    finally:
        client.close()
    return server.status("VmRSS") // 1024


# ---------------------------------------------------------------- the test
def test_eight_careless_clients_leave_no_error_a_drained_queue_and_flat_memory(server: ServerProcess) -> None:
    started = time.monotonic()
    # a control: the pid whose memory is read is the process that listens on the served port
    assert _listening_inodes(server.port) & _socket_inodes(server.pid), \
        f"pid {server.pid} does not own the socket listening on port {server.port}"
    memory = {"ready": server.memory()}
    with httpx.Client(base_url=server.url, timeout=30) as http:
        movie_id = next(m["id"] for m in http.get("/v1/movies").json()["data"] if m["title"] == "Harbor")
        before = http.get("/health").json()

        warm = run_clients(server, movie_id, WARMUP_ROUNDS)
        assert warm.errors == [], f"{len(warm.errors)} warm-up requests failed:\n" + "\n".join(warm.errors)
        wait_for(drained(http), timeout=120, interval=0.1)
        rss_warm = settled_rss(server, movie_id, warm)
        memory["warm-up"] = server.memory()

        soak = run_clients(server, movie_id, SOAK_ROUNDS)
        assert soak.errors == [], f"{len(soak.errors)} soak requests failed:\n" + "\n".join(soak.errors)
        wait_for(drained(http), timeout=120, interval=0.1)
        memory["soak, before its film question"] = server.memory()
        rss_soak = settled_rss(server, movie_id, soak)
        memory["soak"] = server.memory()
        after = wait_for(drained(http), timeout=120, interval=0.1)
    peak = server.status("VmHWM") // 1024
    elapsed = time.monotonic() - started
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    figures = (f"VmRSS {(rss_soak - rss_warm) / rss_warm:+.2%} from warm-up to soak; {memory}; requests: warm-up "
               f"{warm.requests}, soak {soak.requests} ({dict(soak.done)}, abandoned {dict(soak.abandoned)}); "
               f"{after}; {elapsed:.1f} s, CPU server {_cpu_seconds(server.pid):.1f} s, "
               f"clients {cpu.ru_utime + cpu.ru_stime:.1f} s")
    print(figures)

    # every request was made: none skipped by a client that stopped early
    assert warm.requests == CLIENTS * WARMUP_ROUNDS * len(MIX), figures
    assert soak.requests == CLIENTS * SOAK_ROUNDS * len(MIX), figures
    # every chat request was counted once by the service, answered or cancelled; none failed
    counted = {k: after[k] - before[k] for k in ("answered", "cancelled", "failed")}
    assert counted["failed"] == 0, figures
    assert counted["answered"] + counted["cancelled"] == warm.questions + soak.questions, figures
    assert counted["cancelled"] <= sum(warm.abandoned.values()) + sum(soak.abandoned.values()), figures
    assert "Traceback" not in server.output(), server.output()

    # the memory bound, and its control: the same reading saw the server's memory rise past the bound
    # while it worked (its peak) and come back down once the work was done
    assert peak > rss_warm * (1 + MAX_GROWTH), figures
    assert rss_soak < rss_warm * (1 + MAX_GROWTH), figures
