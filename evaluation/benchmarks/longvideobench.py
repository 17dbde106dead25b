"""LongVideoBench (validation): questions that refer to moments of videos up to an hour long.

Layout (``--data``): ``lvb_val.json`` (``[{"id", "video_path", "subtitle_path", "question",
"candidates", "correct_choice", "duration_group", "duration", "question_category",
"starting_timestamp_for_subtitles"}]``; ``--split test`` reads ``lvb_test_wo_gt.json``), the videos in
``videos/`` and the subtitles in ``subtitles/`` (JSON, both of LongVideoBench's shapes; times are
taken relative to ``starting_timestamp_for_subtitles``, as its own loader does).

Prompt: ``Question: ...\\nOptions:\\n(A) ...`` + "Answer with the option's letter from the given choices
directly." Scores: accuracy, by LongVideoBench's duration groups (8-15 s, 15-60 s, 180-600 s,
900-3600 s), by Video-MME's buckets and by question category; with and without subtitles.
"""
from __future__ import annotations

from pathlib import Path

from evaluation.benchmarks.longvideo import FilmBenchmark
from evaluation.benchmarks.prompts import LETTER_ANSWER
from evaluation.datafiles import as_list, fields, read_json
from evaluation.items import LETTERS, Item, letters_for, option_lines
from evaluation.metrics import accuracy_by


class LongVideoBench(FilmBenchmark):
    name = "longvideobench"
    categories = ("question_category",)

    def settings(self):
        return {**super().settings(), "split": self.options.split or "val"}

    def video_folders(self) -> list[Path]:
        return [Path(self.options.media or self.data / "videos")]

    def items(self) -> list[Item]:
        split = self.options.split or "val"
        path = self.data / ("lvb_test_wo_gt.json" if split == "test" else f"lvb_{split}.json")
        rows = as_list(read_json(path, "LongVideoBench questions"), path, "LongVideoBench questions")
        items = []
        for number, row in enumerate(rows):
            fields(row, ("id", "video_path", "question", "candidates"), path, f"entry {number}")
            candidates = list(row["candidates"])
            prompt = (f"Question: {row['question']}\nOptions:\n" + option_lines(candidates, "({letter}) {text}")
                      + LETTER_ANSWER)
            subtitle = self.data / "subtitles" / row["subtitle_path"] if row.get("subtitle_path") else None
            truth = LETTERS[int(row["correct_choice"])] if row.get("correct_choice") is not None else None
            meta = {"duration": row.get("duration"), "duration_group": row.get("duration_group"),
                    "question_category": row.get("question_category")}
            items += self.question_items(str(row["id"]), self.video_folders()[0] / row["video_path"], prompt,
                                         letters_for(len(candidates)), truth, meta,
                                         subtitle if subtitle and subtitle.is_file() else None,
                                         float(row.get("starting_timestamp_for_subtitles") or 0.0))
        return items

    def score(self, items, answers, verdicts):
        def groups(rows):
            return {"by_duration_group": accuracy_by(rows, lambda r: r[0].meta.get("duration_group"),
                                                     lambda r: r[1] == r[0].truth)}

        return self.film_scores(items, answers, groups)
