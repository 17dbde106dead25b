"""Each runner reads its benchmark's official files (written here in the published formats), and its
scores for hand-made answers equal values worked out by hand."""
from __future__ import annotations

import csv
import json

import pytest
from openpyxl import load_workbook

from evaluation.benchmarks import BENCHMARKS, Options
from evaluation.benchmarks.prompts import LETTER_ANSWER, SHORT_ANSWER
from tests.support import benchmark_data as fx


def bench(name, root, **options):
    return BENCHMARKS[name](root, Options(**options))


def texts(**answers):
    return {k: {"id": k, "answer": v} for k, v in answers.items()}


def choices(**answers):
    return {k: {"id": k, "choice": v} for k, v in answers.items()}


def test_gqa_exact_match_after_gqa_normalisation_and_its_predictions_file(tmp_path):
    b = bench("gqa", fx.gqa(tmp_path / "gqa"))
    items = b.items()
    assert [i.id for i in items] == ["q1", "q2", "q3"]
    assert items[0].prompt == "What color is the car?" + SHORT_ANSWER
    assert items[0].source.path.endswith("images/n0.jpg") and items[1].source.key == items[0].source.key
    answers = texts(q1="Red.", q2="yes", q3="blue")
    scores = b.score(items, answers, {})
    assert scores["accuracy"] == pytest.approx(200 / 3)
    assert scores["by_structural"] == {"query": 100.0, "verify": 0.0}
    assert scores["by_semantic"] == {"attr": 100.0, "obj": 0.0}
    assert b.outputs(items, answers, tmp_path) == ["testdev_balanced_predictions.json"]
    assert json.loads((tmp_path / "testdev_balanced_predictions.json").read_text()) == [
        {"questionId": "q1", "prediction": "red"}, {"questionId": "q2", "prediction": "yes"},
        {"questionId": "q3", "prediction": "blue"}]


def test_mmbench_prompt_circular_accuracy_and_xlsx_submission(tmp_path):
    b = bench("mmbench", fx.mmbench(tmp_path / "mmbench_dev_20230712.tsv"))
    items = b.items()
    assert items[0].prompt == ("A plain picture.\nWhat colour is it?\nA. red\nB. blue\nC. green\nD. yellow"
                               + LETTER_ANSWER)
    assert items[1].letters == ("A", "B") and "nan" not in items[1].prompt
    assert items[2].source.data == items[0].source.data  # the copy's image cell points at row 0
    answers = choices(**{"0": "A", "1": "A", "1000000": "A"})
    scores = b.score(items, answers, {})
    assert scores["accuracy"] == 50.0 and scores["scored"] == 2
    assert scores["circular_accuracy"] == 0.0 and scores["circular_questions"] == 2
    assert scores["by_category"] == {"color": 100.0, "count": 0.0}
    b.outputs(items, answers, tmp_path)
    sheet = load_workbook(tmp_path / "mmbench_submission.xlsx").active
    rows = list(sheet.values)
    assert rows[0][-1] == "prediction" and "image" not in rows[0]
    assert [r[0] for r in rows[1:]] == ["0", "1", "1000000"] and [r[-1] for r in rows[1:]] == ["A", "A", "A"]


def test_mmbench_chinese_file_gets_the_chinese_instruction(tmp_path):
    b = bench("mmbench", fx.mmbench(tmp_path / "mmbench_dev_cn_20231003.tsv"))
    assert b.items()[0].prompt.endswith("\n请直接回答选项字母。")


def test_mme_acc_plus_sums_and_eval_tool_files(tmp_path):
    b = bench("mme", fx.mme(tmp_path / "MME_Benchmark_release_version"))
    items = b.items()
    assert len(items) == 8 and items[0].truth == "yes" and items[1].truth == "no"
    assert any("artwork/images/a1.png" in i.source.path for i in items)
    got = {"existence/e1.png": ("Yes", "No, there is not."), "existence/e2.png": ("yes", "yes"),
           "artwork/a1.png": ("maybe", "no"), "code_reasoning/c1.png": ("Yes.", "No")}
    answers = texts(**{f"{k}/{n}": v[n] for k, v in got.items() for n in (0, 1)})
    scores = b.score(items, answers, {})
    assert scores["tasks"]["existence"] == {"acc": 75.0, "acc_plus": 50.0, "score": 125.0}
    assert scores["tasks"]["artwork"] == {"acc": 50.0, "acc_plus": 0.0, "score": 50.0}
    assert scores["perception"] == 175.0 and scores["cognition"] == 200.0 and scores["total"] == 375.0
    assert "OCR" in scores["tasks_missing"]
    b.outputs(items, answers, tmp_path)
    lines = (tmp_path / "mme_results" / "existence.txt").read_text().splitlines()
    assert lines[1] == "e1.png\tIs there no e1? Please answer yes or no.\tNo\tNo, there is not."


def test_pope_first_sentence_rule_and_binary_metrics_per_split(tmp_path):
    b = bench("pope", fx.pope(tmp_path / "pope"))
    items = b.items()
    assert [i.id for i in items[:2]] == ["random/1", "random/2"] and items[0].truth == "yes"
    answers = texts(**{"random/1": "Yes, there is a car.", "random/2": "No.", "random/3": "There is not a cup.",
                       "random/4": "Yes", **{f"adversarial/{n}": "Yes" for n in range(1, 5)}})
    scores = b.score(items, answers, {})
    rand, adv = scores["splits"]["random"], scores["splits"]["adversarial"]
    assert (rand["tp"], rand["fp"], rand["tn"], rand["fn"]) == (1, 1, 1, 1)
    assert rand["accuracy"] == rand["precision"] == rand["recall"] == rand["f1"] == rand["yes_ratio"] == 50.0
    assert adv["recall"] == 100.0 and adv["f1"] == pytest.approx(200 / 3) and adv["yes_ratio"] == 100.0
    assert scores["f1"] == pytest.approx((50 + 200 / 3) / 2) and scores["accuracy"] == 50.0


def test_seed_image_questions_by_type_and_submission(tmp_path):
    b = bench("seed", fx.seed(tmp_path / "seed"))
    items = b.items()
    assert [i.id for i in items] == ["101", "102", "103"]  # the video question is left out
    assert items[0].prompt == "What is shown?\nA. a cat\nB. a dog\nC. a car\nD. a cup" + LETTER_ANSWER
    answers = choices(**{"101": "A", "102": "B", "103": "D"})
    scores = b.score(items, answers, {})
    assert scores["accuracy"] == pytest.approx(200 / 3)
    assert scores["by_type"] == {"Instance Identity": 50.0, "Scene Understanding": 100.0}
    b.outputs(items, answers, tmp_path)
    lines = [json.loads(x) for x in (tmp_path / "seed_submission.jsonl").read_text().splitlines()]
    assert lines == [{"question_id": "101", "prediction": "A"}, {"question_id": "102", "prediction": "B"},
                     {"question_id": "103", "prediction": "D"}]


def test_scienceqa_cqm_prompt_text_only_questions_and_image_accuracy(tmp_path):
    b = bench("sqa", fx.sqa(tmp_path / "scienceqa"))
    items = b.items()
    assert [i.id for i in items] == ["11", "12", "13"]
    assert items[0].prompt == ("Context: Look.\nQuestion: Which is red?\nOptions: (A) left (B) right"
                               + LETTER_ANSWER)
    assert items[1].prompt.startswith("Context: N/A\n") and items[1].letters == ("A", "B", "C")
    assert items[2].source.kind == "none" and items[2].truth == "B"
    scores = b.score(items, choices(**{"11": "A", "12": "A", "13": "B"}), {})
    assert scores["image_accuracy"] == 50.0 and scores["no_image_accuracy"] == 100.0
    assert scores["accuracy"] == pytest.approx(200 / 3)
    assert scores["by_subject"] == {"language science": 100.0, "natural science": 50.0}


def test_vqav2_official_accuracy_with_normalisation_and_submission(tmp_path):
    b = bench("vqav2", fx.vqav2(tmp_path / "vqav2"), split="val2014")
    items = b.items()
    assert items[0].source.path.endswith("val2014/COCO_val2014_000000000007.jpg")
    answers = texts(**{"7001": "Two.", "9001": "dog"})
    scores = b.score(items, answers, {})
    # 7001: "two" -> "2", which 6 of 10 humans say: every leave-one-out subset has 3+ matches -> 1.0
    # 9001: 2 of 10 say dog -> (2 * 1/3 + 8 * 2/3) / 10 = 0.6
    assert scores["by_answer_type"] == {"number": 100.0, "other": pytest.approx(60.0)}
    assert scores["accuracy"] == pytest.approx(80.0)
    b.outputs(items, answers, tmp_path)
    assert json.loads((tmp_path / "vqav2_submission.json").read_text()) == [
        {"question_id": 7001, "answer": "2"}, {"question_id": 9001, "answer": "dog"}]


def test_vizwiz_val_accuracy_and_submission(tmp_path):
    b = bench("vizwiz", fx.vizwiz(tmp_path / "vizwiz"), split="val")
    items = b.items()
    assert items[0].prompt.endswith("respond with 'Unanswerable'.\nAnswer the question using a single word or phrase.")
    answers = texts(**{"VizWiz_val_00000000.jpg": "Soup", "VizWiz_val_00000001.jpg": "I don't know"})
    assert b.score(items, answers, {})["accuracy"] == 50.0
    b.outputs(items, answers, tmp_path)
    assert json.loads((tmp_path / "vizwiz_submission.json").read_text()) == [
        {"image": "VizWiz_val_00000000.jpg", "answer": "soup"},
        {"image": "VizWiz_val_00000001.jpg", "answer": "i don't know"}]


def verdicts(**replies):
    from evaluation.judge import parse_verdict

    return {k: {"id": k, "content": v, "model": "j", "verdict": parse_verdict(v)} for k, v in replies.items()}


def test_judged_qa_accuracy_is_the_yes_share_and_score_the_mean(tmp_path):
    b = bench("msvd", fx.msvd(tmp_path / "msvd"))
    items = b.items()
    assert items[0].source.path.endswith("video/vidA.avi") and items[0].prompt == "what is alpha doing?"
    answers = texts(**{"0": "running", "1": "a woman", "2": "a cup"})
    v = verdicts(**{"0": "{'pred': 'yes', 'score': 4}", "1": "{'pred': 'no', 'score': 1}",
                    "2": "Sure: {'pred': 'yes', 'score': 5.0}"})
    scores = b.score(items, answers, v)
    assert scores["accuracy"] == pytest.approx(200 / 3) and scores["score"] == pytest.approx(10 / 3)
    assert (scores["yes"], scores["no"], scores["judged"]) == (2, 1, 3)
    requests = b.verdict_requests(items, answers)
    assert [k for k, _ in requests] == ["0", "1", "2"]
    assert "Question: what is alpha doing?\nCorrect Answer: running\nPredicted Answer: running\n\n" in \
        requests[0][1][1]["content"]


def test_activitynet_pairs_questions_with_answers_and_v_prefixed_videos(tmp_path):
    items = bench("activitynet", fx.activitynet(tmp_path / "anet")).items()
    assert [(i.id, i.truth) for i in items] == [("v_abc_0", "dancing"), ("v_abc_1", "yes")]
    assert items[0].source.path.endswith("all_test/v_abc.mp4")


def test_video_chatgpt_five_scores_and_the_consistency_quirk(tmp_path):
    b = bench("vcg", fx.vcg(tmp_path / "vcg"))
    items = b.items()
    assert [i.id for i in items] == ["generic/0", "generic/1", "temporal/0", "consistency/0/1", "consistency/0/2"]
    answers = texts(**{i.id: f"answer {n}" for n, i in enumerate(items)})
    requests = dict(b.verdict_requests(items, answers))
    assert sorted(requests) == ["consistency/0", "context/generic/0", "context/generic/1", "correctness/generic/0",
                                "correctness/generic/1", "detail/generic/0", "detail/generic/1",
                                "temporal/temporal/0"]
    user = requests["consistency/0"][1]["content"]
    assert "Question 1: What is delta wearing?\nQuestion 2: What is delta wearing?\n" in user  # as the reference
    assert "Predicted Answer to Question 1: answer 3\nPredicted Answer to Question 2: answer 4" in user
    v = verdicts(**{"correctness/generic/0": "{'score': 4}", "correctness/generic/1": "{'score': 2}",
                    "detail/generic/0": "{'score': 3}", "detail/generic/1": "{''score': 3}",
                    "context/generic/0": "{'score': 5}", "context/generic/1": "{'score': 4}",
                    "temporal/temporal/0": "{'score': 1}", "consistency/0": "{'score': 2}"})
    scores = b.score(items, answers, v)
    assert (scores["correctness"], scores["detail"], scores["context"]) == (3.0, 3.0, 4.5)
    assert (scores["temporal"], scores["consistency"]) == (1.0, 2.0)
    assert scores["average"] == pytest.approx((3 + 3 + 4.5 + 1 + 2) / 5)
    b.outputs(items, answers, tmp_path)
    pair = json.loads((tmp_path / "pred_consistency.json").read_text())[0]
    assert (pair["pred1"], pair["pred2"], pair["Q2"]) == ("answer 3", "answer 4", "Describe the clothes in delta.")


def test_videomme_reads_parquet_asks_both_ways_and_scores_by_duration(tmp_path):
    b = bench("videomme", fx.videomme(tmp_path / "Video-MME"))
    items = b.items()
    assert [i.id for i in items][:2] == ["001-1@subs", "001-1@nosubs"]
    assert items[0].prompt.startswith("Select the best answer to the following multiple-choice question based on "
                                      "the video and the subtitles.")
    assert items[1].prompt.endswith("What colour?\nA. red\nB. blue\nC. green\nD. grey\nThe best answer is:")
    assert items[4].source.subtitle_file.endswith("subtitle/vidBBB.srt") and items[0].source.subtitle_file is None
    answers = choices(**{"001-1@subs": "D", "001-2@subs": "B", "002-1@subs": "B",
                         "001-1@nosubs": "A", "001-2@nosubs": "A", "002-1@nosubs": "A"})
    scores = b.score(items, answers, {})
    with_subs, without = scores["with_subtitles"], scores["without_subtitles"]
    assert with_subs["accuracy"] == pytest.approx(200 / 3) and without["accuracy"] == pytest.approx(100 / 3)
    assert with_subs["by_duration"] == {"long": 100.0, "short": 50.0}
    assert without["by_duration"] == {"long": 0.0, "short": 50.0}
    assert with_subs["by_task_type"] == {"Counting Problem": 100.0, "OCR Problems": 0.0}
    b.outputs(items, answers, tmp_path)
    videos = json.loads((tmp_path / "videomme_with_subtitles.json").read_text())
    assert [q["response"] for v in videos for q in v["questions"]] == ["D", "B", "B"]


def test_mlvu_letters_from_candidate_text_m_avg_and_buckets_by_duration(tmp_path):
    b = bench("mlvu", fx.mlvu(tmp_path / "MLVU"), subtitles="without")
    items = b.items()
    assert [i.id for i in items] == ["1_plotQA/0@nosubs", "1_plotQA/1@nosubs", "4_count/0@nosubs"]  # no summary
    assert items[0].truth == "B" and items[0].answer_prefix == "Best option: ("
    assert "Question: Who leaves?\nOptions:\n(A) Ann\n(B) Bob\n(C) Cid\nOnly give the best option." in items[0].prompt
    scores = b.score(items, choices(**{"1_plotQA/0@nosubs": "B", "1_plotQA/1@nosubs": "A",
                                       "4_count/0@nosubs": "C"}), {})["without_subtitles"]
    assert scores["by_task"] == {"count": 100.0, "plotQA": 50.0} and scores["m_avg"] == 75.0
    assert scores["accuracy"] == pytest.approx(200 / 3)
    assert scores["by_duration"] == {"long": 100.0, "medium": 50.0}  # 1200 s -> long, 200 s -> medium


def test_egoschema_subset_score_and_kaggle_csv(tmp_path):
    b = bench("egoschema", fx.egoschema(tmp_path / "egoschema"))
    items = b.items()
    assert [i.id for i in items] == ["uid-1@nosubs", "uid-2@nosubs"]  # no subtitles to ask with
    assert items[0].letters == ("A", "B", "C", "D", "E") and items[0].truth == "D" and items[1].truth is None
    answers = {**choices(**{"uid-1@nosubs": "D", "uid-2@nosubs": "B"})}
    answers["uid-1@nosubs"]["frames"] = 180
    scores = b.score(items, answers, {})["without_subtitles"]
    assert scores["accuracy"] == 100.0 and scores["scored"] == 1 and scores["by_duration"] == {"medium": 100.0}
    b.outputs(items, answers, tmp_path)
    rows = list(csv.reader((tmp_path / "egoschema_submission.csv").open()))
    assert rows == [["q_uid", "answer"], ["uid-1", "3"], ["uid-2", "1"]]


def test_longvideobench_subtitles_are_read_relative_to_the_clip(tmp_path):
    from evaluation.films import read_subtitles

    b = bench("longvideobench", fx.longvideobench(tmp_path / "lvb"))
    items = b.items()
    assert items[0].truth == "B" and items[0].source.subtitle_offset == 100.0
    cues = read_subtitles(tmp_path / "lvb" / "subtitles" / "abc_en.json", 100.0)
    assert [(c.start_time, c.end_time, c.text) for c in cues] == [(0.5, 1.5, "Look over there."),
                                                                  (2.0, 3.0, "It is late.")]
    scores = b.score(items, choices(**{"abc_0@subs": "B", "abc_0@nosubs": "A"}), {})
    assert scores["with_subtitles"]["by_duration_group"] == {"15": 100.0}
    assert scores["without_subtitles"]["accuracy"] == 0.0


def test_a_file_in_the_wrong_format_is_named_with_the_problem(tmp_path):
    from llamavid.errors import UserError

    (tmp_path / "gqa").mkdir()
    (tmp_path / "gqa" / "testdev_balanced_questions.json").write_text("[1, 2")
    with pytest.raises(UserError, match=r"testdev_balanced_questions.json: not valid JSON at line 1"):
        bench("gqa", tmp_path / "gqa").items()
    (tmp_path / "seed").mkdir()
    (tmp_path / "seed" / "SEED-Bench.json").write_text(json.dumps({"questions": [{"question_id": "1"}]}))
    with pytest.raises(UserError, match=r"SEED-Bench.json: question 0 lacks 'question'"):
        bench("seed", tmp_path / "seed").items()
