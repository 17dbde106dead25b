"""``llamavid eval`` end to end with the tiny checkpoint: files written, resumption after an
interruption, a judged benchmark against a fake judge server, and films from the indexer."""
from __future__ import annotations

import json

import pytest

from cli import main
from evaluation.records import AnswerLog
from tests.support import benchmark_data as fx

pytestmark = pytest.mark.slow


def run_eval(capsys, data_dir, *args):
    capsys.readouterr()
    code = main(["--data-dir", str(data_dir), "eval", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


def model_args(checkpoint, *extra):
    return ["-m", checkpoint, "--device", "cpu", "--dtype", "fp32", *extra]


def without_timing(path):
    """The results less what differs between two runs by nature: the timing and each run's start date."""
    results = json.loads(path.read_text())
    results.pop("timing")
    results["run"].pop("date")
    return results


def answers_of(folder):
    records = AnswerLog(folder / "answers.jsonl").records
    return {k: {f: v for f, v in r.items() if f != "seconds"} for k, r in records.items()}


def test_an_interrupted_run_resumes_to_the_same_results(tiny_checkpoint, tmp_path, capsys, monkeypatch):
    data = fx.gqa(tmp_path / "gqa")
    args = ["gqa", "--data", data, *model_args(tiny_checkpoint, "--max-new-tokens", "4")]
    code, out, err = run_eval(capsys, tmp_path / "d", *args, "--out", tmp_path / "straight")
    assert code == 0, err
    assert "| accuracy |" in out and (tmp_path / "straight" / "results.md").read_text() == out
    written = {"n": 0}
    original = AnswerLog.append

    def append_then_stop(self, record):
        original(self, record)
        written["n"] += 1
        if written["n"] == 2:
            raise KeyboardInterrupt  # Ctrl-C right after the second answer is on disk

    monkeypatch.setattr(AnswerLog, "append", append_then_stop)
    code, _, err = run_eval(capsys, tmp_path / "d", *args, "--out", tmp_path / "resumed")
    assert code == 130 and "run the same command again to resume" in err
    assert len(AnswerLog(tmp_path / "resumed" / "answers.jsonl")) == 2
    assert not (tmp_path / "resumed" / "results.json").exists()
    started = json.loads((tmp_path / "resumed" / "run.json").read_text())["started"]
    monkeypatch.setattr(AnswerLog, "append", original)
    code, _, err = run_eval(capsys, tmp_path / "d", *args, "--out", tmp_path / "resumed")
    assert code == 0, err
    assert written["n"] == 2  # the resumed run answered only the third item
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert answers_of(resumed) == answers_of(straight)
    assert without_timing(resumed / "results.json") == without_timing(straight / "results.json")
    assert json.loads((resumed / "results.json").read_text())["run"]["date"] == started  # the first start
    name = "testdev_balanced_predictions.json"
    assert (resumed / name).read_bytes() == (straight / name).read_bytes()
    code, out, _ = run_eval(capsys, tmp_path / "d", "compare", straight, resumed)
    assert code == 0 and "| accuracy |" in out and "+0.00" in out


def test_a_run_folder_is_not_mixed_with_another_setup(tiny_checkpoint, tmp_path, capsys):
    data = fx.gqa(tmp_path / "gqa")
    base = ["gqa", "--data", data, *model_args(tiny_checkpoint), "--out", tmp_path / "run", "--limit", "1"]
    assert run_eval(capsys, tmp_path / "d", *base, "--max-new-tokens", "2")[0] == 0
    code, _, err = run_eval(capsys, tmp_path / "d", *base, "--max-new-tokens", "3")
    assert code == 1 and "holds a run with other settings (max_new_tokens)" in err
    assert run_eval(capsys, tmp_path / "d", *base, "--max-new-tokens", "3", "--restart")[0] == 0


def test_missing_images_are_named_before_anything_is_answered(tiny_checkpoint, tmp_path, capsys):
    data = fx.gqa(tmp_path / "gqa")
    (data / "images" / "n1.jpg").unlink()
    code, _, err = run_eval(capsys, tmp_path / "d", "gqa", "--data", data, *model_args(tiny_checkpoint),
                            "--out", tmp_path / "run")
    assert code == 1 and "1 of the benchmark's files cannot be read" in err and "n1.jpg" in err
    assert not (tmp_path / "run" / "answers.jsonl").exists()


def test_mmbench_and_mme_runs_write_their_submission_files(tiny_checkpoint, tmp_path, capsys):
    tsv = fx.mmbench(tmp_path / "mmbench_dev_20230712.tsv")
    code, _, err = run_eval(capsys, tmp_path / "d", "mmbench", "--data", tsv, *model_args(tiny_checkpoint),
                            "--out", tmp_path / "mmb")
    assert code == 0, err
    results = json.loads((tmp_path / "mmb" / "results.json").read_text())
    records = AnswerLog(tmp_path / "mmb" / "answers.jsonl").records
    right = [records["0"]["choice"] == "A", records["1"]["choice"] == "B"]
    assert results["scores"]["accuracy"] == 50.0 * sum(right)
    assert set(records["0"]["letter_scores"]) == {"A", "B", "C", "D"}
    assert set(records["1"]["letter_scores"]) == {"A", "B"}
    assert results["files"] == ["mmbench_submission.xlsx"]
    mme = fx.mme(tmp_path / "MME")
    code, _, err = run_eval(capsys, tmp_path / "d", "mme", "--data", mme, *model_args(tiny_checkpoint),
                            "--max-new-tokens", "3", "--out", tmp_path / "mme")
    assert code == 0, err
    assert (tmp_path / "mme" / "mme_results" / "artwork.txt").read_text().count("\n") == 2


def test_judged_video_qa_against_a_judge_server_and_its_cache(tiny_checkpoint, tmp_path, capsys, judge_server):
    judge_server.replies = {"alpha": "{'pred': 'yes', 'score': 4}", "beta": "{'pred': 'no', 'score': 1}",
                            "gamma": "I would rather not say."}
    data = fx.msvd(tmp_path / "msvd")
    args = ["msvd", "--data", data, *model_args(tiny_checkpoint, "--max-new-tokens", "5"), "--judge-url",
            judge_server.url, "--judge-model", "my-judge", "--judge-key-env", "NO_SUCH_KEY_VAR"]
    code, _, err = run_eval(capsys, tmp_path / "d", *args, "--out", tmp_path / "run")
    assert code == 0, err
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    # alpha: yes/4, beta: no/1, gamma: unreadable -> accuracy 1 / (1 + 1), score (4 + 1) / 2
    assert results["scores"]["accuracy"] == 50.0 and results["scores"]["score"] == 2.5
    assert results["scores"]["unreadable_verdicts"] == 1 and results["scores"]["judged"] == 2
    judge = results["judge"]
    assert (judge["model"], judge["versions"], judge["base_url"]) == ("my-judge", ["fake-judge-0613"], judge_server.url)
    assert "Correct Answer: {answer}" in judge["prompts"]["qa"]["user"]
    assert len(judge_server.requests) == 3 and judge_server.requests[0]["model"] == "my-judge"
    preds = json.loads((tmp_path / "run" / "predictions.json").read_text())
    assert [p["answer"] for p in preds] == ["running", "a man", "a cup"]
    code, _, err = run_eval(capsys, tmp_path / "d", *args, "--out", tmp_path / "again")
    assert code == 0, err
    assert len(judge_server.requests) == 3  # same answers, same prompts: every reply came from the cache
    again = json.loads((tmp_path / "again" / "results.json").read_text())
    assert again["scores"] == results["scores"] and again["timing"]["judge_replies_cached"] == 3


def test_video_chatgpt_run_gets_five_scores(tiny_checkpoint, tmp_path, capsys, judge_server):
    judge_server.default = "{'score': 3}"
    judge_server.replies = {"Question 1:": "{'score': 1}"}
    data = fx.vcg(tmp_path / "vcg")
    code, _, err = run_eval(capsys, tmp_path / "d", "vcg", "--data", data, *model_args(tiny_checkpoint),
                            "--max-new-tokens", "3", "--judge-url", judge_server.url, "--judge-model", "j",
                            "--out", tmp_path / "run")
    assert code == 0, err
    scores = json.loads((tmp_path / "run" / "results.json").read_text())["scores"]
    assert [scores[c] for c in ("correctness", "detail", "context", "temporal", "consistency")] == [3, 3, 3, 3, 1]
    assert len(judge_server.requests) == 8


def test_videomme_films_from_the_indexer_with_and_without_subtitles(tiny_checkpoint, tmp_path, capsys):
    data = fx.videomme(tmp_path / "Video-MME")
    code, out, err = run_eval(capsys, tmp_path / "d", "videomme", "--data", data, *model_args(tiny_checkpoint),
                              "--index", "--vision", tiny_checkpoint / "eva_vit_g.pth", "--out", tmp_path / "run")
    assert code == 0, err
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    records = AnswerLog(tmp_path / "run" / "answers.jsonl").records
    assert sorted(records) == ["001-1@nosubs", "001-1@subs", "001-2@nosubs", "001-2@subs", "002-1@nosubs",
                               "002-1@subs"]
    assert records["001-1@subs"]["frames"] == 4 and records["002-1@subs"]["frames"] == 3
    truth = {"001-1": "D", "001-2": "A", "002-1": "B"}
    for mode, suffix in (("with_subtitles", "subs"), ("without_subtitles", "nosubs")):
        right = [records[f"{q}@{suffix}"]["choice"] == t for q, t in truth.items()]
        scores = results["scores"][mode]
        assert scores["accuracy"] == pytest.approx(100 * sum(right) / 3)
        assert scores["by_duration"]["long"] == 100.0 * right[2]
    assert results["files"] == ["videomme_with_subtitles.json", "videomme_without_subtitles.json"]
    assert "with_subtitles.by_duration.short" in out
    code, _, err = run_eval(capsys, tmp_path / "d2", "videomme", "--data", data, *model_args(tiny_checkpoint),
                            "--out", tmp_path / "run2")
    assert code == 1 and "2 of the benchmark's films cannot be read" in err and "--index" in err


def test_fast_film_mode_answers_each_question_as_if_it_were_the_only_follow_up(tiny_checkpoint, tmp_path, capsys):
    """Fast mode: the film read once with the neutral turn, every question a follow-up whose turn is cut
    back afterwards; an item answered alone (its line removed, the run resumed) scores exactly as it did
    after the others, and `eval compare` reports how often the two modes agree."""
    data = fx.videomme(tmp_path / "Video-MME")
    common = ("--data", data, *model_args(tiny_checkpoint))
    code, _, err = run_eval(capsys, tmp_path / "d", "videomme", *common, "--index", "--vision",
                            tiny_checkpoint / "eva_vit_g.pth", "--out", tmp_path / "exact")
    assert code == 0, err
    code, _, err = run_eval(capsys, tmp_path / "d", "videomme", *common, "--film-mode", "fast",
                            "--out", tmp_path / "fast")
    assert code == 0, err
    exact = AnswerLog(tmp_path / "exact" / "answers.jsonl").records
    fast = AnswerLog(tmp_path / "fast" / "answers.jsonl").records
    assert sorted(fast) == sorted(exact) and {r["film_mode"] for r in fast.values()} == {"fast"}
    assert fast["001-2@subs"]["letter_scores"] != exact["001-2@subs"]["letter_scores"]  # other conditioning
    log = tmp_path / "fast" / "answers.jsonl"
    lines = [line for line in log.read_text().splitlines() if '"001-2@subs"' not in line]
    log.write_text("\n".join(lines) + "\n")
    code, _, err = run_eval(capsys, tmp_path / "d", "videomme", *common, "--film-mode", "fast",
                            "--out", tmp_path / "fast")
    assert code == 0, err
    again = AnswerLog(log).records["001-2@subs"]
    assert again["letter_scores"] == fast["001-2@subs"]["letter_scores"]
    code, out, _ = run_eval(capsys, tmp_path / "d", "compare", tmp_path / "exact", tmp_path / "fast")
    same = sum(exact[k]["choice"] == fast[k]["choice"] for k in exact)
    assert code == 0 and f"The same answer on {same} of 6 items" in out
