"""What the long-video runners share: films from the indexer, each question asked with and without
subtitles, accuracy overall, by Video-MME's duration buckets and by the benchmark's own categories."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from evaluation.benchmarks.base import Answers, Benchmark, answered
from evaluation.items import Item, Source
from evaluation.metrics import accuracy, accuracy_by, duration_bucket
from llamavid.errors import UserError

MODES = {"with": (True,), "without": (False,), "both": (True, False)}


class FilmBenchmark(Benchmark):
    input_kind = "film"
    max_new_tokens = 1
    has_subtitles = True
    #: scores by these meta fields, besides the duration buckets
    categories: tuple[str, ...] = ()

    def modes(self) -> tuple[bool, ...]:
        if self.options.subtitles not in MODES:
            raise UserError(f"--subtitles must be with, without or both, got {self.options.subtitles!r}")
        return MODES[self.options.subtitles] if self.has_subtitles else (False,)

    def settings(self) -> dict[str, Any]:
        return {"subtitles": [("with" if m else "without") for m in self.modes()]}

    def question_items(self, qid: str, video: Path, prompt: str | Callable[[bool], str], letters: tuple[str, ...],
                       truth: str | None,
                       meta: dict[str, Any], subtitle_file: Path | None = None, offset: float = 0.0,
                       answer_prefix: str = "") -> list[Item]:
        """The question once per subtitle mode (``<id>@subs`` and ``<id>@nosubs``); ``prompt`` may depend on
        the mode (``prompt(with_subtitles)``)."""
        source = Source("film", str(video), subtitle_file=str(subtitle_file) if subtitle_file else None,
                        subtitle_offset=offset)
        return [Item(f"{qid}@{'subs' if subs else 'nosubs'}", source, prompt(subs) if callable(prompt) else prompt,
                     letters=letters,
                     answer_prefix=answer_prefix, subtitles=subs, truth=truth, meta={**meta, "question_id": qid})
                for subs in self.modes()]

    def film_scores(self, items: Sequence[Item], answers: Answers,
                    extra: Callable[[list[tuple[Item, str]]], dict] | None = None) -> dict[str, Any]:
        """Per subtitle mode: accuracy, by duration bucket and by each of ``categories``."""
        out: dict[str, Any] = {}
        for subs in self.modes():
            rows = [(item, rec["choice"]) for item, rec in answered(items, answers)
                    if item.subtitles == subs and item.truth]

            def right(r):
                return r[1] == r[0].truth

            scores = {"accuracy": accuracy(right(r) for r in rows), "scored": len(rows),
                      "by_duration": accuracy_by(rows, lambda r: self.bucket(r[0], answers), right)}
            for name in self.categories:
                scores[f"by_{name}"] = accuracy_by(rows, lambda r, n=name: r[0].meta.get(n), right)
            if extra is not None:
                scores.update(extra(rows))
            out["with_subtitles" if subs else "without_subtitles"] = scores
        return out

    def bucket(self, item: Item, answers: Answers) -> str:
        """The benchmark's own label, else from the duration it gives, else from the film's frames (1 fps)."""
        if item.meta.get("duration_label"):
            return str(item.meta["duration_label"])
        seconds = item.meta.get("duration")
        if seconds is None:
            seconds = answers.get(item.id, {}).get("frames")
        return duration_bucket(float(seconds) if seconds is not None else None)
