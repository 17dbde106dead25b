"""``llamavid bench``: how fast this machine runs each part, one JSON line per figure.

``llamavid bench [--only STAGES ...]`` times the model's stages (:mod:`cli.bench.model`: preprocess,
eva, qformer, llm; :mod:`cli.bench.llamacpp`: llama.cpp against transformers). ``llamavid bench
NAME ...`` runs one of the other benchmarks in :data:`BENCHMARKS` instead: each is a module of this
package with ``add_arguments(parser)`` and ``run(args) -> int``, like a command, imported only when it
is asked for (``llamavid --help`` imports no third-party package, and they import av, torch or httpx
at their top). Like the rest of :mod:`cli` they sit on top and may import every package.
"""
from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable, Sequence
from typing import Any

from cli import add_global_options
from cli.bench.plan import DEFAULT_STAGES, DTYPE_NAMES, FULL, LLM_SIZES, SMOKE, STAGES, BenchPlan
from cli.options import add_load_arguments
from llamavid.errors import UserError, require
from llamavid.hub.installed import resolve_model, search_dirs
from llamavid.paths import resolve_data_dir

HELP = ("measure EVA, Q-Former and LLM speed on this machine, one JSON line per measurement "
        "(bench decode|film|server|rehearse: the decoder, a film's first word, the server, a full-size rehearsal)")

#: ``llamavid bench NAME``: module and one line of help, in ``--help`` order.
BENCHMARKS: dict[str, tuple[str, str]] = {
    "decode": ("cli.bench.decode", "the decoder's 1 fps sampling strategies: seconds per hour of film, peak memory"),
    "film": ("cli.bench.film", "time to the first word about a one-hour film with cached features"),
    "server": ("cli.bench.server", "the server's streamed decode rate against the engine's, and its latency "
                                   "while it answers"),
    "rehearse": ("cli.bench.rehearse", "a full-size rehearsal with random weights: conversion, a one-hour film's "
                                       "exact and prepared questions, a restart; time, memory, disk per step"),
    "moments": ("cli.bench.moments", "whether an answer's moments find the line a question quotes or paraphrases: "
                                     "Hit@1 and Hit@5 on a generated set of films with subtitles"),
    "queue": ("cli.bench.queue", "how long the first answer about a film just opened takes in a library of many "
                                 "queued films, before and after the order of work (opened first, dialogue first)"),
    "skip": ("cli.bench.skip", "what skipping EVA for near-identical frames saves per film hour on static and "
                               "moving shots, and the cosine of the reused features"),
    "search": ("cli.bench.search", "a search by description over 100 film hours of scene vectors: ms per query"),
    "family": ("cli.bench.family", "the second family at full size (random Qwen3-VL-2B weights, llama.cpp q4_K_M): "
                                   "a film's first word, a follow-up, peak memory, disk per prepared hour, beside "
                                   "LLaMA-VID 7B's rehearsal"),
    "scenes": ("cli.bench.scenes", "the scene stage's cost next to EVA's (full-size CLIP ViT-B/32, random weights): "
                                   "seconds per film hour, a question's text, bytes per film hour"),
}


class _BenchmarkParser(argparse.ArgumentParser):
    """The parser of one of :data:`BENCHMARKS`, filled from its module only when it parses (so building
    ``llamavid``'s parser imports none of them)."""

    def __init__(self, *args: Any, module: str, **kwargs: Any) -> None:
        super().__init__(*args, formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)
        self.module, self.filled = module, False

    def parse_known_args(self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None,
                         ) -> tuple[argparse.Namespace, list[str]]:
        if not self.filled:
            self.filled = True
            module = importlib.import_module(self.module)
            self.description = module.__doc__
            add_global_options(self, in_subcommand=True)
            module.add_arguments(self)
        return super().parse_known_args(args, namespace)


def _csv(kind: Callable[[str], Any]) -> Callable[[str], list]:
    def parse(text: str) -> list:
        try:
            values = [kind(part.strip()) for part in text.split(",") if part.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}") from None
        if not values:
            raise argparse.ArgumentTypeError("the list is empty")
        return values
    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--only", type=_csv(str), default=list(DEFAULT_STAGES), metavar="STAGES",
                        help=f"comma-separated stages to run, of {', '.join(STAGES)} (llamacpp: the llama.cpp "
                             "backend against transformers on the same LLM, written as GGUF; not run by default)")
    parser.add_argument("--model", metavar="NAME_OR_FOLDER",
                        help="use this checkpoint's weights (a folder, or a model name under <data>/models); "
                             "default: random full-size weights")
    add_load_arguments(parser, which=("device",))  # --dtype and --threads mean the timed variants' here
    parser.add_argument("--dtype", default="auto", choices=DTYPE_NAMES,
                        help="precision of the timed variants (auto: fp32 on CPU, bf16 on CUDA, fp16 on MPS)")
    parser.add_argument("--llm-size", default="auto", choices=("auto", *LLM_SIZES),
                        help="LLM size for random weights (auto: 7b on CUDA, else 1b)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed runs per variant, after one warm-up (default 3; 1 with --smoke)")
    parser.add_argument("--sizes", type=_csv(int), default=[224, 336], metavar="PX",
                        help="EVA image sizes (comma-separated)")
    parser.add_argument("--batch", type=_csv(int), default=None, metavar="N",
                        help="EVA batch sizes (comma-separated; default 1,4 on CPU, 1,64 on a GPU)")
    parser.add_argument("--frames", type=int, default=None,
                        help=f"frames per Q-Former block, the model's block size (default {FULL['frames']})")
    parser.add_argument("--question-tokens", type=int, default=None,
                        help=f"Q-Former question length in tokens (default {FULL['question_tokens']})")
    parser.add_argument("--prompt-tokens", type=int, default=None,
                        help=f"LLM prompt length for prefill (default {FULL['prompt_tokens']})")
    parser.add_argument("--new-tokens", type=int, default=None,
                        help=f"LLM tokens to generate, greedy (default {FULL['new_tokens']})")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice, one per physical core)")
    parser.add_argument("--compile", default="auto", choices=("auto", "yes", "no"),
                        help="add torch.compile / static-cache variants (auto: on CUDA only; on CPU they "
                             "compile for minutes and did not help)")
    parser.add_argument("--engines", type=_csv(str), default=None, metavar="NAMES",
                        help="vision engines timed beside fp32 (comma-separated, e.g. int8,openvino-int8; "
                             "`none`: none; default: every engine that can run here, ~15 min on 2 cores)")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes and 1 repeat: checks every code path in seconds (tests, CI)")
    others = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK", parser_class=_BenchmarkParser,
                                   title="other benchmarks (instead of the stages; `llamavid bench NAME --help`)")
    for name, (module, help_line) in BENCHMARKS.items():
        others.add_parser(name, help=help_line, module=module)


def run(args: argparse.Namespace) -> int:
    if getattr(args, "benchmark", None):
        return int(importlib.import_module(BENCHMARKS[args.benchmark][0]).run(args) or 0)
    require("torch", purpose="llamavid bench")
    from cli.bench.model import run_bench  # torch: only when a benchmark runs

    run_bench(make_plan(args))
    return 0


def make_plan(args: argparse.Namespace) -> BenchPlan:
    """Turn command-line options into a plan; every problem becomes a UserError saying what to change."""
    from cli.bench.harness import bench_dtype  # torch: only when a benchmark runs
    from llamavid.runtime.device import pick_device

    unknown = [s for s in args.only if s not in STAGES]
    if unknown:
        raise UserError(f"--only: unknown stage(s) {', '.join(unknown)}; choose from {', '.join(STAGES)}")
    try:
        device = pick_device(args.device)
    except (ValueError, RuntimeError) as exc:
        raise UserError(f"--device {args.device}: {exc}") from exc
    smoke = bool(args.smoke)
    counts = {name: getattr(args, name) if getattr(args, name) is not None else (SMOKE if smoke else FULL)[name]
              for name in FULL}
    for name, value in counts.items():
        if value < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1")
    if args.threads is not None and args.threads < 1:
        raise UserError("--threads must be at least 1")
    bad = [s for s in args.sizes if s % 14 or s < 14]
    if bad:
        raise UserError(f"--sizes: {bad} not a multiple of EVA's 14-pixel patch; use 224 and/or 336")
    if args.batch is not None and min(args.batch) < 1:
        raise UserError("--batch sizes must be at least 1")
    gpu = device.type != "cpu"
    engines = _engines(args.engines)
    llm_size = args.llm_size
    if llm_size == "auto":
        llm_size = "tiny" if smoke else "7b" if device.type == "cuda" else "1b"
    data_dir = getattr(args, "data_dir", None) or resolve_data_dir(None)
    model_folder, search = (resolve_model(args.model, data_dir), search_dirs(data_dir)) if args.model else (None, [])
    return BenchPlan(
        stages=tuple(s for s in STAGES if s in args.only),
        device=device,
        dtype=bench_dtype(args.dtype, device),
        sizes=tuple(args.sizes),
        batches=tuple(args.batch or ((1,) if smoke else (1, 64) if gpu else (1, 4))),
        **counts,
        llm_size=llm_size,
        compile={"yes": True, "no": False}.get(args.compile, device.type == "cuda"),
        smoke=smoke,
        model_folder=model_folder,
        search_dirs=tuple(search),
        # tiny ops on a shared machine: two OpenMP threads wait on each other longer than they work
        threads=args.threads if args.threads is not None else (1 if smoke else None),
        engines=engines,
    )


def _engines(names: list[str] | None) -> tuple[str, ...] | None:
    """The engines --engines names, checked against the known ones (None: every one that can run)."""
    from llamavid.model.engines import ENGINES  # torch: only when a benchmark runs

    if names is None:
        return None
    if names == ["none"]:
        return ()
    known = {n for part in ENGINES.values() for n in part}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UserError(f"--engines: unknown engine(s) {', '.join(unknown)}; choose from {', '.join(sorted(known))}"
                        " or none")
    return tuple(names)

