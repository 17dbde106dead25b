"""MME: yes/no questions, two per image, in 14 subtasks; perception and cognition scores.

Layout (``--data``): ``MME_Benchmark_release_version`` as released: one folder per subtask, each with
images and ``<image stem>.txt`` files of two ``question<TAB>answer`` lines, either side by side or in
``images/`` and ``questions_answers_YN/`` (artwork, celebrity, landmark, posters, scene). Prompt: the
question + "Answer the question using a single word or phrase." (LLaVA's ``llava_mme.jsonl``).

Scores as MME's ``eval_tool/calculation.py``: per subtask acc (questions) + acc+ (images with both
right), perception = the sum over its 10 subtasks (max 2000), cognition over its 4 (max 800). Writes
``mme_results/<subtask>.txt`` (``image<TAB>question<TAB>answer<TAB>prediction``), the eval tool's input.
"""
from __future__ import annotations

from pathlib import Path

from evaluation.benchmarks.base import Benchmark, answered
from evaluation.benchmarks.prompts import SHORT_ANSWER
from evaluation.datafiles import IMAGE_SUFFIXES, find_with_suffix
from evaluation.items import Item, Source
from evaluation.metrics import acc_plus
from evaluation.normalize import mme_label
from llamavid.errors import UserError

PERCEPTION = ("existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark", "artwork", "OCR")
COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")


class MME(Benchmark):
    name = "mme"

    def _root(self) -> Path:
        for root in (self.data, self.data / "MME_Benchmark_release_version", self.data / "MME_Benchmark"):
            if any((root / task).is_dir() for task in PERCEPTION + COGNITION):
                return root
        raise UserError(f"{self.data}: no MME subtask folders (existence, count, OCR...) here; "
                        "--data should be MME_Benchmark_release_version")

    def items(self) -> list[Item]:
        root, items = self._root(), []
        for task in PERCEPTION + COGNITION:
            folder = root / task
            if not folder.is_dir():
                continue
            texts = folder / "questions_answers_YN"
            images = folder / "images" if texts.is_dir() else folder
            texts = texts if texts.is_dir() else folder
            for txt in sorted(texts.glob("*.txt")):
                image = find_with_suffix(images, txt.stem, IMAGE_SUFFIXES)
                if image is None:
                    raise UserError(f"{txt}: no image named {txt.stem}.* in {images}")
                items += self._questions(task, txt, image)
        if not items:
            raise UserError(f"{root}: no question files (.txt) in the subtask folders")
        return items

    def _questions(self, task: str, txt: Path, image: Path) -> list[Item]:
        out = []
        lines = [line for line in txt.read_text(encoding="utf-8").splitlines() if line.strip()]
        for number, line in enumerate(lines):
            question, sep, answer = line.rpartition("\t")
            if not sep or answer.strip().lower() not in ("yes", "no"):
                raise UserError(f"{txt}:{number + 1}: expected 'question<TAB>Yes' or 'question<TAB>No'")
            out.append(Item(f"{task}/{image.name}/{number}", Source("image", str(image)), question + SHORT_ANSWER,
                            truth=answer.strip().lower(),
                            meta={"task": task, "image": image.name, "question": question, "gt": answer.strip()}))
        return out

    def score(self, items, answers, verdicts):
        per_image: dict[tuple[str, str], list[bool]] = {}
        for item, rec in answered(items, answers):
            key = (item.meta["task"], item.meta["image"])
            per_image.setdefault(key, []).append(mme_label(rec["answer"]) == item.truth)
        tasks: dict[str, dict] = {}
        for task in PERCEPTION + COGNITION:
            pairs = [flags for (t, _), flags in per_image.items() if t == task]
            if pairs:
                tasks[task] = acc_plus(pairs)
        perception = sum(tasks[t]["score"] for t in PERCEPTION if t in tasks)
        cognition = sum(tasks[t]["score"] for t in COGNITION if t in tasks)
        return {"perception": perception, "cognition": cognition, "total": perception + cognition,
                "tasks": tasks, "tasks_missing": [t for t in PERCEPTION + COGNITION if t not in tasks]}

    def outputs(self, items, answers, out):
        folder = out / "mme_results"
        folder.mkdir(exist_ok=True)
        lines: dict[str, list[str]] = {}
        for item, rec in answered(items, answers):
            pred = rec["answer"].replace("\t", " ").replace("\n", " ")
            lines.setdefault(item.meta["task"], []).append(
                f"{item.meta['image']}\t{item.meta['question']}\t{item.meta['gt']}\t{pred}")
        for task, rows in lines.items():
            (folder / f"{task}.txt").write_text("\n".join(rows) + "\n", encoding="utf-8")
        return [f"mme_results/{task}.txt" for task in lines]
