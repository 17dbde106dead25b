"""The second family (Qwen3-VL) on transformers: the tiny checkpoint in the released layout, pixels and
positions as transformers' own code makes them, the film's budget and prompt, greedy answers and a
saved cache that gives the same next answer."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoTokenizer
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from llamavid.model.qwen_vl import VisionGeometry, fit_grid, is_qwen_vl, mrope_positions, patchify
from llamavid.model.qwen_vl_tiny import SPECIAL_TOKENS, TINY_BPE_SIZE
from llamavid.prompt.qwen_vl import (
    FilmBudget,
    Text,
    clean,
    cues_per_pair,
    film_prompt,
    follow_up,
    image_prompt,
    plan_film,
)
from llamavid.runtime.qwen_vl import QwenVLTransformers
from tests.support import qwen_vl as support

RELEASED_FILES = {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "vocab.json",
                  "merges.txt", "tokenizer_config.json", "chat_template.json", "preprocessor_config.json",
                  "video_preprocessor_config.json"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return support.tiny_qwen_vl(tmp_path_factory)


@pytest.fixture(scope="module")
def backend(tiny) -> QwenVLTransformers:
    return QwenVLTransformers(tiny)


# ---------------------------------------------------------------- the tiny checkpoint
def test_tiny_checkpoint_has_the_released_files_and_token_ids(tiny):
    assert RELEASED_FILES <= {p.name for p in tiny.iterdir()}
    assert is_qwen_vl(tiny)
    config = json.loads((tiny / "config.json").read_text())
    assert config["architectures"] == ["Qwen3VLForConditionalGeneration"]
    assert config["text_config"]["rope_scaling"]["mrope_section"] == [4, 2, 2]
    tok = AutoTokenizer.from_pretrained(tiny)
    ids = {name: tok.convert_tokens_to_ids(name) for name, _ in SPECIAL_TOKENS}
    assert list(ids.values()) == list(range(TINY_BPE_SIZE, TINY_BPE_SIZE + len(SPECIAL_TOKENS)))
    assert (config["image_token_id"], config["video_token_id"]) == (ids["<|image_pad|>"], ids["<|video_pad|>"])
    assert (config["vision_start_token_id"], config["vision_end_token_id"]) == (ids["<|vision_start|>"],
                                                                                ids["<|vision_end|>"])
    assert tok.eos_token == "<|im_end|>"
    # special tokens are whole tokens in text, as in the released tokenizer
    assert tok("<|im_start|>user\n", add_special_tokens=False)["input_ids"][0] == ids["<|im_start|>"]


def test_image_prompt_is_what_the_chat_template_renders(tiny):
    tok = AutoTokenizer.from_pretrained(tiny)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is this?"}]}]
    rendered = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert image_prompt("What is this?", np.zeros((64, 64, 3), np.uint8)).text() == rendered


# ---------------------------------------------------------------- pixels and positions
def test_patchify_matches_transformers_image_processor(tiny):
    image = support.frames(1, 128, 64)[0]
    processor = Qwen2VLImageProcessorPil.from_pretrained(tiny)
    theirs = processor(images=[Image.fromarray(image)], return_tensors="np")
    mine, grid = patchify([image])
    assert tuple(theirs["image_grid_thw"][0]) == grid == (1, 4, 8)
    np.testing.assert_array_equal(mine, theirs["pixel_values"])


def test_a_pair_of_frames_fills_both_temporal_slots():
    a, b = support.frames(2, 64, 64)
    pair, _ = patchify([a, b])
    alone, _ = patchify([a])
    # each patch row is [channel][time][y][x]: time 0 of the pair is frame a, time 1 frame b
    rows = pair.reshape(len(pair), 3, 2, 16 * 16)
    np.testing.assert_array_equal(rows[:, :, 0], alone.reshape(len(alone), 3, 2, -1)[:, :, 0])
    assert not np.array_equal(rows[:, :, 1], rows[:, :, 0])


def test_positions_are_the_models_own(backend):
    """The M-RoPE ids the backend passes give the logits the model's own get_rope_index gives."""
    enc = backend.encode(support.prompts()["film"])
    inputs = enc.model_inputs()
    with torch.inference_mode():
        mine = backend.model(**inputs).logits
        del inputs["position_ids"]
        backend.model.model.rope_deltas = None
        theirs = backend.model(**inputs).logits
    torch.testing.assert_close(mine, theirs, rtol=0, atol=0)


def test_mrope_positions_of_text_and_a_group():
    ids, nxt = mrope_positions([2, (2, 3), 1], start=5, index=10)
    assert ids[0].tolist() == list(range(10, 19))
    assert ids[1].tolist() == [5, 6] + [7] * 6 + [10]
    assert ids[2].tolist() == [5, 6, 7, 7, 7, 8, 8, 8, 10]
    assert ids[3].tolist() == [5, 6, 7, 8, 9, 7, 8, 9, 10]
    assert nxt == 11


# ---------------------------------------------------------------- the film's budget and prompt
def test_default_budget_of_a_one_hour_film():
    """16,384 visual tokens at up to 64 per pair of frames: a 16:9 frame is 320x192 (60 tokens a pair),
    so an hour holds 2 * (16384 // 60) = 546 frames in 273 pairs, 16,380 tokens, one frame every 6.6 s."""
    plan = plan_film(3600, 1920, 1080)
    assert plan.size == (320, 192) and plan.tokens_per_pair == 60
    assert len(plan.times) == 546 and plan.pairs == 273 and plan.visual_tokens == 16_380 <= 16_384
    steps = np.diff(plan.times)
    assert np.allclose(steps, 3600 / 546, atol=1e-3)
    assert plan.times[0] == pytest.approx(3600 / 546 / 2, abs=1e-3)


def test_a_short_film_is_read_at_the_processors_rate():
    plan = plan_film(30, 1280, 720)
    assert len(plan.times) == 60  # 2 fps


@pytest.mark.parametrize(("w", "h", "tokens", "size"), [(1920, 1080, 64, (320, 192)), (1080, 1920, 64, (192, 320)),
                                                        (640, 480, 64, (288, 192)), (1920, 1080, 8, (128, 64)),
                                                        (4000, 1000, 8, (256, 32)), (64, 64, 64, (96, 96))])
def test_fit_grid_keeps_the_aspect_within_the_tokens(w, h, tokens, size):
    got = fit_grid(w, h, tokens)
    assert got == size
    assert 8 <= VisionGeometry().tokens(*got) <= tokens


def test_film_prompt_holds_the_planned_frames_markers_and_cues():
    plan = support.film_plan()
    assert (len(plan.times), plan.pairs, plan.size, plan.tokens_per_pair) == (16, 8, (128, 64), 8)
    prompt = support.prompts()["film"]
    text = prompt.text()
    markers = re.findall(r"<(\d+\.\d) seconds>", text)
    assert len(markers) == plan.pairs == len(prompt.groups)
    pairs = zip(plan.times[::2], plan.times[1::2], strict=True)
    assert [float(m) for m in markers] == [round((a + b) / 2, 1) for a, b in pairs]
    assert all(len(g.frames) == 2 and g.video for g in prompt.groups)
    assert prompt.visual_tokens() == plan.visual_tokens == 64
    for cue in support.CUES:
        assert text.count(cue.text) == 1
    # each cue sits after the pair shown when it ends (pairs start at 18.75, 93.75, ... 543.75 s; one
    # that ends before the first pair goes to it), before the next pair's marker
    per_pair = cues_per_pair(plan.times, support.CUES)
    assert per_pair[0] == ["Where are we going tonight?"]
    assert per_pair[1] == ["To the harbor, before the ship leaves.", "Then hurry."]
    assert per_pair[3] == ["The captain is looking at the sea."] and per_pair[7] == ["It's over."]
    assert sum(map(len, per_pair)) == len(support.CUES)
    segments = re.split(r"<\d+\.\d seconds>", text)[1:]
    for seg, cues in zip(segments, per_pair, strict=True):
        assert [c for c in support.CUES if c.text in seg] == [c for c in support.CUES if c.text in cues]


def test_film_prompt_budget_counts_in_the_tokenized_prompt(backend):
    enc = backend.encode(support.prompts()["film"])
    ids = enc.input_ids[0].tolist()
    assert ids.count(backend.tokens.video) == 64
    assert ids.count(backend.tokens.vision_start) == ids.count(backend.tokens.vision_end) == 8
    assert enc.video_grid_thw.tolist() == [[1, 4, 8]] * 8


def test_control_tokens_in_text_are_removed():
    assert clean("hi<|im_end|><|vision_start|><__media__>there") == "hithere"
    prompt = film_prompt("q<|im_start|>", [np.zeros((64, 64, 3), np.uint8)] * 2, [0, 1],
                         [(0, 1, "a<|video_pad|>b")])
    assert prompt.text().count("<|video_pad|>") == 1 and "ab" in prompt.text()


def test_budget_smaller_than_a_pair_is_refused():
    with pytest.raises(ValueError):
        plan_film(60, 1920, 1080, FilmBudget(visual_tokens=4, tokens_per_pair=8))


# ---------------------------------------------------------------- greedy answers and state
@pytest.mark.parametrize("kind", ["image", "clip", "film"])
def test_transformers_answers_greedily_and_repeatably(backend, kind):
    prompt = support.prompts()[kind]
    first = backend.answer(prompt, max_new_tokens=12)
    again = backend.answer(prompt, max_new_tokens=12)
    assert first == again and 1 <= len(first) <= 12
    assert isinstance(backend.decode(first), str)


def test_saved_cache_gives_the_same_next_answer(tiny, backend):
    """A film question answered, the cache saved; the follow-up's answer from the cache read back into
    a fresh model is the one the first model gives going on."""
    answer = backend.answer(support.prompts()["film"], max_new_tokens=8)
    state, where = backend.state_bytes(), (backend.length, backend.position)
    nxt = follow_up("And then?", answer_closed=answer[-1] in backend.tokens.stop)
    expected = backend.greedy(backend.prefill(nxt), 8)

    fresh = QwenVLTransformers(tiny)
    fresh.load_state(state)
    assert (fresh.length, fresh.position) == where
    assert fresh.greedy(fresh.prefill(nxt), 8) == expected


def test_follow_up_closes_a_cut_answer():
    assert follow_up("q", answer_closed=False).parts[0] == Text("<|im_end|>\n<|im_start|>user\nq<|im_end|>\n"
                                                                  "<|im_start|>assistant\n")
