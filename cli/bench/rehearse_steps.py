"""The steps of ``llamavid bench rehearse``, each run as its own process (``python -m
cli.bench.rehearse_steps STEP SETTINGS.json``) so that its peak memory is its own.

Every step writes ``<work>/steps/<size>-<frames>/STEP.json``: its figures, and per phase (a step
with two questions has two) the seconds, the peak anonymous and resident memory, and the bytes it
wrote. The chat steps load the converted folder exactly as the chat service does
(:func:`llamavid.runtime.load.load_model`, llama.cpp backend, features memory-mapped) and ask through
:class:`llamavid.runtime.chat.Chat`; "prepare" is :func:`llamavid.runtime.prepared.prepare` and the
states are :mod:`llamavid.runtime.state` files, as the indexer and the service keep them.
"""
from __future__ import annotations

import json
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cli.bench.procmem import Sampler, written_bytes

#: The timed questions are short on purpose: the rehearsal's stand-in tokenizer (320 pieces) spells
#: English about three times as long as LLaMA's 32,000, so "Who is she?" in the chat template is a
#: prefill of about as many tokens as LLaMA's tokenizer makes of a nine-word question (20 to 25).
QUESTIONS = {
    "exact": "What happens at the harbour at night?",
    "fast": "Who is she?",
    "follow-up": "Why?",
    "restart": "And then?",
}
ANSWER_TOKENS = 8  # the answer is not what is timed: the first word is
_said: dict[str, float] = {}


def _log_progress(p: Any, every: float = 30.0) -> None:
    """A line in the step's log now and then (a full-size step runs for many minutes)."""
    now = time.perf_counter()
    if now - _said.get(p.phase, 0.0) >= every or p.done == p.total:
        _said[p.phase] = now
        print(f"{time.strftime('%H:%M:%S')} {p.phase}: {p.done}/{p.total} {p.unit}", file=sys.stderr, flush=True)


class Phases:
    """Seconds, peak memory and bytes written of each phase of a step."""

    def __init__(self, sampler: Sampler):
        self.sampler, self.records = sampler, {}

    @contextmanager
    def phase(self, name: str):
        self.sampler.restart_peaks()
        wrote, start = written_bytes(), time.perf_counter()
        record: dict[str, Any] = {}
        yield record
        self.sampler.sample()
        after = written_bytes()
        self.records[name] = {"seconds": round(time.perf_counter() - start, 3), **record, **self.sampler.peaks(),
                              "written_bytes": None if wrote is None or after is None else after - wrote}


def _load(s: dict) -> Any:
    """The converted model as the chat service loads it for a film (EVA not loaded)."""
    from llamavid.runtime.load import load_model
    from llamavid.runtime.options import LoadOptions

    options = LoadOptions(backend="llama.cpp", gguf_type=s["gguf_type"], kv_type=s["kv_type"],
                          n_ctx=s["ctx"] or None, threads=s["threads"], load_vision=False,
                          vision_engine=s["vision_engine"])
    return load_model(s["gguf"], data_dir=s["data"], options=options)


def _visual(s: dict) -> Any:
    import numpy as np

    from llamavid.prompt.subtitles import Cue
    from llamavid.runtime.inputs import Visual

    features = np.load(s["film"], mmap_mode="r")
    frames = len(features)
    cues = [Cue(t, t + 3.0, f"Line {t // 10} of the dialogue, said at second {t}.")
            for t in range(0, frames, 10)] if s["subtitles"] else []
    return Visual("film", features, [float(t) for t in range(frames)], cues)


def _ask(chat: Any, question: str) -> dict:
    """Ask; seconds to the first answer piece and each phase (from the engine's progress events)."""
    from llamavid.runtime.control import Control
    from llamavid.runtime.generate import SamplingOptions

    seen: dict[str, float] = {}
    totals: dict[str, int] = {}

    def progress(p: Any) -> None:
        now = time.perf_counter()
        seen.setdefault(p.phase, now)
        totals[p.phase] = p.total
        if p.phase == "answer" and p.done >= 1:
            seen.setdefault("first token", now)
        _log_progress(p)

    start = time.perf_counter()
    pieces = chat.ask(question, SamplingOptions(temperature=0, max_new_tokens=ANSWER_TOKENS),
                      control=Control(on_progress=progress))
    next(iter(pieces), None)
    first = time.perf_counter() - start
    "".join(pieces)
    visual = seen.get("prefill", start) - seen["visual"] if "visual" in seen else 0.0
    prefill = seen.get("answer", start) - seen.get("prefill", start)
    tokens = totals.get("prefill", 0)
    # random weights mostly pick ids past the test tokenizer's 320 pieces, which print nothing: the first
    # token is the first word a real model would show, the first piece of text can come tokens later
    token = seen.get("first token", start + first) - start
    return {"first_token_s": round(token, 3), "first_word_s": round(first, 3), "qformer_s": round(visual, 3),
            "prefill_s": round(prefill, 3),
            "prefill_tokens": tokens, "prefill_tokens_per_s": round(tokens / prefill, 3) if prefill > 0 else None,
            "context_tokens": chat.state.length}


def _key(chat: Any, s: dict) -> dict:
    from llamavid.runtime.prepared import PREPARED_QUESTION
    from llamavid.runtime.state import state_key

    return state_key(chat, film=f"rehearsal-{s['size']}-{s['frames']}", start=PREPARED_QUESTION)


# -- the steps ---------------------------------------------------------------------------------------
def step_weights(s: dict, ph: Phases) -> dict:
    from cli.bench.random_weights import write_random_checkpoint

    with ph.phase("weights") as rec:
        write_random_checkpoint(s["checkpoint"], s["size"], int(s["shard_gb"] * 2**30),
                                say=lambda m: print(m, file=sys.stderr, flush=True))
        rec["checkpoint_bytes"] = sum(p.stat().st_size for p in Path(s["checkpoint"]).iterdir())
    return {}


def step_features(s: dict, ph: Phases) -> dict:
    from cli.bench.film import film_features

    folder = Path(s["film"]).parent
    folder.mkdir(parents=True, exist_ok=True)
    with ph.phase("features") as rec:
        film_features(folder, s["frames"])
        rec["features_bytes"] = Path(s["film"]).stat().st_size
    return {}


def step_calibrate(s: dict, ph: Phases) -> dict:
    """The Q-Former's engine chosen once for this machine (cached under <data>), as a first chat
    does, so that the timed questions run on it without the calibration's minutes."""
    import numpy as np

    with ph.phase("load") as rec:
        lv = _load(s)
    with ph.phase("calibrate") as rec:
        features = np.load(s["film"], mmap_mode="r")
        lv.visual_tokens(features[:32], [QUESTIONS["exact"]])
        rec["qformer_engine"] = lv.vision_engines.chosen.get("qformer", "fp32") if lv.vision_engines else "fp32"
    return {"qformer_engine": rec["qformer_engine"]}


def step_exact(s: dict, ph: Phases) -> dict:
    """A new question, the exact way: the Q-Former reads every frame for it, the LLM the whole film."""
    from llamavid.runtime.chat import Chat

    with ph.phase("load"):
        lv = _load(s)
    with ph.phase("question") as rec:
        chat = Chat(lv, _visual(s))
        rec.update(_ask(chat, QUESTIONS["exact"]))
    return {"n_ctx": lv.backend.context_length(), "stride": chat.stride,
            "qformer_engine": lv.vision_engines.chosen.get("qformer", "fp32") if lv.vision_engines else "fp32"}


def step_prepare(s: dict, ph: Phases) -> dict:
    """The film read once with the neutral first turn and saved: what ``index prepare`` does."""
    from llamavid.runtime.chat import Chat
    from llamavid.runtime.control import Control
    from llamavid.runtime.prepared import prepare
    from llamavid.runtime.state import save_chat

    with ph.phase("load"):
        lv = _load(s)
    with ph.phase("prepare") as rec:
        chat = Chat(lv, _visual(s))
        seen: dict[str, float] = {}
        finished: dict[str, float] = {}
        totals: dict[str, int] = {}

        def progress(p: Any) -> None:
            now = time.perf_counter()
            seen.setdefault(p.phase, now)
            totals[p.phase] = p.total
            if p.done >= p.total:
                finished.setdefault(p.phase, now)
            _log_progress(p)

        start = time.perf_counter()
        prepare(chat, Control(on_progress=progress))
        end = time.perf_counter()
        read = finished.get("prefill", end)  # the prompt read; then the neutral answer is fed token by token
        prefill = read - seen.get("prefill", end)
        tokens = totals.get("prefill", 0)
        rec.update(qformer_s=round(seen.get("prefill", end) - seen.get("visual", start), 3),
                   prefill_s=round(prefill, 3), prefill_tokens=tokens,
                   prefill_tokens_per_s=round(tokens / prefill, 3) if prefill > 0 else None,
                   answer_feed_s=round(end - read, 3), context_tokens=chat.state.length)
    with ph.phase("save") as rec:
        rec["state_bytes"] = save_chat(chat, s["prepared"], _key(chat, s))
    return {}


def step_session(s: dict, ph: Phases) -> dict:
    """A new conversation on the prepared film: its state read back, a new question, a follow-up,
    and the conversation kept (as the chat service keeps it after every answer)."""
    from llamavid.runtime.chat import Chat
    from llamavid.runtime.state import load_chat, save_chat

    with ph.phase("load"):
        lv = _load(s)
    visual = _visual(s)
    with ph.phase("fast question") as rec:
        start = time.perf_counter()
        chat = Chat(lv, visual)
        load_chat(chat, s["prepared"], _key(chat, s))
        rec["state_load_s"] = round(time.perf_counter() - start, 3)
        asked = _ask(chat, QUESTIONS["fast"])
        rec.update(asked, first_word_s=round(rec["state_load_s"] + asked["first_word_s"], 3),
                   first_token_s=round(rec["state_load_s"] + asked["first_token_s"], 3),
                   question_first_word_s=asked["first_word_s"])
    with ph.phase("follow-up") as rec:
        rec.update(_ask(chat, QUESTIONS["follow-up"]))
    with ph.phase("keep conversation") as rec:
        rec["state_bytes"] = save_chat(chat, s["conversation"], _key(chat, s))
    return {"stride": chat.stride}


def step_restart(s: dict, ph: Phases) -> dict:
    """A new process (the app restarted): the model loaded, the kept conversation read back, and
    the next question answered from where it stopped."""
    from llamavid.runtime.chat import Chat
    from llamavid.runtime.state import load_chat

    start = time.perf_counter()
    with ph.phase("load"):
        lv = _load(s)
    with ph.phase("resume and ask") as rec:
        t0 = time.perf_counter()
        chat = Chat(lv, _visual(s))
        load_chat(chat, s["conversation"], _key(chat, s))
        rec["state_load_s"] = round(time.perf_counter() - t0, 3)
        rec["turns_resumed"] = len(chat.turns)
        asked = _ask(chat, QUESTIONS["restart"])
        rec.update(asked, question_first_word_s=asked["first_word_s"],
                   first_word_s=round(rec["state_load_s"] + asked["first_word_s"], 3),
                   first_token_s=round(rec["state_load_s"] + asked["first_token_s"], 3))
    return {"first_word_since_start_s": round(time.perf_counter() - start, 3)}


def step_baseline(s: dict, ph: Phases) -> dict:
    """llama.cpp's own token prefill of as many tokens as the exact question's prompt, with the same
    GGUF file, KV type, context and threads: what the injected embeddings are compared with."""
    import random

    from llamavid.files import gguf_name
    from llamavid.runtime.llamacpp import LlamaCppBackend

    length = int(s["baseline_tokens"])
    with ph.phase("load"):
        backend = LlamaCppBackend(Path(s["gguf"]) / gguf_name(s["gguf_type"]), n_ctx=s["ctx"] or None,
                                  kv_type=s["kv_type"], threads=s["threads"])
    rng = random.Random(0)
    ids = [1] + [rng.randrange(3, 320) for _ in range(length - 1)]  # the tokenizer's real pieces
    with ph.phase("token prefill") as rec:
        start = time.perf_counter()
        backend.feed(backend.new_state(), ids)
        seconds = time.perf_counter() - start
        rec.update(prefill_tokens=length, prefill_s=round(seconds, 3),
                   prefill_tokens_per_s=round(length / seconds, 3))
    n_ctx = backend.context_length()
    backend.close()
    return {"n_ctx": n_ctx}


STEPS = {"weights": step_weights, "features": step_features, "calibrate": step_calibrate, "exact": step_exact,
         "prepare": step_prepare, "session": step_session, "restart": step_restart, "baseline": step_baseline}


def main(argv: list[str]) -> int:
    step, settings = argv
    s = json.loads(Path(settings).read_text())
    import torch

    torch.set_num_threads(s["threads"])
    sampler = Sampler("self").start()
    phases = Phases(sampler)
    start = time.perf_counter()
    extra = STEPS[step](s, phases)
    sampler.stop()
    result = {"step": step, "seconds": round(time.perf_counter() - start, 3), "phases": phases.records, **extra}
    out = Path(s["steps"]) / f"{step}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
