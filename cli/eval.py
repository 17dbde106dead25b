"""``llamavid eval``: the paper's benchmarks and long-video benchmarks, resumable, on one command.

    llamavid eval gqa --data ~/LLaMA-VID-Eval/gqa -m llama-vid-7b-full-224
    llamavid eval msvd --data ~/LLaMA-VID-Eval/MSVD-QA -m llama-vid-7b-full-224-video-fps-1 \\
        --judge-url http://127.0.0.1:8000/v1 --judge-model my-judge
    llamavid eval videomme --data ~/Video-MME -m llama-vid-7b-full-224-long-video --index
    llamavid eval compare RUN_A RUN_B
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from cli.options import add_load_arguments, load_options_from
from evaluation.catalog import CATALOG
from llamavid.errors import UserError

# The model library, the indexer and the benchmark runners (torch, transformers, openai...) are imported
# inside the functions below: `llamavid --help` imports every command module and must stay fast.

HELP = "run a benchmark (GQA, MMBench, MME, POPE, SEED, ScienceQA, VizWiz, VQAv2, MSVD/MSRVTT/ActivityNet-QA, " \
       "Video-ChatGPT, Video-MME, MLVU, EgoSchema, LongVideoBench) or compare two runs"

RUN_FILES = ("run.json", "answers.jsonl", "results.json", "results.md")
#: The load flags a benchmark takes (all but --vision-engine: the vision engine is settings.json's).
EVAL_LOAD_FLAGS = ("bits", "device", "dtype", "vision", "base", "backend", "gguf_type", "kv_type", "n_ctx", "threads",
                   "template")


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="eval_command", metavar="BENCHMARK", required=True)
    listing = sub.add_parser("list", help="the benchmarks and what --data must hold for each")
    listing.set_defaults(eval_run=cmd_list)
    compare = sub.add_parser("compare", help="two runs side by side (run folders or results.json files)")
    compare.add_argument("a", metavar="A")
    compare.add_argument("b", metavar="B")
    compare.set_defaults(eval_run=cmd_compare)
    for name, entry in CATALOG.items():
        bench = sub.add_parser(name, help=f"{entry.title}: --data holds {entry.layout}",
                               description=f"{entry.title}. --data holds {entry.layout}.",
                               formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        _run_options(bench, entry.kind, entry.judged)
        bench.set_defaults(eval_run=cmd_benchmark)


def _run_options(p: argparse.ArgumentParser, kind: str, judged: bool) -> None:
    p.add_argument("--data", required=True, metavar="PATH", help="the benchmark's files, laid out as published")
    p.add_argument("--model", "-m", required=True, help="installed model name or checkpoint folder")
    p.add_argument("--out", metavar="DIR", help="run folder (default: <data dir>/eval/<benchmark>/<model>)")
    p.add_argument("--restart", action="store_true", help="discard the answers already in the run folder")
    p.add_argument("--limit", type=int, metavar="N", help="only the first N items (a quick look; partial scores)")
    p.add_argument("--max-new-tokens", type=int, help="answer length cap (default: the benchmark's own)")
    p.add_argument("--media", metavar="DIR", help="the images or videos, if not where the layout puts them")
    p.add_argument("--split", help="split or subtype, where the benchmark has several")
    if kind == "image":
        p.add_argument("--lang", choices=("en", "cn"), help="MMBench prompt language (default: from the file name)")
    if kind == "video":
        p.add_argument("--fps", type=float, default=1.0, help="frames per second sampled from each video")
        p.add_argument("--max-frames", type=int, help="cap on frames per video (default: none, as the paper)")
    if kind == "film":
        p.add_argument("--subtitles", choices=("with", "without", "both"), default="both",
                       help="ask each question with the film's subtitles, without, or both ways")
        p.add_argument("--index", action="store_true",
                       help="add the benchmark's video folder to the movie library and index it first")
        p.add_argument("--film-mode", choices=("exact", "fast"), default="exact",
                       help="exact: each question reads the film; fast: the film is read once with a neutral "
                            "question and each question follows it (the chat's fast answers); run both and "
                            "`eval compare` them to see how far they agree")
    if judged:
        p.add_argument("--judge-url", required=True, metavar="URL",
                       help="OpenAI-compatible base URL, e.g. https://api.openai.com/v1 or http://127.0.0.1:8000/v1")
        p.add_argument("--judge-model", required=True, help="judge model name, e.g. gpt-3.5-turbo-0613")
        p.add_argument("--judge-key-env", default="OPENAI_API_KEY", metavar="VAR",
                       help="environment variable holding the judge's API key (unset: no key)")
        p.add_argument("--judge-temperature", type=float, default=0.0, help="judge sampling temperature")
        p.add_argument("--judge-cache", metavar="DIR", help="judge reply cache (default: <data dir>/cache/judge)")
    add_load_arguments(p, which=EVAL_LOAD_FLAGS, notes={"vision": "(and to index with)"})


def run(args: argparse.Namespace) -> int:
    return args.eval_run(args)


def cmd_list(args: argparse.Namespace) -> int:
    for name, entry in CATALOG.items():
        judged = ", judged" if entry.judged else ""
        print(f"{name:15} {entry.title} ({entry.kind}{judged})\n{'':15} --data holds {entry.layout}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from evaluation.report import agreement, compare, load_results, summary

    a, b = load_results(args.a), load_results(args.b)
    names = (Path(args.a).name or "A", Path(args.b).name or "B")
    agreed = agreement(args.a, args.b)
    print(summary(a, b, agreed, names))
    print(compare(a, b, names), end="")
    same, total = agreed
    if total:
        print(f"\nThe same answer on {same} of {total} items both runs answered ({100 * same / total:.1f} %).")
    return 0


def _quantization(args: argparse.Namespace, lv: Any) -> str:
    if getattr(lv, "family", None) == "qwen-vl":
        if lv.llamacpp:
            return f"GGUF {lv.backend.path.name} + {lv.backend.mmproj.name}, KV {getattr(lv.backend, 'kv_type', 'f16')}"
        return "none"
    if lv.backend.name == "llama.cpp":
        return f"GGUF {Path(getattr(lv.backend, 'path', '')).name}, KV {getattr(lv.backend, 'kv_type', args.kv_type)}"
    return "4-bit NF4 (bitsandbytes)" if args.load_4bit else "8-bit (bitsandbytes)" if args.load_8bit else "none"


def _folder(lv: Any) -> Path:
    """The checkpoint folder of a loaded model of either family."""
    return lv.folder if getattr(lv, "family", None) == "qwen-vl" else lv.report.folder


def _device_dtype(lv: Any) -> tuple[str, str]:
    """Where the model runs and in which type, as run.json records them for either family."""
    if getattr(lv, "family", None) != "qwen-vl":
        return str(lv.device), str(lv.model.dtype).removeprefix("torch.")
    if lv.llamacpp:
        import torch

        return ("cuda" if torch.cuda.is_available() else "cpu"), "gguf"  # load_qwen's own rule for its layers
    return str(lv.backend.device), str(lv.backend.model.dtype).removeprefix("torch.")


def _load(args: argparse.Namespace, kind: str):
    from llamavid.runtime.load import load_model

    return load_model(args.model, args.data_dir, load_options_from(args), load_vision=kind != "film")


def _out_folder(args: argparse.Namespace) -> Path:
    if args.out:
        return Path(args.out).expanduser()
    return Path(args.data_dir) / "eval" / args.eval_command / Path(args.model).name


def _restart(out: Path) -> None:
    """Remove what a run wrote (nothing else in the folder)."""
    for name in RUN_FILES:
        (out / name).unlink(missing_ok=True)
    for path in out.glob("verdicts-*.jsonl"):
        path.unlink()
    for sub in ("mme_results",):
        shutil.rmtree(out / sub, ignore_errors=True)


class Progress:
    """One line on stderr at most every two seconds, with the rate and what is left."""

    def __init__(self, name: str):
        self.name, self.start, self.shown, self.first = name, time.monotonic(), 0.0, None

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        if self.first is None:
            self.first = (done - 1, now)
        if now - self.shown < 2.0 and done < total:
            return
        self.shown = now
        count, since = done - self.first[0], now - self.first[1]
        rate = f", {60 * count / since:.1f}/min" if since > 0 and count > 1 else ""
        print(f"{self.name}: {stage} {done}/{total}{rate}", file=sys.stderr, flush=True)


def _judge(args: argparse.Namespace):
    from evaluation.judge import Judge, JudgeSettings

    settings = JudgeSettings(base_url=args.judge_url, model=args.judge_model,
                             api_key=os.environ.get(args.judge_key_env) or None,
                             temperature=args.judge_temperature)
    cache = Path(args.judge_cache) if args.judge_cache else Path(args.data_dir) / "cache" / "judge"
    return Judge(settings, cache)


def cmd_benchmark(args: argparse.Namespace) -> int:
    from evaluation.answering import answerer_for
    from evaluation.benchmarks import BENCHMARKS, Options
    from evaluation.films import Films, index_videos
    from evaluation.report import markdown
    from evaluation.runner import RunSettings, run_benchmark
    from evaluation.visuals import VisualLoader

    name = args.eval_command
    if not Path(args.data).expanduser().exists():
        raise UserError(f"{args.data}: no such file or folder (--data holds {CATALOG[name].layout})")
    options = Options(split=args.split, subtitles=getattr(args, "subtitles", "both"), lang=getattr(args, "lang", None),
                      media=Path(args.media).expanduser() if args.media else None)
    bench = BENCHMARKS[name](Path(args.data), options)
    if getattr(args, "index", False):
        print(f"{name}: indexing {', '.join(map(str, bench.video_folders()))}", file=sys.stderr)
        print(f"indexer: {index_videos(args.data_dir, bench.video_folders(), args.vision, args.device)}",
              file=sys.stderr)
    out = _out_folder(args)
    if args.restart:
        _restart(out)
    lv = _load(args, bench.input_kind)
    family = getattr(lv, "family", "llama-vid")
    max_new = args.max_new_tokens or bench.max_new_tokens
    films = Films(args.data_dir, pictures=family == "llama-vid") if bench.input_kind == "film" else None
    loader = VisualLoader(lv, films, fps=getattr(args, "fps", 1.0), max_frames=getattr(args, "max_frames", None),
                          answer_tokens=max_new)
    where, dtype = _device_dtype(lv)
    settings = RunSettings(checkpoint=str(_folder(lv)), family=family, backend=lv.backend.name,
                           quantization=_quantization(args, lv), device=where, dtype=dtype,
                           fps=getattr(args, "fps", 1.0), max_frames=getattr(args, "max_frames", None),
                           max_new_tokens=args.max_new_tokens, limit=args.limit,
                           extra={"film_mode": getattr(args, "film_mode", "exact")})
    judge = _judge(args) if bench.judged else None
    try:
        answerer = answerer_for(lv, max_new, film_mode=getattr(args, "film_mode", "exact"))
        results = run_benchmark(bench, answerer, loader, out, settings, judge, Progress(name))
    except KeyboardInterrupt:
        print(f"{name}: interrupted; the answers so far are in {out}; run the same command again to resume",
              file=sys.stderr)
        return 130
    print(markdown(results), end="")
    print(f"{name}: results in {out / 'results.md'} and {out / 'results.json'}", file=sys.stderr)
    return 0
