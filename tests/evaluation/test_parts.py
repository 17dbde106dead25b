"""The pieces under the runners: answer normalisation, the append-only log, the judge cache,
verdict parsing, and letter scoring through the real (tiny) model."""
from __future__ import annotations

import json

import pytest
import torch

from evaluation.judge import Judge, JudgeSettings, parse_verdict
from evaluation.normalize import evalai_answer, mme_label, pope_label, vqa_accuracy
from evaluation.records import AnswerLog
from llamavid.errors import UserError
from tests.support import benchmark_data as fx


def test_vqa_normalisation_applies_only_where_humans_disagree():
    assert evalai_answer("Two dogs.") == "2 dogs"
    assert evalai_answer("It's the cat!") == "it 's cat"
    assert vqa_accuracy("yes", ["yes"] * 10) == 1.0
    assert vqa_accuracy("Yes", ["yes"] * 10) == 0.0  # all humans agree: no normalisation (official rule)
    assert vqa_accuracy("Yes", ["yes"] * 9 + ["no"]) == 1.0
    # "no": 9 of the 10 leave-one-out subsets keep the one human "no" -> 9 * (1/3) / 10
    assert vqa_accuracy("no", ["yes"] * 9 + ["no"]) == pytest.approx(0.3)


def test_answer_rules_of_pope_and_mme():
    assert pope_label("No, there is a cat. Not a dog") == "no"
    assert pope_label("Yes. It is not there") == "yes"
    assert (mme_label("Yes"), mme_label("no."), mme_label("The answer is yes")) == ("yes", "no", "other")


def test_answer_log_survives_a_torn_last_line_and_names_a_bad_one(tmp_path):
    path = tmp_path / "answers.jsonl"
    log = AnswerLog(path)
    log.append({"id": "a", "answer": "x"})
    log.append({"id": "b", "answer": "y"})
    with open(path, "a") as fh:
        fh.write('{"id": "c", "ans')  # killed in the middle of a write
    again = AnswerLog(path)
    assert sorted(again.records) == ["a", "b"]
    assert path.read_text().endswith('"id": "b"}\n')  # truncated back to the last whole record
    again.append({"id": "c", "answer": "z"})
    assert [json.loads(x)["id"] for x in path.read_text().splitlines()] == ["a", "b", "c"]
    path.write_text('{"id": "a"}\nnot json\n')
    with pytest.raises(UserError, match=r"answers.jsonl:2: not an answer record"):
        AnswerLog(path)


def test_verdicts_are_read_like_the_reference_and_past_its_own_typo():
    assert parse_verdict("{'pred': 'yes', 'score': 4}") == {"pred": "yes", "score": 4}
    assert parse_verdict("{''score': 4.8}") == {"pred": None, "score": 4}
    assert parse_verdict("Here: {'pred': 'no', 'score': 2}.") == {"pred": "no", "score": 2}
    assert parse_verdict("I cannot judge this.") is None


def test_judge_replies_are_cached_by_model_and_prompt(judge_server, tmp_path):
    judge_server.replies = {"alpha": "{'pred': 'yes', 'score': 5}"}
    messages = [{"role": "user", "content": "about alpha"}]
    judge = Judge(JudgeSettings(judge_server.url, "judge-a"), tmp_path / "cache")
    assert judge.ask(messages)["content"] == "{'pred': 'yes', 'score': 5}"
    again = Judge(JudgeSettings(judge_server.url, "judge-a"), tmp_path / "cache")
    assert again.ask(messages)["model"] == "fake-judge-0613" and again.asked == 0 and again.cached == 1
    Judge(JudgeSettings(judge_server.url, "judge-b"), tmp_path / "cache").ask(messages)
    assert len(judge_server.requests) == 2 and judge_server.requests[0]["model"] == "judge-a"
    assert judge_server.requests[0]["temperature"] == 0


def test_an_unreachable_judge_is_one_clear_error(tmp_path, free_port):
    judge = Judge(JudgeSettings(f"http://127.0.0.1:{free_port}/v1", "m", max_retries=0, timeout=5), tmp_path)
    with pytest.raises(UserError, match=rf"the judge at http://127.0.0.1:{free_port}/v1 cannot be reached"):
        judge.ask([{"role": "user", "content": "x"}])


def test_the_chosen_letter_is_the_best_scoring_letter_token(tiny, tmp_path):
    from evaluation.answering import Answerer, letter_token_ids
    from evaluation.benchmarks import BENCHMARKS, Options
    from llamavid.runtime.generate import SamplingOptions

    items = BENCHMARKS["seed"](fx.seed(tmp_path / "seed"), Options()).items()
    visual = tiny.visual(images=[fx.Image.open(items[0].source.path)])
    (item, record), = Answerer(tiny).answer_group(visual, items[:1], {items[0].id})
    prepared = tiny.prepare(item.prompt, images=[fx.Image.open(item.source.path)])
    first = next(iter(tiny.generate(prepared, SamplingOptions(temperature=0, max_new_tokens=1))))
    expected = {L: max(float(first.scores[i]) for i in letter_token_ids(tiny.tokenizer, L)) for L in "ABCD"}
    assert record["letter_scores"] == pytest.approx(expected, abs=1e-4)
    assert record["choice"] == max("ABCD", key=expected.get)


def test_one_qformer_pass_for_a_group_gives_each_prompt_its_own_tokens(tiny, tmp_path):
    from evaluation.answering import Answerer
    from evaluation.benchmarks import BENCHMARKS, Options
    from llamavid.runtime.chat import Chat
    from llamavid.runtime.generate import SamplingOptions

    items = BENCHMARKS["mme"](fx.mme(tmp_path / "mme"), Options()).items()[:2]  # two questions, one image
    visual = tiny.visual(images=[fx.Image.open(items[0].source.path)])
    batched = tiny.visual_tokens(visual.features, [i.prompt for i in items]).tokens
    for n, item in enumerate(items):
        alone = tiny.visual_tokens(visual.features, [item.prompt]).tokens[0]
        assert torch.allclose(batched[n], alone, atol=1e-5)
    records = {i.id: r for i, r in Answerer(tiny, max_new_tokens=6).answer_group(visual, items, {i.id for i in items})}
    for item in items:
        chat = "".join(Chat(tiny, visual).ask(item.prompt, SamplingOptions(temperature=0, max_new_tokens=6)))
        assert records[item.id]["answer"] == chat.strip()
