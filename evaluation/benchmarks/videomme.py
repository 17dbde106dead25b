"""Video-MME: four-option questions on 900 videos (short, medium, long), with and without subtitles.

Layout (``--data``), the Hugging Face release: ``videomme/test-00000-of-00001.parquet`` (columns
``video_id, duration, domain, sub_category, videoID, question_id, task_type, question, options, answer``;
any ``.parquet`` or ``.json`` of the same table in ``--data`` or ``videomme/`` works), the videos in
``data/<videoID>.mp4`` (or ``video/``) and the subtitles in ``subtitle/<videoID>.srt``.

Films are read from the indexer (``--index`` indexes ``data/`` first). With subtitles, the film's
subtitle cues (``subtitle/<videoID>.srt`` when present, else the library's) are interleaved with its
frames, as the long-video model was trained; the prompt is Video-MME's official one (lmms-eval's
``videomme_doc_to_text``), the "video and the subtitles" wording when subtitles are shown. Writes
``videomme_<with|without>_subtitles.json`` in Video-MME's results format (videos, each with its questions
and a ``response``) for its ``eval_your_results.py``.
"""
from __future__ import annotations

import json
from pathlib import Path

from evaluation.benchmarks.base import answered
from evaluation.benchmarks.longvideo import FilmBenchmark
from evaluation.datafiles import VIDEO_SUFFIXES, fields, find_with_suffix, first_existing, read_records
from evaluation.items import Item, letters_for
from llamavid.errors import UserError

INSTRUCTION = ("Select the best answer to the following multiple-choice question based on the video{also}. "
               "Respond with only the letter (A, B, C, or D) of the correct option.")
COLUMNS = ("videoID", "question_id", "question", "options", "duration")


class VideoMME(FilmBenchmark):
    name = "videomme"
    categories = ("domain", "task_type")

    def _table(self) -> Path:
        if self.data.is_file():
            return self.data
        for folder in (self.data / "videomme", self.data):
            found = sorted(folder.glob("*.parquet")) + sorted(folder.glob("*.json"))
            if found:
                return found[0]
        raise UserError(f"{self.data}: no Video-MME table (videomme/test-00000-of-00001.parquet) here")

    def _root(self) -> Path:
        table = self._table()
        return table.parent.parent if table.parent.name == "videomme" else table.parent

    def video_folders(self) -> list[Path]:
        root = self._root()
        return [Path(self.options.media or first_existing(root / "data", root / "video") or root / "data")]

    def items(self) -> list[Item]:
        table, root = self._table(), self._root()
        videos = self.video_folders()[0]
        items = []
        for number, row in enumerate(read_records(table, "Video-MME questions")):
            fields(row, COLUMNS, table, f"row {number}")
            video = find_with_suffix(videos, row["videoID"], VIDEO_SUFFIXES) or videos / f"{row['videoID']}.mp4"
            options = list(row["options"])

            def prompt(subs: bool, row=row, options=options) -> str:
                return "\n".join([INSTRUCTION.format(also=" and the subtitles" if subs else ""), row["question"],
                                  *options, "The best answer is:"])

            meta = {"duration_label": row["duration"], "domain": row.get("domain"),
                    "task_type": row.get("task_type"), "row": dict(row)}
            subtitle = root / "subtitle" / f"{row['videoID']}.srt"
            items += self.question_items(str(row["question_id"]), video, prompt, letters_for(len(options)),
                                         row.get("answer"), meta, subtitle if subtitle.is_file() else None)
        return items

    def score(self, items, answers, verdicts):
        return self.film_scores(items, answers)

    def outputs(self, items, answers, out):
        files = []
        for subs in self.modes():
            videos: dict[str, dict] = {}
            for item, rec in answered(items, answers):
                if item.subtitles != subs:
                    continue
                row = item.meta["row"]
                video = videos.setdefault(str(row.get("video_id")), {
                    "video_id": row.get("video_id"), "duration": row.get("duration"), "domain": row.get("domain"),
                    "sub_category": row.get("sub_category"), "questions": []})
                video["questions"].append({"question_id": row["question_id"], "task_type": row.get("task_type"),
                                           "question": row["question"], "options": list(row["options"]),
                                           "answer": row.get("answer"), "response": rec["choice"]})
            name = f"videomme_{'with' if subs else 'without'}_subtitles.json"
            (out / name).write_text(json.dumps(list(videos.values()), ensure_ascii=False, indent=1), encoding="utf-8")
            files.append(name)
        return files
