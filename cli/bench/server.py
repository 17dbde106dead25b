"""``llamavid bench server``: how much the server costs, measured on this machine (figures, not tests):

* the decode rate a streaming client sees against the engine's own rate on the very same answers
  (the queue, the thread hand-off, server-sent events and the client's parsing should cost next to
  nothing): the server stamps each piece of text as the worker produces it, the client as it
  arrives;
* the latency of ``GET /v1/models`` while an answer is being generated (the event loop must not
  wait on the model).

    llamavid bench server                                   # a tiny model and film made in a temp folder
    llamavid --data-dir D bench server --model M --device cuda   # an installed model of the data folder

The server runs in this process, the clients in a child process (their JSON parsing does not share
the server's interpreter). Prints one JSON object per figure.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import httpx
import openai

from app.questions import AskStream
from app.server.app import start
from app.server.sample import MODEL, make_library
from app.server.settings import ServerSettings
from llamavid.runtime.options import LoadOptions

QUESTION = "Tell me a long story about a ship."


def streamed(client: openai.OpenAI, model: str, tokens: int) -> dict:
    """One streamed answer: its tokens and the seconds from its first piece of text to its last."""
    times, usage = [], None
    for chunk in client.chat.completions.create(model=model, stream=True, temperature=0, max_tokens=tokens,
                                                stream_options={"include_usage": True},
                                                messages=[{"role": "user", "content": QUESTION}]):
        if chunk.choices and chunk.choices[0].delta.content:
            times.append(time.perf_counter())
        if chunk.usage:
            usage = chunk.usage
    return {"tokens": usage.completion_tokens, "seconds": times[-1] - times[0], "chunks": len(times)}


def models_latency(url: str, client: openai.OpenAI, model: str, requests: int) -> dict:
    """``GET /v1/models`` one after another while a long answer streams to another client."""
    running, done = threading.Event(), threading.Event()

    def generate() -> None:
        for chunk in client.chat.completions.create(model=model, stream=True, temperature=0, max_tokens=4000,
                                                    messages=[{"role": "user", "content": QUESTION}]):
            if chunk.choices and chunk.choices[0].delta.content:
                running.set()
            if done.is_set():
                break
        running.set()

    worker = threading.Thread(target=generate)
    worker.start()
    running.wait()
    latencies = []
    with httpx.Client(base_url=url) as http:
        for _ in range(requests):
            if not http.get("/health").json()["busy"]:
                break  # the answer ended: the rest would not be measured under load
            start_at = time.perf_counter()
            http.get("/v1/models").raise_for_status()
            latencies.append(1000 * (time.perf_counter() - start_at))
    done.set()
    worker.join()
    latencies.sort()
    return {"figure": "GET /v1/models during a generation", "requests": len(latencies),
            "median_ms": round(statistics.median(latencies), 2),
            "p90_ms": round(latencies[int(0.9 * (len(latencies) - 1))], 2), "max_ms": round(latencies[-1], 2)}


def clients(url: str, model: str, tokens: int, repeat: int, requests: int) -> None:
    """The child process: a warm-up answer, ``repeat`` timed ones, then the latency figure (JSON lines)."""
    client = openai.OpenAI(base_url=url + "v1", api_key="unused", max_retries=0, timeout=3600)
    streamed(client, model, 20)
    print(json.dumps([streamed(client, model, tokens) for _ in range(repeat)]), flush=True)
    print(json.dumps(models_latency(url, client, model, requests)), flush=True)


def stamp_text_events() -> dict[int, list[float]]:
    """When the worker produced each piece of text, per request (the engine's own pace)."""
    stamps: dict[int, list[float]] = defaultdict(list)
    put = AskStream.put

    def stamped(self: AskStream, event) -> None:
        if event.type == "text":
            stamps[self.id].append(time.perf_counter())
        put(self, event)

    AskStream.put = stamped  # a measurement hook, in this process only
    return stamps


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="serve this installed model of the data folder (--data-dir) "
                                        "(default: a tiny model and film made in a temp folder)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32")
    parser.add_argument("--tokens", type=int, default=300, help="answer length for the decode-rate figures")
    parser.add_argument("--repeat", type=int, default=5, help="answers timed for the decode-rate figure")
    parser.add_argument("--requests", type=int, default=200, help="GET /v1/models requests during a generation")
    parser.add_argument("--client", metavar="URL", help=argparse.SUPPRESS)  # the child process's mode


def run(args: argparse.Namespace) -> int:
    if args.client:
        clients(args.client, args.model, args.tokens, args.repeat, args.requests)
        return 0
    data, model = args.data_dir, args.model
    if model is None:
        data, _ = make_library(Path(tempfile.mkdtemp(prefix="llamavid-measure-")), seconds=10)
        model = MODEL
    stamps = stamp_text_events()
    running = start(ServerSettings(data_dir=data, model=model, port=0, ui=True,
                                   load_options=LoadOptions(device=args.device, dtype=args.dtype)))
    try:
        served = running.app.state.service.resolve_model(model)
        child = subprocess.run([sys.executable, "-m", "cli", "bench", "server", "--client", running.url,
                                "--model", served, "--tokens", str(args.tokens), "--repeat", str(args.repeat),
                                "--requests", str(args.requests)], capture_output=True, text=True, check=True)
        runs, latency = (json.loads(line) for line in child.stdout.strip().splitlines()[-2:])
        answers = [stamps[i] for i in sorted(stamps)][1:1 + args.repeat]  # after the warm-up, in order
        ratios, engine_rates, client_rates = [], [], []
        for timed, made in zip(runs, answers, strict=True):
            engine_rates.append((timed["tokens"] - 1) / (made[-1] - made[0]))
            client_rates.append((timed["tokens"] - 1) / timed["seconds"])
            ratios.append(client_rates[-1] / engine_rates[-1])
        print(json.dumps({"figure": "decode rate, streamed vs engine (same answers)", "tokens": args.tokens,
                          "engine_tokens_per_s": [round(x, 1) for x in engine_rates],
                          "client_tokens_per_s": [round(x, 1) for x in client_rates],
                          "client_vs_engine": [round(x, 4) for x in ratios],
                          "median_client_vs_engine": round(statistics.median(ratios), 4),
                          "chunks_per_answer": [r["chunks"] for r in runs]}))
        print(json.dumps(latency))
    finally:
        running.stop()
    return 0
