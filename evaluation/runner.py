"""One benchmark run: answer every item once (resumably), judge if the benchmark is judged, score,
write the submission files and the results table.

A run lives in one folder:

* ``run.json``: what was run (benchmark, data, checkpoint, backend, decoding...), written once. A later
  command with the same folder resumes it, and one with a different checkpoint or options is refused
  rather than mixing answers of two setups;
* ``answers.jsonl``: one record per answered item (:mod:`evaluation.records`);
* ``verdicts-<judge model>.jsonl``: one record per judge call, for judged benchmarks;
* the benchmark's submission files, ``results.json`` and ``results.md`` (:mod:`evaluation.report`).

Interrupting (Ctrl-C, a killed process) loses at most the item under way; running the same command
again answers only what is missing and writes the same results, apart from the timing.
"""
from __future__ import annotations

import datetime as dt
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from evaluation.answering import Answerer
from evaluation.benchmarks.base import Benchmark
from evaluation.films import INDEX_HINT, Films
from evaluation.items import Item
from evaluation.judge import Judge, parse_verdict
from evaluation.qwen_answering import QwenAnswerer
from evaluation.records import AnswerLog
from evaluation.report import build_results, write_results
from evaluation.visuals import VisualLoader
from llamavid.errors import UserError
from llamavid.storage import write_json_atomic

#: progress(stage, done, total): stage is "answer" or "judge"
Progress = Callable[[str, int, int], None]


@dataclass
class RunSettings:
    """How the model was run; all of it goes into ``run.json`` and the results."""

    checkpoint: str
    family: str = "llama-vid"           # llamavid.runtime.family: llama-vid or qwen-vl
    backend: str = "transformers"
    quantization: str = "none"
    device: str = "cpu"
    dtype: str = "fp32"
    fps: float = 1.0
    max_frames: int | None = None
    max_new_tokens: int | None = None   # None: the benchmark's own default
    limit: int | None = None            # only the first N items (a quick look; scores are partial)
    extra: dict[str, Any] = field(default_factory=dict)


#: What a run folder written before a setting existed was run with (so it still resumes).
LEGACY_IDENTITY = {"family": "llama-vid"}


def open_run(out: Path, identity: dict[str, Any]) -> dict[str, Any]:
    """The run's ``run.json``: created on the first call, checked against ``identity`` on later ones."""
    path = out / "run.json"
    if path.exists():
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise UserError(f"{path}: not readable JSON ({exc}); delete the run folder or pick another --out") from None
        kept = {**LEGACY_IDENTITY, **manifest.get("identity", {})}
        differs = sorted(k for k in identity if kept.get(k) != identity[k])
        if differs:
            raise UserError(f"{out} holds a run with other settings ({', '.join(differs)}); "
                            "use another --out, or --restart to start this folder over")
        return manifest
    manifest = {"identity": identity, "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    write_json_atomic(path, manifest)
    return manifest


def check_sources(items: Sequence[Item], films: Films | None) -> None:
    """Fail before the first answer when inputs are missing, naming how many and a few of them."""
    paths = list(dict.fromkeys(i.source.path for i in items if i.source.kind in ("image", "video")
                               and i.source.data is None))
    missing = [p for p in paths if not Path(p).is_file()]
    what = "files"
    if films is not None:
        missing += films.missing(i.source.path for i in items if i.source.kind == "film")
        what = "films"
    if missing:
        shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        hint = f"; {INDEX_HINT}" if films is not None else "; check --data (and --media)"
        raise UserError(f"{len(missing)} of the benchmark's {what} cannot be read: {shown}{hint}")


def groups_of(items: Sequence[Item]) -> list[list[Item]]:
    """Items sharing a source, in order of first appearance (stable, so every run groups alike)."""
    by_key: dict[str, list[Item]] = {}
    for item in items:
        by_key.setdefault(item.source.key, []).append(item)
    return list(by_key.values())


def answer_items(items: Sequence[Item], log: AnswerLog, answerer: Answerer | QwenAnswerer, loader: VisualLoader,
                 progress: Progress) -> float:
    """Answer what the log lacks; returns the seconds spent. Each record holds the seconds since the
    previous one (so a group's encoding is counted in its first answer)."""
    total, done = len(items), sum(1 for item in items if item.id in log)
    spent = 0.0
    for group in groups_of(items):
        pending = {item.id for item in group if item.id not in log}
        if not pending:
            continue
        mark = time.perf_counter()
        visual = loader.load(group[0].source)
        for item, record in answerer.answer_group(visual, group, pending):
            now = time.perf_counter()
            log.append({"id": item.id, **record, "seconds": round(now - mark, 4)})
            spent, mark, done = spent + now - mark, now, done + 1
            progress("answer", done, total)
    return spent


def verdict_file(out: Path, judge: Judge | None) -> Path:
    """One verdict log per judge model, so judging the same answers with another judge starts afresh."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", judge.settings.model) if judge else "none"
    return out / f"verdicts-{name}.jsonl"


def judge_answers(requests: list[tuple[str, list[dict]]], log: AnswerLog, judge: Judge, progress: Progress) -> None:
    """Ask the judge what the verdict log lacks (cached replies cost nothing)."""
    done = sum(1 for key, _ in requests if key in log)
    for key, messages in requests:
        if key in log:
            continue
        reply = judge.ask(messages)
        log.append({"id": key, "content": reply["content"], "model": reply["model"],
                    "verdict": parse_verdict(reply["content"])})
        done += 1
        progress("judge", done, len(requests))


def run_benchmark(bench: Benchmark, answerer: Answerer | QwenAnswerer, loader: VisualLoader, out: Path,
                  settings: RunSettings, judge: Judge | None = None,
                  progress: Progress | None = None) -> dict[str, Any]:
    """Everything for one benchmark; returns the results (also written to ``out``)."""
    progress = progress or (lambda stage, done, total: None)
    if bench.judged and judge is None:
        raise UserError(f"{bench.title} is scored by a judge model: give --judge-url and --judge-model")
    items = bench.items()
    if settings.limit is not None:
        items = items[: settings.limit]
    check_sources(items, loader.films if bench.input_kind == "film" else None)
    out.mkdir(parents=True, exist_ok=True)
    identity = {"benchmark": bench.name, "data": str(bench.data.resolve()), **asdict(settings),
                "benchmark_settings": bench.settings(), "max_new_tokens": answerer.max_new_tokens}
    manifest = open_run(out, identity)
    answers = AnswerLog(out / "answers.jsonl")
    answer_items(items, answers, answerer, loader, progress)
    verdicts = AnswerLog(verdict_file(out, judge))
    if bench.judged:
        judge_answers(bench.verdict_requests(items, answers.records), verdicts, judge, progress)
    scores = bench.score(items, answers.records, verdicts.records)
    files = bench.outputs(items, answers.records, out)
    results = build_results(bench, manifest, items, answers.records, verdicts.records, scores, files, judge)
    write_results(out, results)
    return results
