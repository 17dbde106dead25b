"""The second family at full size with random weights: Qwen3-VL-2B-Instruct on llama.cpp (q4_K_M) about a
film, beside LLaMA-VID 7B's figures from its rehearsal.

    llamavid bench family                  # 2B, a one-hour film at the family's budget, 2 threads
    llamavid bench family --minutes 10     # a shorter film (the budget caps an hour at 546 frames anyway)
    llamavid bench family --size tiny      # the same pipeline on the tests' tiny model, in seconds

Steps (each in its own process, :mod:`cli.bench.family_steps`; files already made are reused):
``weights`` (random weights in the released layout, about 4.3 GB), ``convert`` (llama.cpp's own
converter from the installed llama-cpp-python's sdist, f16, then ``q4_K_M``; the mmproj in f16),
``film`` (a synthetic 1280x720 H.264 film, a keyframe every 10 s), ``ask``: a new question (the
planned frames decoded by seeking, then the prefill: the time to the first token), a follow-up, and
the cache's bytes per token. The parent samples each step's peak anonymous and resident memory
(:mod:`cli.bench.procmem`). Disk per prepared film hour is the cache's bytes per token times the
tokens of an hour's first turn (a prepared Qwen film would be that state). LLaMA-VID's figures come
from the newest ``report-7b-*.json`` of ``llamavid bench rehearse`` that has them, where present.
The report goes to ``<work>/report-family-SIZE-MINUTES.json`` after every step.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from cli.bench.rehearse import default_work as rehearsal_work
from cli.bench.rehearse import run_child
from llamavid.errors import UserError

STEPS = ("weights", "convert", "film", "ask")
KEPT = ("weights", "convert", "film")
HOUR = 3600.0


def default_work() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "llamavid" / "family"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", default="2b", choices=("2b", "tiny"),
                        help="2b: Qwen3-VL-2B-Instruct's published shapes (4.3 GB of weights); tiny: seconds")
    parser.add_argument("--minutes", type=float, default=None, help="film length (default 60; tiny 1)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads of every step (default 2)")
    parser.add_argument("--work", type=Path, default=None, help=f"folder for its files (default {default_work()})")
    parser.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated, of {', '.join(STEPS)}")
    parser.add_argument("--redo", default="", help=f"steps to do again although their files exist ({', '.join(KEPT)})")
    parser.add_argument("--rehearsal", type=Path, default=None,
                        help=f"where LLaMA-VID's rehearsal reports are (default {rehearsal_work()})")


def settings_from(args: argparse.Namespace) -> dict:
    from llamavid.prompt.qwen_vl import FilmBudget

    tiny = args.size == "tiny"
    minutes = args.minutes if args.minutes is not None else (1.0 if tiny else 60.0)
    if minutes <= 0 or args.threads < 1:
        raise UserError("--minutes must be more than 0 and --threads at least 1")
    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    redo = [s.strip() for s in args.redo.split(",") if s.strip()]
    unknown = [s for s in steps + redo if s not in STEPS]
    if unknown:
        raise UserError(f"unknown step(s) {', '.join(unknown)}; choose from {', '.join(STEPS)}")
    work = (args.work or default_work()).expanduser().absolute()
    budget = FilmBudget(visual_tokens=64, tokens_per_pair=8) if tiny else FilmBudget()
    tag = f"{args.size}-{minutes:g}min"
    return {
        "size": args.size, "minutes": minutes, "seconds": minutes * 60, "threads": args.threads,
        "budget": {"visual_tokens": budget.visual_tokens, "tokens_per_pair": budget.tokens_per_pair,
                   "max_frames": budget.max_frames, "max_fps": budget.max_fps},
        "film_size": [192, 108] if tiny else [1280, 720], "film_fps": 6 if tiny else 12,
        "ctx": 4096 if tiny else 32768, "steps_to_run": [s for s in STEPS if s in steps], "redo": redo,
        "work": str(work), "checkpoint": str(work / f"checkpoint-{args.size}"), "gguf": str(work / f"gguf-{args.size}"),
        "film": str(work / f"film-{args.size}-{minutes:g}min.mp4"), "steps": str(work / "steps" / tag),
        "report": str(work / f"report-family-{tag}.json"),
        "rehearsal": str((args.rehearsal or rehearsal_work()).expanduser()),
    }


def say(message: str) -> None:
    print(f"family: {message}", file=sys.stderr, flush=True)


def _done(step: str, s: dict) -> bool:
    """Whether a kept step's files (and its record, with the figures of when it ran) are there."""
    if step not in KEPT or step in s["redo"] or not _record(step, s).is_file():
        return False
    if step == "weights":
        from cli.bench.qwen_weights import is_written

        return is_written(Path(s["checkpoint"]), s["size"])
    if step == "convert":
        from llamavid.runtime.family import qwen_gguf_pair

        return qwen_gguf_pair(Path(s["gguf"])) is not None
    return Path(s["film"]).is_file()


def _record(step: str, s: dict) -> Path:
    """Where a step's record is kept: beside the model's files for weights and convert, else the film's."""
    return (Path(s["steps"]).parent / f"{step}-{s['size']}.json") if step in ("weights", "convert") \
        else Path(s["steps"]) / f"{step}.json"


def run_step(step: str, s: dict, settings_file: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(s["threads"]), "MKL_NUM_THREADS": str(s["threads"]),
           "PYTHONUNBUFFERED": "1"}
    log = Path(s["steps"]) / f"{step}.log"
    process = run_child([sys.executable, "-m", "cli.bench.family_steps", step, str(settings_file)], log, env)
    if process["rc"] != 0:
        tail = log.read_text(errors="replace")[-2000:] if log.is_file() else ""
        raise UserError(f"step {step} failed (exit {process['rc']}); its log {log} ends:\n{tail}")
    result = json.loads((Path(s["steps"]) / f"{step}.json").read_text())
    result["process"] = process
    _record(step, s).write_text(json.dumps(result, indent=2))
    return result


def llama_vid_figures(folder: Path) -> dict | None:
    """LLaMA-VID 7B's figures from the newest rehearsal report that has a first-token figure, with the
    prepared state per film hour; None where there is none."""
    best = None
    for path in sorted(folder.glob("report-7b-*.json"), key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            report = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        f = report.get("figures", {})
        if any(f.get(k) is not None for k in ("exact_first_token_s", "fast_first_token_s", "follow_up_first_token_s")):
            best = (path, report)
            break
    if best is None:
        return None
    path, report = best
    f, frames = report["figures"], report["figures"].get("frames") or report["settings"]["frames"]
    state = f.get("prepared_state_bytes")
    return {"report": str(path), "frames": frames, "new_question_first_token_s": f.get("exact_first_token_s"),
            "prepared_question_first_token_s": f.get("fast_first_token_s"),
            "follow_up_first_token_s": f.get("follow_up_first_token_s"),
            "chat_peak_anon_bytes": f.get("chat_peak_anon_bytes"),
            "disk_per_prepared_hour_bytes": round(state * HOUR / frames) if state else None,
            "settings": report.get("settings", {})}


def figures(results: dict, s: dict) -> dict:
    """The issue's figures for Qwen3-VL from the steps' records (None where a step did not run)."""
    from llamavid.prompt.qwen_vl import FilmBudget, plan_film

    ask = results.get("ask", {}).get("phases", {})
    new, follow, state = ask.get("new question", {}), ask.get("follow-up", {}), ask.get("state", {})
    per_token = state.get("bytes_per_token")
    hour_tokens = None
    if new.get("prompt_tokens"):
        budget = FilmBudget(**s["budget"])
        hour = plan_film(HOUR, *s["film_size"], budget)
        here = plan_film(s["seconds"], *s["film_size"], budget)
        text = new["prompt_tokens"] - here.visual_tokens  # markers, intro and question
        hour_tokens = hour.visual_tokens + round(text * hour.pairs / here.pairs)
    return {
        "new_question_first_token_s": new.get("seconds"), "decode_s": new.get("decode_s"),
        "prefill_s": new.get("prefill_s"), "frames": new.get("frames"), "prompt_tokens": new.get("prompt_tokens"),
        "follow_up_first_token_s": follow.get("seconds"),
        "chat_peak_anon_bytes": results.get("ask", {}).get("process", {}).get("peak_anon_bytes"),
        "chat_peak_rss_bytes": results.get("ask", {}).get("process", {}).get("peak_rss_bytes"),
        "cache_bytes_per_token": per_token, "hour_first_turn_tokens": hour_tokens,
        "disk_per_prepared_hour_bytes": round(per_token * hour_tokens) if per_token and hour_tokens else None,
    }


def write_report(results: dict, s: dict, started: float) -> dict:
    keys = ("size", "minutes", "threads", "budget", "film_size", "film_fps", "ctx")
    report = {"command": f"llamavid bench family --size {s['size']} --minutes {s['minutes']:g}",
              "settings": {k: s[k] for k in keys}, "load_avg": os.getloadavg()[0],
              "elapsed_s": round(time.perf_counter() - started, 1), "steps": results,
              "qwen3_vl": figures(results, s), "llama_vid_7b": llama_vid_figures(Path(s["rehearsal"]))}
    Path(s["report"]).write_text(json.dumps(report, indent=2))
    return report


def run(args: argparse.Namespace) -> int:
    s = settings_from(args)
    Path(s["steps"]).mkdir(parents=True, exist_ok=True)
    settings_file = Path(s["steps"]) / "settings.json"
    settings_file.write_text(json.dumps(s, indent=2))
    started, results = time.perf_counter(), {}
    for step in STEPS:
        if step in KEPT and _done(step, s):
            record = _record(step, s)
            if record.is_file():
                results[step] = {**json.loads(record.read_text()), "reused": True}
            say(f"{step}: reused")
            continue
        if step not in s["steps_to_run"]:
            continue
        say(f"{step}: running")
        results[step] = run_step(step, s, settings_file)
        say(f"{step}: {results[step]['process']['wall_s']:.1f} s, peak anon "
            f"{results[step]['process']['peak_anon_bytes'] / 1e9:.2f} GB")
        write_report(results, s, started)
    report = write_report(results, s, started)
    print(json.dumps({"qwen3_vl": report["qwen3_vl"], "llama_vid_7b": report["llama_vid_7b"]}, indent=2))
    say(f"report: {s['report']}")
    return 0
