"""MMBench (and MMBench-CN): multiple choice from a TSV with base64 images.

Layout (``--data``): the TSV as published (``mmbench_dev_20230712.tsv``; columns ``index, question,
hint, A, B, C, D, answer, category, l2-category, image, ...``; a folder holding one TSV works too).
Prompt as LLaVA's ``model_vqa_mmbench.py`` builds it: hint + question + ``A. ...`` lines + "Answer with
the option's letter from the given choices directly." (Chinese files: "请直接回答选项字母。").

Scores where the TSV has answers (dev): accuracy over the rows, and CircularEval accuracy where the TSV
carries the circularly shifted copies of a question (index + k * 1e6, grouped by index mod 1e6, right
only if every copy is right), by category. Writes ``mmbench_submission.xlsx``: the TSV's columns without
the image, plus ``prediction`` (what the MMBench server takes).
"""
from __future__ import annotations

from pathlib import Path

from openpyxl import Workbook

from evaluation.benchmarks.base import Benchmark, answered
from evaluation.benchmarks.prompts import LETTER_ANSWER, LETTER_ANSWER_CN
from evaluation.datafiles import fields, read_tsv
from evaluation.items import LETTERS, Item, Source, option_lines
from evaluation.metrics import accuracy, accuracy_by
from llamavid.errors import UserError

CIRCULAR = 1_000_000


def _value(cell: str | None) -> str:
    """A cell's text; pandas writes missing cells as "nan"."""
    text = (cell or "").strip()
    return "" if text.lower() in ("nan", "none") else text


def _number(index: str) -> int:
    try:
        return int(float(index))
    except ValueError:
        raise UserError(f"MMBench index {index!r} is not a number; is this MMBench's TSV?") from None


class MMBench(Benchmark):
    name = "mmbench"

    def _tsv(self) -> Path:
        if self.data.is_dir():
            found = sorted(self.data.glob("*.tsv"))
            if len(found) != 1:
                raise UserError(f"{self.data}: expected one MMBench .tsv in the folder, found {len(found)}; "
                                "give the file itself as --data")
            return found[0]
        return self.data

    def _lang(self, path: Path) -> str:
        return self.options.lang or ("cn" if "_cn" in path.name.lower() else "en")

    def settings(self):
        return {"lang": self._lang(self._tsv())}

    def items(self) -> list[Item]:
        path = self._tsv()
        rows = read_tsv(path, "MMBench questions")
        by_index = {row.get("index"): row for row in rows}
        suffix = LETTER_ANSWER_CN if self._lang(path) == "cn" else LETTER_ANSWER
        items = []
        for number, row in enumerate(rows, start=2):
            fields(row, ("index", "question", "image", "A", "B"), path, f"line {number}")
            image = _value(row["image"])
            if len(image) < 64 and image in by_index:  # a copy points at the row holding the picture
                image = _value(by_index[image]["image"])
            options = [(letter, _value(row.get(letter))) for letter in LETTERS[:9] if _value(row.get(letter))]
            hint = _value(row.get("hint"))
            question = (hint + "\n" if hint else "") + _value(row["question"])
            prompt = question + "\n" + option_lines([t for _, t in options]) + suffix
            items.append(Item(str(row["index"]), Source("image", f"{path.name}#{row['index']}", data=image), prompt,
                              letters=tuple(letter for letter, _ in options), truth=_value(row.get("answer")) or None,
                              meta={"category": _value(row.get("category")), "l2": _value(row.get("l2-category")),
                                    "row": {k: v for k, v in row.items() if k != "image"}}))
        return items

    def score(self, items, answers, verdicts):
        rows = [(item, rec["choice"]) for item, rec in answered(items, answers) if item.truth]
        if not rows:
            return {"scored": 0, "note": "no answers in the TSV (a test split): submit mmbench_submission.xlsx"}

        def right(r):
            return r[1] == r[0].truth

        circles: dict[int, list[bool]] = {}
        for row in rows:
            circles.setdefault(_number(row[0].id) % CIRCULAR, []).append(right(row))
        base = [r for r in rows if _number(r[0].id) < CIRCULAR]
        return {"accuracy": accuracy(right(r) for r in base), "scored": len(base),
                "circular_accuracy": accuracy(all(flags) for flags in circles.values()),
                "circular_questions": len(circles),
                "by_category": accuracy_by(base, lambda r: r[0].meta["category"], right),
                "by_l2_category": accuracy_by(base, lambda r: r[0].meta["l2"], right)}

    def outputs(self, items, answers, out):
        done = answered(items, answers)
        if not done:
            return []
        columns = [c for c in done[0][0].meta["row"]] + ["prediction"]
        book = Workbook()
        sheet = book.active
        sheet.append(columns)
        for item, rec in done:
            sheet.append([item.meta["row"].get(c, "") for c in columns[:-1]] + [rec["choice"]])
        book.save(out / "mmbench_submission.xlsx")
        return ["mmbench_submission.xlsx"]
