"""POPE: "Is there a <object> in the image?" on COCO val2014, in three splits.

Layout (``--data``): ``coco_pope_random.json``, ``coco_pope_popular.json``, ``coco_pope_adversarial.json``
as published (JSON Lines despite the name: ``{"question_id", "image", "text", "label"}``), here or in
``coco/``; the COCO images in ``val2014/`` (or ``--media``). Prompt: the question + "Answer the question
using a single word or phrase." Scores per split as LLaVA's ``eval_pope.py`` (first sentence; "no",
"No" or "not" means no): accuracy, precision, recall, F1, yes-ratio, and their means over the splits.
"""
from __future__ import annotations

from pathlib import Path

from evaluation.benchmarks.base import Benchmark, answered
from evaluation.benchmarks.prompts import SHORT_ANSWER
from evaluation.datafiles import fields, first_existing, read_json_or_lines
from evaluation.items import Item, Source
from evaluation.metrics import binary_metrics, mean
from evaluation.normalize import pope_label
from llamavid.errors import UserError

SPLITS = ("random", "popular", "adversarial")


class POPE(Benchmark):
    name = "pope"

    def _files(self) -> list[tuple[str, Path]]:
        found = []
        for split in SPLITS:
            path = first_existing(self.data / f"coco_pope_{split}.json", self.data / "coco" / f"coco_pope_{split}.json")
            if path is not None:
                found.append((split, path))
        if not found:
            raise UserError(f"{self.data}: no coco_pope_<split>.json files here or in coco/")
        return found

    def items(self) -> list[Item]:
        images = self.options.media or first_existing(self.data / "val2014", self.data.parent / "val2014") \
            or self.data / "val2014"
        items = []
        for split, path in self._files():
            for number, row in enumerate(read_json_or_lines(path, "POPE questions"), start=1):
                fields(row, ("question_id", "image", "text", "label"), path, f"line {number}")
                items.append(Item(f"{split}/{row['question_id']}", Source("image", str(Path(images) / row["image"])),
                                  row["text"] + SHORT_ANSWER, truth=str(row["label"]).lower(), meta={"split": split}))
        return items

    def score(self, items, answers, verdicts):
        done = answered(items, answers)
        splits = {}
        for split in SPLITS:
            rows = [(item, rec) for item, rec in done if item.meta["split"] == split]
            if rows:
                splits[split] = binary_metrics([pope_label(rec["answer"]) for _, rec in rows],
                                               [item.truth for item, _ in rows])
        return {"f1": mean(s["f1"] for s in splits.values()),
                "accuracy": mean(s["accuracy"] for s in splits.values()), "splits": splits}
