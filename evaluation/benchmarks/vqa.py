"""VQAv2 and VizWiz: open answers, the submission files their servers score, and VQA accuracy here
wherever the human answers are at hand (val splits).

VQAv2 layout (``--data``): ``v2_OpenEnded_mscoco_<split>_questions.json`` (``{"questions": [{"image_id",
"question", "question_id"}]}``), optionally ``v2_mscoco_<split>_annotations.json``, and the COCO images
(``test2015/COCO_test2015_<id:012>.jpg`` for test-dev2015, ``val2014/COCO_val2014_...`` for val2014).
``--split`` defaults to test-dev2015, what the paper reports. A test-dev submission also lists every
other question of ``v2_OpenEnded_mscoco_test2015_questions.json`` (empty answers) when that file is
there, as the server wants all of test2015.

VizWiz layout: ``<split>.json`` (``[{"image", "question", "answers"?}]``) and the images in ``<split>/``;
``--split`` defaults to test. Prompts and answer processing are LLaVA's (the suffixes in ``prompts``,
EvalAI's processor on each prediction).
"""
from __future__ import annotations

import json

from evaluation.benchmarks.base import Benchmark, answered
from evaluation.benchmarks.prompts import SHORT_ANSWER, VIZWIZ
from evaluation.datafiles import fields, first_existing, read_json
from evaluation.items import Item, Source
from evaluation.metrics import mean
from evaluation.normalize import evalai_answer, vqa_accuracy
from llamavid.errors import UserError


def _vqa_scores(rows: list[tuple[Item, str]]) -> dict:
    scored = [(item, 100 * vqa_accuracy(pred, item.truth)) for item, pred in rows if item.truth]
    if not scored:
        return {"scored": 0, "note": "no human answers in this split: submit the submission file"}
    by_type: dict[str, list[float]] = {}
    for item, value in scored:
        by_type.setdefault(str(item.meta.get("answer_type")), []).append(value)
    return {"accuracy": mean(v for _, v in scored), "scored": len(scored),
            "by_answer_type": {k: mean(v) for k, v in sorted(by_type.items())}}


class VQAv2(Benchmark):
    name = "vqav2"

    def _split(self) -> str:
        return self.options.split or "test-dev2015"

    def settings(self):
        return {"split": self._split()}

    def items(self) -> list[Item]:
        split = self._split()
        path = self.data / f"v2_OpenEnded_mscoco_{split}_questions.json"
        data = read_json(path, "VQAv2 questions: {'questions': [...]}")
        if not isinstance(data, dict) or "questions" not in data:
            raise UserError(f"{path}: expected an object with 'questions' (VQAv2's questions file)")
        notes = self._annotations(split)
        folder = "test2015" if split.startswith("test") else split
        images = self.options.media or first_existing(self.data / folder, self.data / "images" / folder) \
            or self.data / folder
        items = []
        for number, q in enumerate(data["questions"]):
            fields(q, ("image_id", "question", "question_id"), path, f"question {number}")
            image = images / f"COCO_{folder}_{int(q['image_id']):012d}.jpg"
            note = notes.get(q["question_id"], {})
            items.append(Item(str(q["question_id"]), Source("image", str(image)), q["question"] + SHORT_ANSWER,
                              truth=[a["answer"] for a in note.get("answers", [])] or None,
                              meta={"answer_type": note.get("answer_type"), "question_id": q["question_id"]}))
        return items

    def _annotations(self, split: str) -> dict:
        path = self.data / f"v2_mscoco_{split}_annotations.json"
        if not path.is_file():
            return {}
        data = read_json(path, "VQAv2 annotations: {'annotations': [...]}")
        return {a["question_id"]: a for a in data.get("annotations", [])}

    def score(self, items, answers, verdicts):
        return _vqa_scores([(item, evalai_answer(rec["answer"])) for item, rec in answered(items, answers)])

    def outputs(self, items, answers, out):
        rows = [{"question_id": item.meta["question_id"], "answer": evalai_answer(rec["answer"])}
                for item, rec in answered(items, answers)]
        everything = self.data / "v2_OpenEnded_mscoco_test2015_questions.json"
        if self._split() == "test-dev2015" and everything.is_file():
            have = {row["question_id"] for row in rows}
            rows += [{"question_id": q["question_id"], "answer": ""}
                     for q in read_json(everything, "VQAv2 test2015 questions")["questions"]
                     if q["question_id"] not in have]
        (out / "vqav2_submission.json").write_text(json.dumps(rows), encoding="utf-8")
        return ["vqav2_submission.json"]


class VizWiz(Benchmark):
    name = "vizwiz"

    def _split(self) -> str:
        return self.options.split or "test"

    def settings(self):
        return {"split": self._split()}

    def items(self) -> list[Item]:
        split = self._split()
        path = self.data / f"{split}.json"
        rows = read_json(path, "VizWiz annotations: [{image, question, answers}]")
        if not isinstance(rows, list):
            raise UserError(f"{path}: expected a JSON list (VizWiz's annotation file)")
        images = self.options.media or self.data / split
        items = []
        for number, row in enumerate(rows):
            fields(row, ("image", "question"), path, f"entry {number}")
            human = [a["answer"] for a in row.get("answers") or []]
            items.append(Item(row["image"], Source("image", str(images / row["image"])), row["question"] + VIZWIZ,
                              truth=human or None,
                              meta={"answer_type": row.get("answer_type"), "answerable": row.get("answerable")}))
        return items

    def score(self, items, answers, verdicts):
        return _vqa_scores([(item, evalai_answer(rec["answer"])) for item, rec in answered(items, answers)])

    def outputs(self, items, answers, out):
        rows = [{"image": item.id, "answer": evalai_answer(rec["answer"])} for item, rec in answered(items, answers)]
        (out / "vizwiz_submission.json").write_text(json.dumps(rows), encoding="utf-8")
        return ["vizwiz_submission.json"]
