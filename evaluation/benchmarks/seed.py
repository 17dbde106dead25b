"""SEED-Bench (image part): four-option multiple choice, by question type.

Layout (``--data``): ``SEED-Bench.json`` as published (``{"question_type": {name: id}, "questions":
[{"question_id", "question", "choice_a".."choice_d", "answer", "data_id", "data_type",
"question_type_id"}]}``) and the images in ``SEED-Bench-image/<data_id>``. Video questions are left out
(the paper reports the image part). Prompt: question + ``A. ...`` lines + "Answer with the option's
letter from the given choices directly." Writes ``seed_submission.jsonl`` (``{"question_id", "prediction"}``).
"""
from __future__ import annotations

import json

from evaluation.benchmarks.base import Benchmark, answered
from evaluation.benchmarks.prompts import LETTER_ANSWER
from evaluation.datafiles import fields, read_json
from evaluation.items import Item, Source, option_lines
from evaluation.metrics import accuracy, accuracy_by
from llamavid.errors import UserError

QUESTIONS = "SEED-Bench.json"


class SEED(Benchmark):
    name = "seed"

    def items(self) -> list[Item]:
        path = self.data if self.data.is_file() else self.data / QUESTIONS
        data = read_json(path, "SEED-Bench questions")
        if not isinstance(data, dict) or "questions" not in data:
            raise UserError(f"{path}: expected an object with 'questions' (SEED-Bench.json)")
        names = {int(v): k for k, v in (data.get("question_type") or {}).items()}
        images = self.options.media or path.parent / "SEED-Bench-image"
        items = []
        for number, q in enumerate(data["questions"]):
            fields(q, ("question_id", "question", "choice_a", "choice_b", "choice_c", "choice_d", "data_id"), path,
                   f"question {number}")
            if q.get("data_type", "image") != "image":
                continue
            choices = [q[f"choice_{c}"] for c in "abcd"]
            prompt = q["question"] + "\n" + option_lines(choices) + LETTER_ANSWER
            kind = q.get("question_type_id")
            items.append(Item(str(q["question_id"]), Source("image", str(images / q["data_id"])), prompt,
                              letters=("A", "B", "C", "D"), truth=q.get("answer"),
                              meta={"type": names.get(int(kind), str(kind)) if kind is not None else "unknown"}))
        return items

    def score(self, items, answers, verdicts):
        rows = [(item, rec["choice"]) for item, rec in answered(items, answers) if item.truth]

        def right(r):
            return r[1] == r[0].truth

        return {"accuracy": accuracy(right(r) for r in rows), "scored": len(rows),
                "by_type": accuracy_by(rows, lambda r: r[0].meta["type"], right)}

    def outputs(self, items, answers, out):
        lines = [json.dumps({"question_id": item.id, "prediction": rec["choice"]})
                 for item, rec in answered(items, answers)]
        (out / "seed_submission.jsonl").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        return ["seed_submission.jsonl"]
