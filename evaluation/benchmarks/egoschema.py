"""EgoSchema: five-option questions on three-minute egocentric clips (no subtitles).

Layout (``--data``): ``questions.json`` (``[{"q_uid", "question", "option 0".."option 4"}]``),
``subset_answers.json`` (``{q_uid: 0-4}``, the public 500-question subset) and the clips in
``videos/<q_uid>.mp4``. Prompt as lmms-eval's: question, ``A. ...`` lines, "Answer with the option's
letter from the given choices directly." Scores on the subset; writes ``egoschema_submission.csv``
(``q_uid,answer`` with the option number), the form EgoSchema's server takes for the full set.
"""
from __future__ import annotations

from pathlib import Path

from evaluation.benchmarks.base import answered
from evaluation.benchmarks.longvideo import FilmBenchmark
from evaluation.benchmarks.prompts import LETTER_ANSWER
from evaluation.datafiles import VIDEO_SUFFIXES, as_list, fields, find_with_suffix, first_existing, read_json
from evaluation.items import LETTERS, Item, letters_for, option_lines


class EgoSchema(FilmBenchmark):
    name = "egoschema"
    has_subtitles = False

    def video_folders(self) -> list[Path]:
        return [Path(self.options.media or first_existing(self.data / "videos", self.data / "good_clips_git")
                     or self.data / "videos")]

    def items(self) -> list[Item]:
        path = self.data / "questions.json"
        rows = as_list(read_json(path, "EgoSchema questions"), path, "EgoSchema questions")
        answers_file = self.data / "subset_answers.json"
        truths = read_json(answers_file, "{q_uid: answer number}") if answers_file.is_file() else {}
        folder = self.video_folders()[0]
        items = []
        for number, row in enumerate(rows):
            fields(row, ("q_uid", "question", "option 0", "option 1"), path, f"entry {number}")
            options = [row[f"option {i}"] for i in range(10) if f"option {i}" in row]
            video = find_with_suffix(folder, row["q_uid"], VIDEO_SUFFIXES) or folder / f"{row['q_uid']}.mp4"
            truth = LETTERS[int(truths[row["q_uid"]])] if row["q_uid"] in truths else None
            prompt = row["question"] + "\n" + option_lines(options) + LETTER_ANSWER
            items += self.question_items(row["q_uid"], video, prompt, letters_for(len(options)), truth,
                                         {"q_uid": row["q_uid"]})
        return items

    def score(self, items, answers, verdicts):
        return self.film_scores(items, answers)

    def outputs(self, items, answers, out):
        lines = ["q_uid,answer"] + [f"{item.meta['q_uid']},{LETTERS.index(rec['choice'])}"
                                    for item, rec in answered(items, answers)]
        (out / "egoschema_submission.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
        return ["egoschema_submission.csv"]
