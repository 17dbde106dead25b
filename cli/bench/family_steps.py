"""The steps of ``llamavid bench family``, each run as its own process (``python -m cli.bench.family_steps
STEP SETTINGS.json``) so the parent measures its peak memory alone; each writes ``<steps>/STEP.json``.

* ``weights``: random Qwen3-VL weights in the released layout (:mod:`cli.bench.qwen_weights`);
* ``convert``: llama.cpp's own ``convert_hf_to_gguf.py`` from the installed llama-cpp-python's sdist
  (``tests/support/llamacpp_converter.py`` finds it): the text model in f16 and ``--mmproj`` in f16,
  then the text model quantized to ``q4_K_M`` with ``llama_model_quantize`` (the f16 file is deleted);
* ``film``: a synthetic film-like H.264 of ``--minutes`` (a keyframe every 10 s);
* ``ask``: the model loaded on llama.cpp; a new question about the film (its planned frames decoded by
  seeking, then the prompt read: the time to the first token), a follow-up (the same), and the
  cache's bytes per token from the saved state (a prepared film's size per token).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from cli.bench.procmem import Sampler

QUESTION = "What happens in the film, and who is in it?"
FOLLOW_UP = "What happens at the end?"
ANSWER_TOKENS = 8


def _phase(sampler: Sampler, start: float, **figures) -> dict:
    return {"seconds": round(time.perf_counter() - start, 3), **figures, **sampler.peaks()}


def step_weights(s: dict) -> dict:
    from cli.bench.qwen_weights import write_qwen_weights

    sampler, start = Sampler().start(), time.perf_counter()
    folder = write_qwen_weights(s["checkpoint"], s["size"])
    size = sum(p.stat().st_size for p in Path(folder).iterdir() if p.is_file())
    return {"phases": {"weights": _phase(sampler, start, checkpoint_bytes=size)}}


def step_convert(s: dict) -> dict:
    from llamavid.runtime.gguf_export import quantize_gguf

    try:
        from tests.support.llamacpp_converter import converter
    except ImportError:
        raise SystemExit("the converter helper (tests/support/llamacpp_converter.py) is not importable: run "
                         "`llamavid bench family` from the project's source folder") from None
    conv, why = converter()
    if conv is None:
        raise SystemExit(why)
    out = Path(s["gguf"])
    out.mkdir(parents=True, exist_ok=True)
    pre = "qwen2"  # the stand-in tokenizer's pre-tokenizer, which the converter cannot recognise by hash
    # The converter runs as a child of this step: the step's process figures (wait4's peak resident
    # set covers reaped children) hold its memory; the phases give times and sizes.
    phases = {}
    start = time.perf_counter()
    f16 = conv.convert(Path(s["checkpoint"]), out / "qwen3-vl-f16.gguf", outtype="f16", tokenizer_pre=pre,
                       timeout=3600)
    phases["text model (f16)"] = {"seconds": round(time.perf_counter() - start, 3), "bytes": f16.stat().st_size}
    start = time.perf_counter()
    proj = conv.convert(Path(s["checkpoint"]), out / "mmproj-qwen3-vl-f16.gguf", mmproj=True, outtype="f16",
                        timeout=3600)
    phases["mmproj (f16)"] = {"seconds": round(time.perf_counter() - start, 3), "bytes": proj.stat().st_size}
    sampler, start = Sampler().start(), time.perf_counter()
    q4 = quantize_gguf(f16, out / "qwen3-vl-q4_K_M.gguf", "q4_K_M", threads=s["threads"])
    phases["quantize (q4_K_M)"] = _phase(sampler, start, bytes=q4.stat().st_size)
    f16.unlink()
    return {"phases": phases, "files": {p.name: p.stat().st_size for p in out.iterdir() if p.is_file()}}


def step_film(s: dict) -> dict:
    from llamavid.media.synthetic import X264, film, write_video

    sampler, start = Sampler().start(), time.perf_counter()
    w, h, fps = s["film_size"][0], s["film_size"][1], s["film_fps"]
    x264 = X264(preset="veryfast", crf=23, keyint=10 * fps, fixed_keyint=True, bframes=2, maxrate_kbps=4000)
    path = write_video(Path(s["film"]), film(w, h, fps), fps=fps, seconds=s["seconds"], x264=x264)
    return {"phases": {"film": _phase(sampler, start, bytes=path.stat().st_size)}}


def step_ask(s: dict) -> dict:
    from llamavid.media.seek import frames_at
    from llamavid.prompt.qwen_vl import FilmBudget, film_prompt, follow_up, plan_film
    from llamavid.runtime.family import load_qwen

    phases, sampler = {}, Sampler().start()
    start = time.perf_counter()
    model = load_qwen(Path(s["gguf"]), backend="llama.cpp", device="cpu", n_ctx=s["ctx"], threads=s["threads"])
    phases["load"] = _phase(sampler, start)
    budget = FilmBudget(**s["budget"])
    plan = plan_film(s["seconds"], *s["film_size"], budget)
    sampler.restart_peaks()
    start = time.perf_counter()
    frames = [image for _t, image in frames_at(s["film"], plan.times, plan.size)]
    decoded = time.perf_counter() - start
    print(f"decoded {len(frames)} frames by seeking in {decoded:.1f} s; reading the prompt", flush=True)
    prompt = film_prompt(QUESTION, frames, plan.times)
    model.reset()
    logits = model.read(prompt)
    token = int(torch.argmax(logits))
    tokens = model.length
    phases["new question"] = _phase(sampler, start, frames=len(frames), frame_size=list(plan.size),
                                    decode_s=round(decoded, 3), prefill_s=round(time.perf_counter() - start - decoded,
                                                                                3),
                                    prompt_tokens=tokens, visual_tokens=plan.visual_tokens)
    print(f"first token after {phases['new question']['seconds']:.1f} s ({tokens} tokens)", flush=True)
    closed = False
    for _ in range(ANSWER_TOKENS):
        logits = model.step(token)
        closed = token in model.stops
        if closed:
            break
        token = int(torch.argmax(logits))
    sampler.restart_peaks()
    start = time.perf_counter()
    before = model.length
    logits = model.read(follow_up(FOLLOW_UP, closed))
    int(torch.argmax(logits))
    phases["follow-up"] = _phase(sampler, start, prompt_tokens=model.length - before)
    sampler.restart_peaks()
    start = time.perf_counter()
    state = model.state_bytes()
    phases["state"] = _phase(sampler, start, state_bytes=len(state), cached_tokens=model.length,
                             bytes_per_token=round(len(state) / model.length, 1))
    model.close()
    return {"phases": phases}


STEPS = {"weights": step_weights, "convert": step_convert, "film": step_film, "ask": step_ask}


def main(argv: list[str]) -> int:
    step, settings_file = argv
    s = json.loads(Path(settings_file).read_text())
    result = {"step": step, **STEPS[step](s)}
    out = Path(s["steps"]) / f"{step}.json"
    out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
