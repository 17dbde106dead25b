"""Prompt text, label masking, batching and the loss: the pieces a wrong number would hide in."""
from __future__ import annotations

import random

import pytest
import torch
from transformers.loss.loss_utils import ForCausalLMLoss

from llamavid.model.layout import IMAGE_TOKEN_INDEX, tokens_per_frame
from llamavid.prompt.builders import tokenizer_image_token
from train.config import (
    ATT_PROJECTORS,
    LLM,
    MM_PROJECTOR,
    QFORMER,
    default_max_length,
    rope_factor_for,
    trainable_prefixes,
)
from train.records import DataError, conversation_turns
from train.sampler import epoch_order, modality_grouped, rank_batches
from train.step import expand_labels, masked_lm_loss, pad_batch
from train.text import (
    chat_sample,
    image_turns,
    movie_turns,
    offset_labels,
    plain_guided,
    reference_labels,
    render,
    text_only_turns,
)


def learned(ids: list[int], labels: list[int]) -> list[list[int]]:
    """The runs of consecutive learned tokens."""
    runs, run = [], []
    for i, label in zip(ids, labels, strict=True):
        if label != -100:
            assert label == i
            run.append(i)
        elif run:
            runs.append(run)
            run = []
    return runs + ([run] if run else [])


def test_stage1_learns_the_caption_only(tokenizer):
    sample = plain_guided([("human", "Describe the image.\n<image>"), ("gpt", "a red scene.")], tokenizer, "r")
    assert sample.input_ids[:2] == [tokenizer.bos_token_id, IMAGE_TOKEN_INDEX]
    assert sample.labels[:2] == [-100, -100] and sample.labels[2:] == sample.input_ids[2:]
    assert tokenizer.decode(sample.input_ids[2:]) == "a red scene.\n"
    assert sample.prompts == ["Describe the image."]


def test_single_round_chat_matches_the_reference_rule(tokenizer):
    turns, prompts = image_turns([("human", "What color is it?\n<image>"), ("gpt", "It is blue.")], random.Random(0))
    assert turns[0][1] == "<image>\nWhat color is it?" and prompts == ["What color is it?"]
    sample = chat_sample(turns, prompts, tokenizer, "imgsp_v1", "r")
    assert sample.masking == "reference"
    text = render(turns, "imgsp_v1")
    offsets = offset_labels(text, sample.input_ids, ["It is blue."], tokenizer, "imgsp_v1", "r")
    assert offsets == sample.labels  # the two rules agree where the reference's counting works
    [answer] = learned(sample.input_ids, sample.labels)
    assert tokenizer.decode(answer).strip() == "It is blue.</s>"


def test_multi_round_chat_learns_every_answer_with_its_eos(tokenizer):
    turns = [("human", "<image>\nWhat color is it?"), ("gpt", "It is red."), ("human", "Is it dark?"), ("gpt", "No."),
             ("human", "Why?"), ("gpt", "It is bright.")]
    turns, prompts = image_turns(turns, random.Random(3))
    assert [t.count("<image>") for r, t in turns if r == "human"] == [1, 1, 1]
    assert prompts == ["What color is it?", "Is it dark?", "Why?"]
    sample = chat_sample(turns, prompts, tokenizer, "imgsp_v1", "r")
    runs = [tokenizer.decode(r).strip() for r in learned(sample.input_ids, sample.labels)]
    assert runs == ["It is red.</s>", "No.</s>", "It is bright.</s>"]
    assert sample.placeholders == 3


def test_the_reference_rule_miscount_is_detected_not_silently_dropped(tokenizer):
    """With this tokenizer a round alone gets a leading '▁' that it lacks after </s>: the reference
    would have ignored the whole sample; the offsets rule keeps it."""
    turns = [("human", "Hi"), ("gpt", "Hello."), ("human", "Where?"), ("gpt", "Here.")]
    text = render(turns, "imgsp_v1")
    assert reference_labels(text, tokenizer_image_token(text, tokenizer), tokenizer, "imgsp_v1") is None
    sample = chat_sample(turns, [], tokenizer, "imgsp_v1", "r")
    assert sample.masking == "offsets"
    runs = [tokenizer.decode(r).strip() for r in learned(sample.input_ids, sample.labels)]
    assert runs == ["Hello.</s>", "Here.</s>"]


def test_film_turn_takes_the_whole_film_and_later_turns_get_no_placeholder(tokenizer):
    inputs = "<image><image>a line<image><image>"
    turns, prompts = movie_turns([("human", "<image>\nWhere are they?"), ("gpt", "At sea."), ("human", "Why?"),
                                    ("gpt", "Fishing.")], inputs, "r")
    assert prompts == ["Where are they?"]
    assert turns[0][1] == inputs + "\nWhere are they?" and turns[2][1] == "Why?"
    sample = chat_sample(turns, prompts, tokenizer, "imgsp_v1", "r")
    assert sample.placeholders == 4
    with pytest.raises(DataError, match="exactly one <image>"):
        movie_turns([("human", "<image> <image>"), ("gpt", "x")], inputs, "record 3")


def test_records_with_broken_conversations_name_the_problem():
    with pytest.raises(DataError, match="record 2 .id=a.: turns must alternate"):
        conversation_turns(2, {"id": "a", "conversations": [{"from": "human", "value": "x"},
                                                            {"from": "human", "value": "y"}]})
    with pytest.raises(DataError, match="answer 1 contains <image>"):
        conversation_turns(0, {"conversations": [{"from": "human", "value": "x"}, {"from": "gpt", "value": "<image>"}]})
    with pytest.raises(DataError, match="has <image> but no 'image' or 'video'"):
        text_only_turns([("human", "<image> hi"), ("gpt", "x")], "record 0")
    # a leading gpt turn is dropped, as the reference does
    assert conversation_turns(0, {"conversations": [{"from": "gpt", "value": "a"}, {"from": "human", "value": "b"},
                                                    {"from": "gpt", "value": "c"}]}) == [("human", "b"), ("gpt", "c")]


def test_stage_presets_follow_the_reference():
    assert trainable_prefixes(False, "qformer_pretrain_freeze") == MM_PROJECTOR + ATT_PROJECTORS
    assert set(trainable_prefixes(True, "qformer_pretrain")) == set(MM_PROJECTOR + ATT_PROJECTORS + QFORMER + LLM)
    assert set(trainable_prefixes(True, "qformer_pretrain_freeze_all")) == set(MM_PROJECTOR + LLM)
    assert (default_max_length(1, "mean"), default_max_length(2, None), default_max_length(2, "mean"),
            default_max_length(3, "mean")) == (2048, 4096, 2048, 65536)
    assert rope_factor_for(65536, 4096) == 16.0 and rope_factor_for(4096, 4096) is None
    assert rope_factor_for(8192, 4096) == 2.0 and rope_factor_for(65536, 8192, 2.0) == 16.0  # 4096 positions x 2
    assert (tokens_per_frame(None, 224), tokens_per_frame(None, 336), tokens_per_frame("mean", 224),
            tokens_per_frame("grid:4", 224), tokens_per_frame("grid:2", 224)) == (257, 577, 2, 17, 5)


def test_modality_grouping_keeps_modalities_apart_and_ranks_balanced():
    lengths = [5, 9, -3, 7, -8, 2, 6, -4, 1, 3, -6, 4, 8, -2]  # 9 multimodal, 5 text-only
    order = modality_grouped(lengths, batch_size=2, world_size=2, gen=torch.Generator().manual_seed(0))
    assert sorted(order) == list(range(len(lengths)))
    megabatches = [order[i:i + 4] for i in range(0, 12, 4)]  # 2 + 1 full ones, then the 1 + 1 leftovers
    for mb in megabatches:
        assert len({lengths[i] > 0 for i in mb}) == 1, "a mega-batch mixes images and text"
    assert epoch_order(lengths, 2, 2, 7, 1, True) == epoch_order(lengths, 2, 2, 7, 1, True)
    assert epoch_order(lengths, 2, 2, 7, 1, True) != epoch_order(lengths, 2, 2, 7, 2, True)
    only_images = modality_grouped([3, 4, 5], 1, 1, torch.Generator().manual_seed(0))  # the reference asserted
    assert sorted(only_images) == [0, 1, 2]
    ranks = [rank_batches(list(range(5)), 2, 2, r) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 2 and ranks[0][0] == [0, 1] and ranks[1][0] == [2, 3]


def test_spliced_labels_and_padding():
    ids = torch.tensor([1, 5, IMAGE_TOKEN_INDEX, 7, IMAGE_TOKEN_INDEX, 8])
    labels = torch.tensor([-100, -100, -100, 7, -100, 8])
    assert expand_labels(labels, ids, [2, 3]).tolist() == [-100, -100, -100, -100, 7, -100, -100, -100, 8]
    embeds, mask, target = pad_batch([torch.ones(3, 4), torch.ones(1, 4)], [torch.tensor([1, 2, 3]), torch.tensor([4])])
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]] and target[1].tolist() == [4, -100, -100]
    assert embeds[1, 1:].abs().sum() == 0


def test_loss_on_supervised_rows_equals_transformers_loss():
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 11, bias=False)
    hidden = torch.randn(2, 6, 8)
    labels = torch.tensor([[-100, 3, 4, -100, 5, 1], [-100, -100, 2, 9, -100, -100]])
    ours, count = masked_lm_loss(head, hidden, labels)
    reference = ForCausalLMLoss(head(hidden), labels, vocab_size=11)
    assert count == 6 and torch.allclose(ours, reference, atol=1e-6)
    none, zero = masked_lm_loss(head, hidden, torch.full_like(labels, -100))
    assert zero == 0 and none.item() == 0.0 and none.requires_grad
