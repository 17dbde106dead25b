"""GQA, testdev-balanced: free answers scored by exact match after GQA's normalisation.

Layout (``--data``): ``testdev_balanced_questions.json`` (``{question id: {"imageId", "question",
"answer", "types": {"structural", "semantic"}}}``, as GQA publishes it) and ``images/<imageId>.jpg``.
Prompt: the question + "Answer the question using a single word or phrase." (LLaVA's
``llava_gqa_testdev_balanced.jsonl``). Writes ``testdev_balanced_predictions.json`` for GQA's
``eval.py`` (``[{"questionId", "prediction"}]``, lower case, trailing full stop removed).
"""
from __future__ import annotations

import json
from pathlib import Path

from evaluation.benchmarks.base import Benchmark, answered
from evaluation.benchmarks.prompts import SHORT_ANSWER
from evaluation.datafiles import IMAGE_SUFFIXES, fields, find_with_suffix, read_json
from evaluation.items import Item, Source
from evaluation.metrics import accuracy, accuracy_by
from evaluation.normalize import gqa_answer
from llamavid.errors import UserError

QUESTIONS = "testdev_balanced_questions.json"


class GQA(Benchmark):
    name = "gqa"

    def _questions_file(self) -> Path:
        return self.data if self.data.is_file() else self.data / QUESTIONS

    def items(self) -> list[Item]:
        path = self._questions_file()
        questions = read_json(path, "GQA questions: {id: {imageId, question, answer}}")
        if not isinstance(questions, dict):
            raise UserError(f"{path}: expected a JSON object keyed by question id (GQA's questions file)")
        images = self.options.media or path.parent / "images"
        items = []
        for qid, q in questions.items():
            fields(q, ("imageId", "question"), path, f"question {qid}")
            image = find_with_suffix(images, q["imageId"], IMAGE_SUFFIXES) or images / f"{q['imageId']}.jpg"
            types = q.get("types") or {}
            items.append(Item(str(qid), Source("image", str(image)), q["question"] + SHORT_ANSWER,
                              truth=q.get("answer"), meta={"structural": types.get("structural"),
                                                           "semantic": types.get("semantic")}))
        return items

    def score(self, items, answers, verdicts):
        rows = [(item, gqa_answer(rec["answer"])) for item, rec in answered(items, answers) if item.truth is not None]
        correct = [pred == item.truth for item, pred in rows]
        return {"accuracy": accuracy(correct), "scored": len(rows),
                "by_structural": accuracy_by(rows, lambda r: r[0].meta["structural"], lambda r: r[1] == r[0].truth),
                "by_semantic": accuracy_by(rows, lambda r: r[0].meta["semantic"], lambda r: r[1] == r[0].truth)}

    def outputs(self, items, answers, out):
        rows = [{"questionId": item.id, "prediction": gqa_answer(rec["answer"])}
                for item, rec in answered(items, answers)]
        (out / "testdev_balanced_predictions.json").write_text(json.dumps(rows), encoding="utf-8")
        return ["testdev_balanced_predictions.json"]
