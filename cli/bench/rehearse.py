"""A rehearsal at full size with random weights: a one-hour film from a fresh download to a
resumed conversation, each step in its own process, timed and measured.

    llamavid bench rehearse                        # 7B long-video, q4_K_M, q8_0 KV, 3,600 frames, 2 threads
    llamavid bench rehearse --size tiny            # the same pipeline on tiny weights, in seconds
    llamavid bench rehearse --frames 600           # a shorter film (figures also given per film hour)

Steps, in order (``--steps`` picks some; files already written are reused, ``--redo`` rewrites):

* ``weights``: random weights in the released layout of ``llama-vid-7b-full-224-long-video`` (its
  config.json, bf16 ``pytorch_model-*.bin`` shards with index, the EVA copy, ``eva_vit_g.pth``,
  the Q-Former vocabulary, a tokenizer), about 16 GB, nothing downloaded;
* ``convert``: ``llamavid models convert-gguf`` to ``--gguf-type`` (the f16 intermediate is
  deleted afterwards unless ``--keep-f16``);
* ``features``: the film's EVA features, random fp16 in a ``.npy`` (2.6 GB an hour) read memory-mapped;
* ``calibrate``: the Q-Former's engine chosen for this machine and cached (only with
  ``--vision-engine auto``, the default);
* ``prepare``: the film read with the neutral first turn and its state saved (``index prepare``);
* ``session``: a new conversation from the prepared state: a fast new question, a follow-up, the
  conversation kept;
* ``restart``: a new process resumes the kept conversation and answers the next question;
* ``exact``: a new question the exact way (Q-Former over every frame for it, then the whole prompt);
* ``baseline``: llama.cpp's own token prefill of as many tokens as the exact question's prompt,
  same GGUF, KV type, context and threads: the injected-embedding prefill's yardstick.

Each step runs as a child process; the parent samples its anonymous and resident memory
(``/proc/<pid>/status``) and takes its peak resident set and disk writes from the kernel at its
exit (``wait4``). The report goes to ``<work>/report-SIZE-FRAMES.json`` and ``.md`` (a table) after
every step, so an interrupted run keeps what it measured. Work files live under ``--work``
(default ``~/.cache/llamavid/rehearsal``), never in the data folder.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

from cli.bench.procmem import Sampler
from llamavid.errors import UserError

STEPS = ("weights", "convert", "features", "calibrate", "prepare", "session", "restart", "exact", "baseline")
#: Steps whose output is kept and reused by a later run (the others always measure again).
KEPT = ("weights", "convert", "features", "calibrate", "prepare")
#: Steps that depend on the model only, not on the film: their records are kept beside the model's files.
MODEL_STEPS = ("weights", "convert", "calibrate")
CHAT_STEPS = ("exact", "session", "restart")
GOALS = {"chat_anon_bytes": 10e9, "fast_first_word_s": 20.0, "follow_up_first_word_s": 10.0,
         "prefill_ratio": 0.9}
FILM_HOUR = 3600  # frames at 1 fps


def default_work() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "llamavid" / "rehearsal"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", default="7b", choices=("7b", "tiny"),
                        help="7b: the released long-video model's shapes (16 GB of weights); tiny: seconds")
    parser.add_argument("--work", type=Path, default=None,
                        help=f"folder for weights, GGUF, features, states and reports (default {default_work()})")
    parser.add_argument("--frames", type=int, default=None, help="film frames at 1 fps (default 3600; tiny 24)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads of every step (default 2)")
    parser.add_argument("--gguf-type", default="q4_K_M", choices=("q4_K_M", "q8_0", "f16"))
    parser.add_argument("--kv-type", default="q8_0", choices=("q8_0", "f16", "q4_0", "f32"))
    parser.add_argument("--ctx", type=int, default=None,
                        help="llama.cpp context (default: the film's prompt plus 2,048 tokens, in steps of 512; "
                             "0: what the chat service picks, half of the free memory up to 64K)")
    parser.add_argument("--vision-engine", default="auto",
                        help="the Q-Former's engine (auto: calibrated once for this machine; int8, fp32...)")
    parser.add_argument("--subtitles", action="store_true", help="a subtitle cue every 10 s of the film")
    parser.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated, of {', '.join(STEPS)}")
    parser.add_argument("--redo", default="", help=f"steps to do again although their files exist ({', '.join(KEPT)})")
    parser.add_argument("--shard-gb", type=float, default=4.0,
                        help="largest weight shard written, GB (the writer holds one shard in memory)")
    parser.add_argument("--keep-f16", action="store_true", help="keep the f16 GGUF the conversion goes through")


def settings_from(args: argparse.Namespace) -> dict:
    work = (args.work or default_work()).expanduser().absolute()
    frames = args.frames or (24 if args.size == "tiny" else FILM_HOUR)
    if frames < 1 or args.threads < 1:
        raise UserError("--frames and --threads must be at least 1")
    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    redo = [s.strip() for s in args.redo.split(",") if s.strip()]
    unknown = [s for s in steps + redo if s not in STEPS]
    if unknown:
        raise UserError(f"unknown step(s) {', '.join(unknown)}; choose from {', '.join(STEPS)}")
    ctx = args.ctx
    if ctx is None:
        text = 24 * (frames // 10) if args.subtitles else 0
        ctx = math.ceil((2 * frames + text + 2048) / 512) * 512
    tag = f"{args.size}-{frames}" + ("-subs" if args.subtitles else "")
    return {
        "size": args.size, "frames": frames, "threads": args.threads, "gguf_type": args.gguf_type,
        "kv_type": args.kv_type, "ctx": ctx, "vision_engine": args.vision_engine, "subtitles": args.subtitles,
        "steps_to_run": [s for s in STEPS if s in steps], "redo": redo, "shard_gb": args.shard_gb,
        "keep_f16": args.keep_f16, "work": str(work),
        "checkpoint": str(work / f"checkpoint-{args.size}"), "gguf": str(work / f"gguf-{args.size}-{args.gguf_type}"),
        "film": str(work / f"film-{args.size}-{frames}" / "film.npy"), "data": str(work / "data"),
        "prepared": str(work / f"prepared-{tag}.state"), "conversation": str(work / f"conversation-{tag}.state"),
        "steps": str(work / "steps" / tag), "model_steps": str(work / "steps" / f"{args.size}-{args.gguf_type}"),
        "report": str(work / f"report-{tag}"),
    }


def say(message: str) -> None:
    print(f"rehearse: {message}", file=sys.stderr, flush=True)


# -- running a step in a child process --------------------------------------------------------------
def run_child(cmd: list[str], log: Path, env: dict) -> dict:
    """Run ``cmd``; its wall time, exit code, peak anonymous / resident memory and bytes written."""
    start = time.perf_counter()
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        sampler = Sampler(proc.pid, interval=0.1).start()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    peaks = sampler.stop()
    return {"rc": proc.returncode, "wall_s": round(time.perf_counter() - start, 3),
            "peak_anon_bytes": peaks["peak_anon_bytes"],
            "peak_rss_bytes": max(peaks["peak_rss_bytes"], usage.ru_maxrss * 1024),
            "written_bytes": usage.ru_oublock * 512}


def _done(step: str, s: dict) -> bool:
    """Whether a kept step's output is already there (and its figures from when it was made)."""
    from llamavid.files import VISION_FILE, gguf_name

    if step not in KEPT or step in s["redo"] or not step_file(step, s).is_file():
        return False
    if step == "weights":
        from cli.bench.random_weights import is_written

        return is_written(Path(s["checkpoint"]), s["size"])
    if step == "convert":
        return all((Path(s["gguf"]) / n).is_file() for n in (gguf_name(s["gguf_type"]), VISION_FILE))
    if step == "features":
        return Path(s["film"]).is_file()
    if step == "calibrate":
        return s["vision_engine"] != "auto" or (Path(s["data"]) / "cache" / "vision-engines.json").is_file()
    return Path(s["prepared"]).is_file()


def run_step(step: str, s: dict, settings_file: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(s["threads"]), "MKL_NUM_THREADS": str(s["threads"]),
           "LLAMAVID_DATA_DIR": s["data"], "PYTHONUNBUFFERED": "1"}
    log = Path(s["steps"]) / f"{step}.log"
    if step == "convert":
        cmd = [sys.executable, "-m", "cli", "--data-dir", s["data"], "models", "convert-gguf", s["checkpoint"],
               "--output", s["gguf"], "--types", s["gguf_type"]]
    else:
        cmd = [sys.executable, "-m", "cli.bench.rehearse_steps", step, str(settings_file)]
    process = run_child(cmd, log, env)
    if process["rc"] != 0:
        tail = log.read_text(errors="replace")[-2000:] if log.is_file() else ""
        raise UserError(f"step {step} failed (exit {process['rc']}); its log {log} ends:\n{tail}")
    if step == "convert":
        from llamavid.files import gguf_name

        f16 = Path(s["gguf"]) / gguf_name("f16")
        if s["gguf_type"] != "f16" and not s["keep_f16"] and f16.is_file():
            f16.unlink()
        files = {p.name: p.stat().st_size for p in Path(s["gguf"]).iterdir() if p.is_file()}
        result = {"step": step, "seconds": process["wall_s"], "files": files,
                  "phases": {"convert": {"seconds": process["wall_s"]}}}
    else:
        result = json.loads((Path(s["steps"]) / f"{step}.json").read_text())
    result["process"] = process
    step_file(step, s).write_text(json.dumps(result, indent=2))
    return result


def step_file(step: str, s: dict) -> Path:
    """Where a step's record is kept: beside the model's for :data:`MODEL_STEPS`, else the film's."""
    return Path(s["model_steps"] if step in MODEL_STEPS else s["steps"]) / f"{step}.json"


# -- the report -------------------------------------------------------------------------------------
def _phase(results: dict, step: str, phase: str) -> dict:
    return results.get(step, {}).get("phases", {}).get(phase, {})


def figures(results: dict, s: dict) -> dict:
    """The issue's figures from the steps' records (None where a step did not run)."""
    per_hour = FILM_HOUR / s["frames"]
    exact, prep = _phase(results, "exact", "question"), _phase(results, "prepare", "prepare")
    save = _phase(results, "prepare", "save")
    fast, follow = _phase(results, "session", "fast question"), _phase(results, "session", "follow-up")
    resume, base = _phase(results, "restart", "resume and ask"), _phase(results, "baseline", "token prefill")
    # the exact question's prompt is the film's rows and a few words; the preparation's the same
    embed_rate = exact.get("prefill_tokens_per_s") or prep.get("prefill_tokens_per_s")
    token_rate = base.get("prefill_tokens_per_s")
    chat_anon = [results[k]["process"]["peak_anon_bytes"] for k in CHAT_STEPS if k in results]
    prepare_s = round(prep["seconds"] + save.get("seconds", 0), 3) if prep else None
    return {
        "frames": s["frames"],
        "exact_first_token_s": exact.get("first_token_s"), "exact_first_word_s": exact.get("first_word_s"),
        "exact_qformer_s": exact.get("qformer_s"), "exact_prefill_s": exact.get("prefill_s"),
        "exact_per_film_hour_s": round(exact.get("first_token_s", exact["first_word_s"]) * per_hour, 1)
        if exact else None,
        "prepare_s": prepare_s, "prepare_per_film_hour_s": round(prepare_s * per_hour, 1) if prep else None,
        "prepared_state_bytes": save.get("state_bytes"),
        "fast_first_token_s": fast.get("first_token_s"), "fast_first_word_s": fast.get("first_word_s"),
        "fast_state_load_s": fast.get("state_load_s"),
        "follow_up_first_token_s": follow.get("first_token_s"), "follow_up_first_word_s": follow.get("first_word_s"),
        "restart_load_s": _phase(results, "restart", "load").get("seconds"),
        "restart_first_token_s": resume.get("first_token_s"), "restart_first_word_s": resume.get("first_word_s"),
        "restart_first_word_since_start_s": results.get("restart", {}).get("first_word_since_start_s"),
        "embedding_prefill_tokens": exact.get("prefill_tokens") or prep.get("prefill_tokens"),
        "prepare_prefill_tokens_per_s": prep.get("prefill_tokens_per_s"),
        "embedding_prefill_tokens_per_s": embed_rate, "token_prefill_tokens_per_s": token_rate,
        "prefill_ratio": round(embed_rate / token_rate, 3) if embed_rate and token_rate else None,
        "chat_peak_anon_bytes": max(chat_anon) if chat_anon else None,
        "disk_written_bytes": sum(r["process"]["written_bytes"] for r in results.values() if "process" in r),
    }


def goals(fig: dict) -> list[dict]:
    checks = [("anonymous memory of the chat process <= 10 GB", fig["chat_peak_anon_bytes"],
               lambda v: v <= GOALS["chat_anon_bytes"]),
              # the first token: random weights mostly choose ids that print nothing (see rehearse_steps._ask)
              ("fast (prepared) new question < 20 s to the first word (token)",
               fig["fast_first_token_s"] or fig["fast_first_word_s"], lambda v: v < GOALS["fast_first_word_s"]),
              ("follow-up < 10 s to the first word (token)",
               fig["follow_up_first_token_s"] or fig["follow_up_first_word_s"],
               lambda v: v < GOALS["follow_up_first_word_s"]),
              ("injected-embedding prefill >= 0.9x llama.cpp token prefill", fig["prefill_ratio"],
               lambda v: v >= GOALS["prefill_ratio"])]
    return [{"goal": text, "value": value, "met": None if value is None else bool(ok(value))}
            for text, value, ok in checks]


def _gb(n: int | None) -> str:
    return "" if n is None else f"{n / 1e9:.2f}"


def _key_figure(step: str, phase: str, rec: dict) -> str:
    parts = []
    for key, fmt in (("first_token_s", "first token {:.1f} s"), ("first_word_s", "first text {:.1f} s"),
                     ("qformer_s", "Q-Former {:.1f} s"),
                     ("prefill_s", "prefill {:.1f} s"), ("prefill_tokens_per_s", "{:.2f} tok/s"),
                     ("prefill_tokens", "{} tokens"), ("answer_feed_s", "answer fed {:.1f} s"),
                     ("state_load_s", "state read {:.1f} s"), ("turns_resumed", "{} turns resumed"),
                     ("state_bytes", "state {:.0f} MB"), ("checkpoint_bytes", "{:.2f} GB on disk"),
                     ("features_bytes", "{:.2f} GB"), ("qformer_engine", "engine {}")):
        if rec.get(key) is not None:
            value = rec[key] / 1e6 if key == "state_bytes" else rec[key] / 1e9 if key.endswith("_bytes") \
                else rec[key]
            parts.append(fmt.format(value))
    return ", ".join(parts)


def table(report: dict) -> str:
    lines = ["| step (process) / phase | seconds | figures | peak anon GB | peak RSS GB | disk written GB |",
             "|---|---|---|---|---|---|"]
    for step, r in report["steps"].items():
        p = r.get("process", {})
        extra = f"files: {', '.join(f'{k} {v / 1e9:.2f} GB' for k, v in r['files'].items())}" if "files" in r else ""
        reused = " (reused)" if r.get("reused") else ""
        lines.append(f"| **{step}**{reused} | {p.get('wall_s', r.get('seconds'))} | {extra} | "
                     f"{_gb(p.get('peak_anon_bytes'))} | {_gb(p.get('peak_rss_bytes'))} | "
                     f"{_gb(p.get('written_bytes'))} |")
        for name, rec in r.get("phases", {}).items():
            if step == "convert":
                continue
            lines.append(f"| &nbsp; {name} | {rec.get('seconds')} | {_key_figure(step, name, rec)} | "
                         f"{_gb(rec.get('peak_anon_bytes'))} | {_gb(rec.get('peak_rss_bytes'))} | "
                         f"{_gb(rec.get('written_bytes'))} |")
    fig = report["figures"]
    lines += ["", "| figure | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in fig.items()]
    lines += ["", "| goal | value | met |", "|---|---|---|"]
    lines += [f"| {g['goal']} | {g['value']} | {'' if g['met'] is None else 'yes' if g['met'] else 'NO'} |"
              for g in report["goals"]]
    return "\n".join(lines) + "\n"


def machine() -> dict:
    from llamavid.system import cpu_info, ram

    cpu = cpu_info()
    return {"cpu": cpu.get("model name"), "cpu_family": cpu.get("cpu family"), "cpu_model": cpu.get("model"),
            "cpu_count": os.cpu_count(), "ram_bytes": ram().total, "load_1m": round(os.getloadavg()[0], 2)}


def write_report(s: dict, results: dict, started: float, loads: dict) -> dict:
    fig = figures(results, s)
    report = {"command": "llamavid bench rehearse " + " ".join(sys.argv[sys.argv.index("rehearse") + 1:])
              if "rehearse" in sys.argv else None,
              "settings": {k: s[k] for k in ("size", "frames", "threads", "gguf_type", "kv_type", "ctx",
                                             "vision_engine", "subtitles", "work")},
              "machine": machine(), "elapsed_s": round(time.time() - started, 1), "load_avg": loads,
              "steps": results, "figures": fig, "goals": goals(fig)}
    Path(s["report"] + ".json").write_text(json.dumps(report, indent=2))
    Path(s["report"] + ".md").write_text(table(report))
    return report


def rehearse(s: dict) -> dict:
    """Run the rehearsal's steps with settings ``s`` (:func:`settings_from`); returns the report."""
    Path(s["steps"]).mkdir(parents=True, exist_ok=True)
    Path(s["model_steps"]).mkdir(parents=True, exist_ok=True)
    settings_file = Path(s["steps"]) / "settings.json"
    results: dict[str, dict] = {}
    loads: dict[str, list[float]] = {}
    started = time.time()
    for step in STEPS:
        previous = step_file(step, s)
        if step == "calibrate" and s["vision_engine"] != "auto":
            continue  # a forced engine is not chosen by measuring
        if step not in s["steps_to_run"]:
            if previous.is_file():  # measured by an earlier run: kept in the report, marked so
                results[step] = {**json.loads(previous.read_text()), "reused": True}
            continue
        if _done(step, s):
            say(f"{step}: already done, reused")
            results[step] = {**json.loads(previous.read_text()), "reused": True}
            continue
        if step == "baseline":
            measured = _phase(results, "exact", "question") or _phase(results, "prepare", "prepare")
            s["baseline_tokens"] = measured.get("prefill_tokens") or 2 * s["frames"] + 64
        settings_file.write_text(json.dumps(s, indent=2))
        say(f"{step} ...")
        before = os.getloadavg()[0]
        results[step] = run_step(step, s, settings_file)
        loads[step] = [round(before, 2), round(os.getloadavg()[0], 2)]
        p = results[step]["process"]
        say(f"{step}: {p['wall_s']:.1f} s, peak anon {p['peak_anon_bytes'] / 1e9:.2f} GB, "
            f"peak RSS {p['peak_rss_bytes'] / 1e9:.2f} GB, wrote {p['written_bytes'] / 1e9:.2f} GB")
        write_report(s, results, started, loads)
    return write_report(s, results, started, loads)


def run(args: argparse.Namespace) -> int:
    s = settings_from(args)
    report = rehearse(s)
    print(table(report))
    print(f"report: {s['report']}.json, {s['report']}.md")
    return 0
