"""Conversation templates render exactly as the reference (spec 7)."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from llamavid.prompt.templates import Conversation, SeparatorStyle, default_template_for, get_template, template_names

VICUNA = ("A chat between a curious user and an artificial intelligence assistant. The assistant gives "
          "helpful, detailed, and polite answers to the user's questions.")
LLAVA = ("A chat between a curious human and an artificial intelligence assistant. The assistant gives "
         "helpful, detailed, and polite answers to the human's questions.")
GOLDEN = Path(__file__).resolve().parents[1] / "data" / "golden" / "tiny-224-video"


def render(name: str, *messages) -> str:
    conv = get_template(name)
    for i, msg in enumerate(messages):
        conv.append_message(conv.roles[i % 2], msg)
    return conv.get_prompt()


def test_registered_names():
    assert set(template_names()) == {"vicuna_v1", "llava_v1", "llava_v0", "imgsp_v1", "plain_guided"}


def test_vicuna_single_turn_matches_spec():
    assert render("vicuna_v1", "<image>\nWhat is this?", None) == \
        VICUNA + " USER: <image>\nWhat is this? ASSISTANT:"


def test_vicuna_multi_turn_matches_spec():
    assert render("vicuna_v1", "Q1", "A1", "Q2", None) == VICUNA + " USER: Q1 ASSISTANT: A1</s>USER: Q2 ASSISTANT:"


def test_imgsp_v1_renders_like_vicuna_v1():
    msgs = ("<image>\nQ1", "A1", "Q2", None)
    assert render("imgsp_v1", *msgs) == render("vicuna_v1", *msgs)
    assert get_template("imgsp_v1").version == "imgsp_v1"


def test_llava_v1_uses_curious_human_system():
    assert render("llava_v1", "Q", None) == LLAVA + " USER: Q ASSISTANT:"


def test_llava_v0_single_style():
    assert render("llava_v0", "Q1", "A1", "Q2", None) == \
        LLAVA + "###Human: Q1###Assistant: A1###Human: Q2###Assistant:"


def test_empty_message_renders_role_colon_anywhere():
    # the reference tests truthiness, so "" behaves like None, also mid-conversation
    assert render("vicuna_v1", "Q", "") == VICUNA + " USER: Q ASSISTANT:"
    assert render("vicuna_v1", None, "A") == VICUNA + " USER:ASSISTANT: A</s>"


def test_plain_guided_no_longer_crashes():
    assert render("plain_guided", "<image>", "A caption.") == "<image>\nA caption.\n"
    assert render("plain_guided", "<image>", None) == "<image>\n"
    conv = Conversation(system="S", roles=("", ""), sep_style=SeparatorStyle.PLAIN, sep="\n", sep2="</s>")
    conv.append_message("", "a")
    conv.append_message("", "b")
    assert conv.get_prompt() == "Sa\nb</s>"


def test_tuple_first_message_moves_image_to_front():
    conv = get_template("vicuna_v1")
    conv.append_user(("What is this? <image>", object(), "Pad"))
    conv.append_assistant()
    assert conv.get_prompt() == VICUNA + " USER: <image>\nWhat is this? ASSISTANT:"
    assert isinstance(conv.messages[0][1], tuple)  # rendering does not mutate the state


def test_get_template_returns_independent_copies():
    a = get_template("vicuna_v1")
    a.append_user("hi")
    a.roles = ("X", "Y")
    b = get_template("vicuna_v1")
    assert b.messages == [] and b.roles == ("USER", "ASSISTANT")
    c = a.copy()
    c.append_assistant("x")
    assert len(a.messages) == 1


def test_get_template_unknown_lists_valid_names():
    with pytest.raises(ValueError, match="vicuna_v1.*plain_guided|plain_guided.*vicuna_v1"):
        get_template("chatml")


@pytest.mark.parametrize("run", ["image0", "video", "image0_multiturn"])
def test_golden_llm_prompts(run):
    with np.load(GOLDEN / "inputs.npz", allow_pickle=False) as npz:
        expected = str(npz[f"{run}.llm_prompt"])
        prompts = json.loads(str(npz[f"{run}.qformer_prompts"]))[0]
    msgs: list = []
    answers = ["The umbrella is red and there are 2 people."]
    for k, question in enumerate(prompts):
        msgs += ["<image>\n" + question, answers[k] if k < len(prompts) - 1 else None]
    assert render("vicuna_v1", *msgs) == expected


@pytest.mark.parametrize("source", [
    "YanweiLi/llama-vid-7b-full-224-video-fps-1",
    "/models/llama-vid-13b-full-336",
    {"bert_type": "qformer_pretrain", "model_type": "llava"},
    SimpleNamespace(config=SimpleNamespace(num_query=32, compress_type="mean"), name_or_path="x"),
])
def test_default_template_is_vicuna_for_llamavid(source):
    assert default_template_for(source) == "vicuna_v1"


def test_default_template_reads_local_config(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"bert_type": "qformer_pretrain", "num_query": 32}))
    assert default_template_for(tmp_path) == "vicuna_v1"
    assert default_template_for(str(tmp_path)) == "vicuna_v1"


def test_default_template_other_models():
    assert default_template_for("liuhaotian/llava-v1.5-7b") == "llava_v1"
    assert default_template_for("llava-13b-delta") == "llava_v0"
    assert default_template_for({"model_type": "llava", "mm_vision_tower": "clip"}) == "vicuna_v1"
    assert default_template_for("some-model") == "vicuna_v1"
