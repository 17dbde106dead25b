"""The Video-ChatGPT benchmark: five judged scores (0-5) about the Video-ChatGPT test videos.

Layout (``--data``, Video-ChatGPT's ``evaluation`` folder): ``generic_qa.json`` and
``temporal_qa.json`` (``[{"Q", "A", "video_name"}]``), ``consistency_qa.json`` (``[{"Q1", "Q2", "A",
"video_name"}]``) and the videos in ``Test_Videos/<video_name>.*``.

Correctness, detail orientation and contextual understanding judge the generic answers, temporal
understanding the temporal ones, consistency the two answers to each pair of questions; each score is
the mean of the judge's integer scores, as ``evaluate_benchmark_{1..5}_*.py`` compute them (their
prompts, word for word, including the consistency prompt that shows the first question twice).
Writes the predictions in Video-ChatGPT's format: ``pred_generic.json``, ``pred_temporal.json``,
``pred_consistency.json``.
"""
from __future__ import annotations

import json
from pathlib import Path

from evaluation.benchmarks.base import Benchmark, answered
from evaluation.benchmarks.videoqa import video_source
from evaluation.datafiles import as_list, fields, read_json
from evaluation.items import Item
from evaluation.judge_prompts import VCG, messages
from evaluation.metrics import mean

CRITERIA = ("correctness", "detail", "context", "temporal", "consistency")


class VideoChatGPT(Benchmark):
    name = "vcg"
    max_new_tokens = 1024

    def _rows(self, name: str, keys: tuple[str, ...]) -> list[dict]:
        path = self.data / name
        rows = as_list(read_json(path, f"Video-ChatGPT questions: [{{{', '.join(keys)}}}]"), path, "questions")
        for number, row in enumerate(rows):
            fields(row, keys, path, f"entry {number}")
        return rows

    def items(self) -> list[Item]:
        folder = Path(self.options.media or self.data / "Test_Videos")
        items = []
        for part in ("generic", "temporal"):
            for i, row in enumerate(self._rows(f"{part}_qa.json", ("Q", "A", "video_name"))):
                items.append(Item(f"{part}/{i}", video_source(folder, row["video_name"]), row["Q"], truth=row["A"],
                                  meta={"part": part, "video_name": row["video_name"]}))
        for i, row in enumerate(self._rows("consistency_qa.json", ("Q1", "Q2", "A", "video_name"))):
            for n in (1, 2):
                items.append(Item(f"consistency/{i}/{n}", video_source(folder, row["video_name"]), row[f"Q{n}"],
                                  truth=row["A"], meta={"part": "consistency", "pair": i, "row": row}))
        return items

    def verdict_requests(self, items, answers):
        out = []
        for item, rec in answered(items, answers):
            part = item.meta["part"]
            if part == "generic":
                for criterion in ("correctness", "detail", "context"):
                    out.append((f"{criterion}/{item.id}", messages(*VCG[criterion], question=item.prompt,
                                                                   answer=item.truth, pred=rec["answer"])))
            elif part == "temporal":
                out.append((f"temporal/{item.id}", messages(*VCG["temporal"], question=item.prompt, answer=item.truth,
                                                            pred=rec["answer"])))
            elif item.id.endswith("/1") and item.id[:-1] + "2" in answers:
                row, second = item.meta["row"], answers[item.id[:-1] + "2"]
                out.append((f"consistency/{item.meta['pair']}", messages(
                    *VCG["consistency"], question1=row["Q1"], question2=row["Q1"], answer=row["A"],
                    pred1=rec["answer"], pred2=second["answer"])))
        return out

    def score(self, items, answers, verdicts):
        scores, judged = {}, {}
        for criterion in CRITERIA:
            values = [v["verdict"]["score"] for k, v in verdicts.items()
                      if k.startswith(criterion + "/") and v.get("verdict")]
            scores[criterion] = mean(values)
            judged[criterion] = len(values)
        return {**scores, "average": mean(scores.values()), "judged": judged,
                "unreadable_verdicts": sum(1 for v in verdicts.values() if not v.get("verdict"))}

    def outputs(self, items, answers, out):
        files = {}
        for item, rec in answered(items, answers):
            part = item.meta["part"]
            if part in ("generic", "temporal"):
                files.setdefault(part, []).append({"video_name": item.meta["video_name"], "Q": item.prompt,
                                                   "A": item.truth, "pred": rec["answer"]})
            elif item.id.endswith("/1") and item.id[:-1] + "2" in answers:
                files.setdefault(part, []).append({**item.meta["row"], "pred1": rec["answer"],
                                                   "pred2": answers[item.id[:-1] + "2"]["answer"]})
        for part, rows in files.items():
            (out / f"pred_{part}.json").write_text(json.dumps(rows, ensure_ascii=False, indent=1), encoding="utf-8")
        return [f"pred_{part}.json" for part in files]
