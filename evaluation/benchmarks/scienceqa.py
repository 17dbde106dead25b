"""ScienceQA: multiple choice with and without an image; the paper reports the image questions.

Layout (``--data``): ``problems.json`` and ``pid_splits.json`` as published, images at
``<split>/<pid>/<image>`` (or ``images/<split>/...``). Prompt as the reference's
``convert_sqa_to_llava.py`` (format CQM-A) and ``model_vqa_science.py --single-pred-prompt`` build it:
``Context: <hint or N/A>\\nQuestion: <q>\\nOptions: (A) .. (B) ..`` + "Answer with the option's letter from
the given choices directly." Questions without an image are asked without one.
"""
from __future__ import annotations

from pathlib import Path

from evaluation.benchmarks.base import Benchmark, answered
from evaluation.benchmarks.prompts import LETTER_ANSWER
from evaluation.datafiles import fields, first_existing, read_json
from evaluation.items import LETTERS, Item, Source, letters_for
from evaluation.metrics import accuracy, accuracy_by
from llamavid.errors import UserError


class ScienceQA(Benchmark):
    name = "sqa"

    def _split(self) -> str:
        return self.options.split or "test"

    def settings(self):
        return {"split": self._split()}

    def items(self) -> list[Item]:
        problems = read_json(self.data / "problems.json", "ScienceQA problems: {pid: {...}}")
        splits = read_json(self.data / "pid_splits.json", "ScienceQA splits: {split: [pid, ...]}")
        split = self._split()
        if split not in splits:
            raise UserError(f"{self.data / 'pid_splits.json'}: no split {split!r} (has {', '.join(splits)})")
        images = first_existing(self.data / split, self.data / "images" / split) or self.data / split
        items = []
        for pid in splits[split]:
            p = problems.get(pid)
            fields(p, ("question", "choices", "answer"), self.data / "problems.json", f"problem {pid}")
            choices = " ".join(f"({LETTERS[i]}) {c}" for i, c in enumerate(p["choices"]))
            context = (p.get("hint") or "").strip() or "N/A"
            prompt = f"Context: {context}\nQuestion: {p['question']}\nOptions: {choices}" + LETTER_ANSWER
            source = Source("image", str(Path(images) / pid / p["image"])) if p.get("image") else Source("none", pid)
            items.append(Item(str(pid), source, prompt, letters=letters_for(len(p["choices"])),
                              truth=LETTERS[int(p["answer"])],
                              meta={"image": bool(p.get("image")), "subject": p.get("subject", "unknown")}))
        return items

    def score(self, items, answers, verdicts):
        rows = [(item, rec["choice"]) for item, rec in answered(items, answers)]

        def right(r):
            return r[1] == r[0].truth

        return {"image_accuracy": accuracy(right(r) for r in rows if r[0].meta["image"]),
                "accuracy": accuracy(right(r) for r in rows),
                "no_image_accuracy": accuracy(right(r) for r in rows if not r[0].meta["image"]),
                "by_subject": accuracy_by(rows, lambda r: r[0].meta["subject"], right), "scored": len(rows)}
