"""``llamavid eval`` with either model family: the tiny LLaMA-VID and the tiny Qwen3-VL answer the same
items through the same runner into the same files, and ``eval compare`` reports each run's accuracy,
their agreement and each one's time per item, checked against figures computed here from the records."""
from __future__ import annotations

import json

import pytest

from evaluation.records import AnswerLog
from tests.evaluation.test_runs import model_args, run_eval
from tests.support import benchmark_data as fx
from tests.support.qwen_vl import tiny_qwen_vl

pytestmark = pytest.mark.slow

VIDEOMME_TRUTH = {"001-1": "D", "001-2": "A", "002-1": "B"}


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    return tiny_qwen_vl(tmp_path_factory)


def results_of(folder):
    return json.loads((folder / "results.json").read_text())


def table_row(out: str, label: str) -> list[str]:
    """The cells of the summary table's row ``label`` (the first table ``eval compare`` prints)."""
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == label:
            return cells[1:]
    raise AssertionError(f"no row {label!r} in:\n{out}")


def test_both_families_answer_the_same_library_films_and_compare_reports_the_three_figures(
        tiny_checkpoint, qwen, tmp_path, capsys):
    data = fx.videomme(tmp_path / "Video-MME")
    runs = {"llama": tmp_path / "llama", "qwen": tmp_path / "qwen"}
    code, _, err = run_eval(capsys, tmp_path / "d", "videomme", "--data", data, *model_args(tiny_checkpoint),
                            "--index", "--vision", tiny_checkpoint / "eva_vit_g.pth", "--out", runs["llama"])
    assert code == 0, err
    code, out, err = run_eval(capsys, tmp_path / "d", "videomme", "--data", data, *model_args(qwen),
                              "--out", runs["qwen"])
    assert code == 0, err
    assert "| family | qwen-vl |" in out
    records = {name: AnswerLog(folder / "answers.jsonl").records for name, folder in runs.items()}
    assert sorted(records["qwen"]) == sorted(records["llama"])  # the same items
    assert all(set(r) >= {"choice", "letter_scores", "seconds", "frames"} for r in records["qwen"].values())
    # a 4 s and a 3 s film at Qwen's 2 frames a second: the plan's 8 and 6 frames, decoded by seeking
    assert records["qwen"]["001-1@subs"]["frames"] == 8 and records["qwen"]["002-1@subs"]["frames"] == 6
    assert results_of(runs["qwen"])["run"]["family"] == "qwen-vl"
    assert results_of(runs["llama"])["run"]["family"] == "llama-vid"

    code, out, _ = run_eval(capsys, tmp_path / "d", "compare", runs["llama"], runs["qwen"])
    assert code == 0
    assert table_row(out, "family") == ["llama-vid", "qwen-vl"]
    for mode, suffix in (("with_subtitles", "subs"), ("without_subtitles", "nosubs")):
        expected = [100 * sum(records[name][f"{q}@{suffix}"]["choice"] == t for q, t in VIDEOMME_TRUTH.items()) / 3
                    for name in ("llama", "qwen")]
        assert table_row(out, f"{mode}.accuracy (%)") == [f"{v:.2f}" for v in expected]
    seconds = [sum(r["seconds"] for r in records[name].values()) / 6 for name in ("llama", "qwen")]
    assert table_row(out, "seconds per item") == [f"{round(s, 4):.4f}" for s in seconds]
    same = sum(records["llama"][k]["choice"] == records["qwen"][k]["choice"] for k in records["llama"])
    assert f"Agreement: {same} of 6 items ({100 * same / 6:.1f} %) scored alike" in out


def test_qwen_answers_image_items_with_the_same_scoring_and_refuses_the_fast_film_mode(qwen, tmp_path, capsys):
    tsv = fx.mmbench(tmp_path / "mmbench_dev_20230712.tsv")
    code, _, err = run_eval(capsys, tmp_path / "d", "mmbench", "--data", tsv, *model_args(qwen), "--out",
                            tmp_path / "mmb")
    assert code == 0, err
    results = results_of(tmp_path / "mmb")
    records = AnswerLog(tmp_path / "mmb" / "answers.jsonl").records
    assert set(records["0"]["letter_scores"]) == {"A", "B", "C", "D"}
    right = [records["0"]["choice"] == "A", records["1"]["choice"] == "B"]
    assert results["scores"]["accuracy"] == 50.0 * sum(right)
    data = fx.gqa(tmp_path / "gqa")
    code, _, err = run_eval(capsys, tmp_path / "d", "gqa", "--data", data, *model_args(qwen, "--max-new-tokens", "3"),
                            "--out", tmp_path / "gqa-run")
    assert code == 0, err
    answers = AnswerLog(tmp_path / "gqa-run" / "answers.jsonl").records
    assert sorted(answers) == ["q1", "q2", "q3"] and all(isinstance(r["answer"], str) for r in answers.values())
    video = fx.videomme(tmp_path / "Video-MME")
    code, _, err = run_eval(capsys, tmp_path / "d", "videomme", "--data", video, *model_args(qwen),
                            "--film-mode", "fast", "--out", tmp_path / "fast")
    assert code == 1 and "--film-mode exact" in err


def test_judged_clips_agree_where_the_verdicts_agree(tiny_checkpoint, qwen, tmp_path, capsys, judge_server):
    """Open answers are scored alike when the judge says the same of both, whatever their words: the
    judge here says yes to alpha and gamma for both runs, and to beta only for the second."""
    data = fx.msvd(tmp_path / "msvd")
    runs = {}
    for name, model, beta in (("llama", tiny_checkpoint, "no"), ("qwen", qwen, "yes")):
        judge_server.replies = {"alpha": "{'pred': 'yes', 'score': 4}", "beta": f"{{'pred': '{beta}', 'score': 3}}",
                                "gamma": "{'pred': 'yes', 'score': 5}"}
        runs[name] = tmp_path / name
        code, _, err = run_eval(capsys, tmp_path / "d", "msvd", "--data", data,
                                *model_args(model, "--max-new-tokens", "4"), "--judge-url", judge_server.url,
                                "--judge-model", "j", "--judge-cache", tmp_path / f"cache-{name}",
                                "--out", runs[name])
        assert code == 0, err
    qwen_records = AnswerLog(runs["qwen"] / "answers.jsonl").records
    assert sorted(qwen_records) == ["0", "1", "2"] and all("answer" in r for r in qwen_records.values())
    code, out, _ = run_eval(capsys, tmp_path / "d", "compare", runs["llama"], runs["qwen"])
    assert code == 0
    assert table_row(out, "accuracy (%)") == [f"{200 / 3:.2f}", "100.00"]  # yes on 2 of 3, then on 3 of 3
    assert "Agreement: 2 of 3 items (66.7 %) scored alike" in out
