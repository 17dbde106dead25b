"""MSVD-QA, MSRVTT-QA and ActivityNet-QA: open answers about short videos, judged by a chat model.

Layouts (``--data``), as LLaMA-VID's evaluation reads them:

* msvd, msrvtt: ``test_qa.json`` (``[{"video_id", "question", "answer", "id"}]``) and the videos in
  ``video/<video_id>.<mp4|avi|mov|mkv>`` (or ``--media``);
* activitynet: ``test_q.json`` (``[{"video_name", "question_id", "question"}]``), ``test_a.json``
  (``[{"answer", "type", "question_id"}]``, in the same order) and ``all_test/v_<video_name>.*``.

The question is asked as it is, on frames sampled at 1 fps (the reference's ``model_msvd_qa.py``), with
greedy decoding where the reference sampled at temperature 0.2. The judge gets the reference's prompt
(:mod:`evaluation.judge_prompts`) and answers ``{'pred': 'yes'|'no', 'score': 0-5}``; accuracy is
yes / (yes + no) and the score is the mean, as in ``eval_msvd_qa.py``. Writes ``predictions.json``
(``[{"id", "question", "answer", "pred"}]``, the reference's prediction format).
"""
from __future__ import annotations

import json
from pathlib import Path

from evaluation.benchmarks.base import Benchmark, answered
from evaluation.datafiles import VIDEO_SUFFIXES, as_list, fields, find_with_suffix, read_json
from evaluation.items import Item, Source
from evaluation.judge_prompts import qa_messages
from evaluation.metrics import mean, percent
from llamavid.errors import UserError


def video_source(folder: Path, stem: str) -> Source:
    return Source("video", str(find_with_suffix(folder, stem, VIDEO_SUFFIXES) or folder / f"{stem}.mp4"))


def judged_qa_scores(items, answers, verdicts) -> dict:
    """Accuracy (yes share of yes/no verdicts) and mean score, as ``eval_msvd_qa.py`` computes them."""
    yes = no = 0
    scores = []
    unread = 0
    for item, _ in answered(items, answers):
        verdict = (verdicts.get(item.id) or {}).get("verdict")
        if verdict is None:
            unread += item.id in verdicts
            continue
        scores.append(verdict["score"])
        pred = (verdict.get("pred") or "").lower()
        yes += "yes" in pred
        no += "yes" not in pred and "no" in pred
    return {"accuracy": percent(yes, yes + no), "score": mean(scores), "yes": yes, "no": no,
            "judged": len(scores), "unreadable_verdicts": unread}


class VideoQA(Benchmark):
    """MSVD-QA and MSRVTT-QA (``test_qa.json``)."""

    name = "msvd"
    max_new_tokens = 1024
    video_dir = "video"

    def items(self) -> list[Item]:
        path = self.data / "test_qa.json"
        rows = as_list(read_json(path, "QA pairs: [{video_id, question, answer, id}]"), path, "QA pairs")
        folder = self.options.media or self.data / self.video_dir
        items = []
        for number, row in enumerate(rows):
            fields(row, ("video_id", "question", "answer"), path, f"entry {number}")
            items.append(Item(str(row.get("id", number)), video_source(Path(folder), str(row["video_id"])),
                              row["question"], truth=str(row["answer"])))
        return self._unique(items, path)

    @staticmethod
    def _unique(items: list[Item], path: Path) -> list[Item]:
        seen: dict[str, int] = {}
        for item in items:  # the reference numbers repeated ids per video (``<id>_<n>``); keep every question
            n = seen.get(item.id, 0)
            seen[item.id] = n + 1
            if n:
                item.id = f"{item.id}_{n}"
        return items

    def verdict_requests(self, items, answers):
        return [(item.id, qa_messages(item.prompt, item.truth, rec["answer"]))
                for item, rec in answered(items, answers)]

    def score(self, items, answers, verdicts):
        return judged_qa_scores(items, answers, verdicts)

    def outputs(self, items, answers, out):
        rows = [{"id": item.id, "question": item.prompt, "answer": item.truth, "pred": rec["answer"]}
                for item, rec in answered(items, answers)]
        (out / "predictions.json").write_text(json.dumps(rows, ensure_ascii=False, indent=1), encoding="utf-8")
        return ["predictions.json"]


class MSRVTT(VideoQA):
    name = "msrvtt"


class ActivityNetQA(VideoQA):
    name = "activitynet"

    def items(self) -> list[Item]:
        qpath, apath = self.data / "test_q.json", self.data / "test_a.json"
        questions = as_list(read_json(qpath, "questions: [{video_name, question_id, question}]"), qpath, "questions")
        answers = as_list(read_json(apath, "answers: [{answer, type, question_id}]"), apath, "answers")
        if len(questions) != len(answers):
            raise UserError(f"{apath}: {len(answers)} answers for {len(questions)} questions in {qpath}; "
                            "the two files must list the same questions in the same order")
        folder = Path(self.options.media or self.data / "all_test")
        items = []
        for number, (q, a) in enumerate(zip(questions, answers, strict=True)):
            fields(q, ("video_name", "question_id", "question"), qpath, f"entry {number}")
            fields(a, ("answer",), apath, f"entry {number}")
            items.append(Item(str(q["question_id"]), video_source(folder, f"v_{q['video_name']}"), q["question"],
                              truth=str(a["answer"]), meta={"type": a.get("type")}))
        return self._unique(items, qpath)
