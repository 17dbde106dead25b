"""The results of a run as ``results.json`` and ``results.md``, and two runs side by side.

Everything but ``timing`` follows from the answers and the run's settings, so an interrupted and
resumed run writes the same file as one that ran straight through, apart from that section.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evaluation.judge import Judge
from evaluation.judge_prompts import templates
from evaluation.normalize import evalai_answer
from evaluation.records import AnswerLog
from llamavid.errors import UserError
from llamavid.storage import atomic_write, write_json_atomic


def _frames(identity: dict[str, Any], kind: str) -> str:
    if kind == "image":
        return "one image"
    if kind == "film":
        return "every cached frame (1 fps); every k-th when the context is full"
    cap = identity.get("max_frames")
    return f"{identity.get('fps', 1.0):g} fps" + (f", at most {cap}" if cap else ", no cap")


def build_results(bench: Any, manifest: dict[str, Any], items: Sequence[Any], answers: dict[str, dict],
                  verdicts: dict[str, dict], scores: dict[str, Any], files: list[str],
                  judge: Judge | None) -> dict[str, Any]:
    identity = manifest["identity"]
    done = [answers[item.id] for item in items if item.id in answers]
    seconds = sum(float(r.get("seconds", 0.0)) for r in done)
    results: dict[str, Any] = {
        "benchmark": bench.name, "title": bench.title,
        "run": {"checkpoint": identity["checkpoint"], "family": identity.get("family", "llama-vid"),
                "backend": identity["backend"],
                "quantization": identity["quantization"], "device": identity["device"], "dtype": identity["dtype"],
                "frames": _frames(identity, bench.input_kind),
                "decoding": f"greedy, at most {identity['max_new_tokens']} new tokens; multiple choice from "
                            "the first step's letter scores",
                "date": manifest["started"], "data": identity["data"], "limit": identity.get("limit"),
                "settings": identity.get("benchmark_settings", {})},
        "items": {"total": len(items), "answered": len(done)},
        "scores": scores,
        "files": files,
        "timing": {"answer_seconds": round(seconds, 3),
                   "seconds_per_item": round(seconds / len(done), 4) if done else None,
                   "items_per_minute": round(60 * len(done) / seconds, 3) if seconds else None},
    }
    if bench.judged and judge is not None:
        results["judge"] = {"base_url": judge.settings.base_url, "model": judge.settings.model,
                            "versions": sorted({v["model"] for v in verdicts.values()}),
                            "temperature": judge.settings.temperature, "prompts": templates()}
        results["timing"].update(judge_requests_sent=judge.asked, judge_replies_cached=judge.cached)
    return results


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists are kept whole)."""
    if not isinstance(value, dict):
        return {prefix: value}
    out: dict[str, Any] = {}
    for key, sub in value.items():
        out.update(flatten(sub, f"{prefix}.{key}" if prefix else str(key)))
    return out


def cell(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value)
    if isinstance(value, float):
        return f"{value:.2f}"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value))
    return str(value).replace("|", "\\|")


def markdown(results: dict[str, Any]) -> str:
    run, timing = results["run"], results["timing"]
    lines = [f"# {results['title']}: {run['checkpoint']}", "", "| run | |", "|---|---|"]
    rows = {**{k: run.get(k) for k in ("checkpoint", "family", "backend", "quantization", "device", "dtype",
                                       "frames", "decoding", "date")},
            "items answered": f"{results['items']['answered']} of {results['items']['total']}",
            "seconds per item": timing["seconds_per_item"], "items per minute": timing["items_per_minute"]}
    if "judge" in results:
        rows["judge"] = f"{results['judge']['model']} ({', '.join(results['judge']['versions'])}) at " \
                        f"{results['judge']['base_url']}"
    lines += [f"| {k} | {cell(v)} |" for k, v in rows.items()]
    lines += ["", "| score | value |", "|---|---|"]
    lines += [f"| {k} | {cell(v)} |" for k, v in flatten(results["scores"]).items()]
    if results["files"]:
        lines += ["", "Submission files: " + ", ".join(f"`{f}`" for f in results["files"])]
    return "\n".join(lines) + "\n"


def write_results(out: Path, results: dict[str, Any]) -> None:
    write_json_atomic(out / "results.json", results)
    text = markdown(results)
    with atomic_write(out / "results.md", "w", encoding="utf-8") as fh:
        fh.write(text)


def load_results(path: str | Path) -> dict[str, Any]:
    """A run's results from its folder or its ``results.json``."""
    path = Path(path)
    file = path / "results.json" if path.is_dir() else path
    if not file.is_file():
        raise UserError(f"{path}: no results.json there; give a run folder written by `llamavid eval`")
    try:
        results = json.loads(file.read_text(encoding="utf-8"))
        results["scores"], results["run"]  # noqa: B018 - a results file has both
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{file}: not a results file of `llamavid eval` ({exc})") from None
    return results


def compare(a: dict[str, Any], b: dict[str, Any], names: tuple[str, str] = ("A", "B")) -> str:
    """Two runs side by side in Markdown: their setup, then every score with B - A."""
    lines = [f"| | {names[0]} | {names[1]} |", "|---|---|---|"]
    for key in ("checkpoint", "family", "backend", "quantization", "device", "frames", "date"):
        lines.append(f"| {key} | {cell(a['run'].get(key))} | {cell(b['run'].get(key))} |")
    lines.append(f"| benchmark | {a.get('title')} | {b.get('title')} |")
    for key in ("seconds_per_item", "items_per_minute"):
        lines.append(f"| {key.replace('_', ' ')} | {cell(a['timing'].get(key))} | {cell(b['timing'].get(key))} |")
    lines += ["", f"| score | {names[0]} | {names[1]} | {names[1]} - {names[0]} |", "|---|---|---|---|"]
    fa, fb = flatten(a["scores"]), flatten(b["scores"])
    for key in list(fa) + [k for k in fb if k not in fa]:
        va, vb = fa.get(key), fb.get(key)
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (va, vb))
        delta = f"{vb - va:+.2f}" if numeric else ""
        lines.append(f"| {key} | {cell(va)} | {cell(vb)} | {delta} |")
    return "\n".join(lines) + "\n"


def said(record: dict[str, Any], verdict: dict[str, Any] | None = None) -> Any:
    """How an answer was scored, for agreement: the chosen letter (multiple choice), the judge's
    yes/no (a judged answer), else the answer as exact-match scoring reads it (case, punctuation,
    articles and number words folded, as VQA's evaluation does)."""
    if "choice" in record:
        return record["choice"]
    if verdict and isinstance(verdict.get("verdict"), dict) and verdict["verdict"].get("pred") is not None:
        return str(verdict["verdict"]["pred"]).strip().lower()
    return evalai_answer(str(record.get("answer", "")))


def _verdicts(folder: Path) -> dict[str, dict[str, Any]]:
    """The judge's verdicts of a run folder (one judge's file; several: the newest)."""
    files = sorted(folder.glob("verdicts-*.jsonl"), key=lambda f: f.stat().st_mtime) if folder.is_dir() else []
    files = [f for f in files if f.name != "verdicts-none.jsonl"]
    return AnswerLog(files[-1]).records if files else {}


def agreement(a: str | Path, b: str | Path) -> tuple[int, int]:
    """(items scored alike, items both runs answered), from each run folder's ``answers.jsonl``:
    the same chosen letter for multiple choice, the same verdict or the same normalized answer
    otherwise (:func:`said`)."""
    folders = [Path(p) for p in (a, b)]
    runs = [AnswerLog(f / "answers.jsonl").records if f.is_dir() else {} for f in folders]
    verdicts = [_verdicts(f) for f in folders]
    common = sorted(set(runs[0]) & set(runs[1]))
    return sum(said(runs[0][k], verdicts[0].get(k)) == said(runs[1][k], verdicts[1].get(k)) for k in common), \
        len(common)


def accuracies(results: dict[str, Any]) -> dict[str, float]:
    """Every accuracy a run's scores hold (``accuracy``, ``with_subtitles.accuracy`` ...), by key."""
    return {k: float(v) for k, v in flatten(results["scores"]).items()
            if k.split(".")[-1] == "accuracy" and isinstance(v, (int, float)) and not isinstance(v, bool)}


def summary(a: dict[str, Any], b: dict[str, Any], agreed: tuple[int, int], names: tuple[str, str] = ("A", "B")) -> str:
    """The three figures two runs are compared by: accuracy of each, their agreement, time per item."""
    lines = [f"| | {names[0]} | {names[1]} |", "|---|---|---|",
             f"| family | {cell(a['run'].get('family', 'llama-vid'))} | {cell(b['run'].get('family', 'llama-vid'))} |"]
    acc_a, acc_b = accuracies(a), accuracies(b)
    for key in list(acc_a) + [k for k in acc_b if k not in acc_a]:
        lines.append(f"| {key} (%) | {cell(acc_a.get(key))} | {cell(acc_b.get(key))} |")
    lines.append(f"| seconds per item | {_seconds(a)} | {_seconds(b)} |")
    same, total = agreed
    share = f"{same} of {total} items ({100 * same / total:.1f} %)" if total else "no item answered by both runs"
    return "\n".join(lines) + f"\n\nAgreement: {share} scored alike (the same choice, verdict or normalized answer).\n"


def _seconds(results: dict[str, Any]) -> str:
    value = results.get("timing", {}).get("seconds_per_item")
    return "" if value is None else f"{value:.4f}"
