"""MLVU (multiple-choice tasks): long videos, one JSON file per task.

Layout (``--data``, the MLVU release): ``json/<n>_<task>.json`` (``[{"video", "duration", "question",
"candidates", "answer", "question_type"}]``; the answer is the text of the right candidate) and the
videos in ``video/<n>_<task>/<video>``. Generation tasks (no ``candidates``) are left out.

Prompt as MLVU's own ``choice_bench.py``: its instruction, ``Question: ...\\nOptions:\\n(A) ...`` and
"Only give the best option.", with the answer started as "Best option: (" so the next token is the
letter. Scores: accuracy per task, M-Avg (their mean, MLVU's headline) and overall, by duration bucket;
with and without the library's subtitles. Test-set files whose entries carry a ``question_id`` also get
``mlvu_submission.json`` (``[{"question_id", "question_type", "option"}]``).
"""
from __future__ import annotations

import json
from pathlib import Path

from evaluation.benchmarks.base import answered
from evaluation.benchmarks.longvideo import FilmBenchmark
from evaluation.datafiles import as_list, fields, read_json
from evaluation.items import LETTERS, Item, letters_for, option_lines
from evaluation.metrics import mean
from llamavid.errors import UserError

INSTRUCTION = ("Carefully watch this video and pay attention to every detail. Based on your observations, "
               "select the best option that accurately addresses the question.\n")


class MLVU(FilmBenchmark):
    name = "mlvu"
    categories = ("task",)

    def _files(self) -> list[Path]:
        found = sorted((self.data / "json").glob("*.json"))
        if not found:
            raise UserError(f"{self.data}: no json/*.json task files (MLVU's layout)")
        return found

    def video_folders(self) -> list[Path]:
        return [Path(self.options.media or self.data / "video")]

    def items(self) -> list[Item]:
        items = []
        for path in self._files():
            rows = as_list(read_json(path, "MLVU questions"), path, "MLVU questions")
            for number, row in enumerate(rows):
                if "candidates" not in row:
                    continue  # a generation task (sub-scene captioning, summary)
                fields(row, ("video", "question", "candidates"), path, f"entry {number}")
                video = self.video_folders()[0] / path.stem / row["video"]
                candidates = list(row["candidates"])
                prompt = (INSTRUCTION + f"Question: {row['question']}\nOptions:\n"
                          + option_lines(candidates, "({letter}) {text}") + "\nOnly give the best option.")
                truth = LETTERS[candidates.index(row["answer"])] if row.get("answer") in candidates else None
                meta = {"task": row.get("question_type") or path.stem, "duration": row.get("duration"),
                        "submission_id": row.get("question_id")}
                items += self.question_items(str(row.get("question_id") or f"{path.stem}/{number}"), video, prompt,
                                             letters_for(len(candidates)), truth, meta,
                                             answer_prefix="Best option: (")
        return items

    def score(self, items, answers, verdicts):
        def m_avg(rows):
            tasks: dict[str, list[bool]] = {}
            for item, choice in rows:
                tasks.setdefault(item.meta["task"], []).append(choice == item.truth)
            return {"m_avg": mean(100 * sum(f) / len(f) for f in tasks.values())}

        return self.film_scores(items, answers, m_avg)

    def outputs(self, items, answers, out):
        files = []
        for subs in self.modes():
            rows = [{"question_id": item.meta["submission_id"], "question_type": item.meta["task"],
                     "option": rec["choice"]} for item, rec in answered(items, answers)
                    if item.subtitles == subs and item.meta["submission_id"]]
            if rows:
                name = f"mlvu_submission_{'with' if subs else 'without'}_subtitles.json"
                (out / name).write_text(json.dumps(rows, indent=1), encoding="utf-8")
                files.append(name)
        return files
