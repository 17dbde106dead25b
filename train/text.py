"""Prompt text, token ids and labels of one training record (spec 4.4, 7 and 10.5).

Stage 1 (``plain_guided``): the sequence is ``<image>`` + answer + ``"\\n"``; the loss covers the
answer. Stages 2 and 3 (``imgsp_v1``): the Vicuna chat rendering; the loss covers every answer and
its ``</s>``. Labels are computed with the reference's round-counting rule. That rule assumes
that a round tokenised on its own has as many tokens as inside the whole text; when it does not
(current tokenizers add no ``▁`` after ``</s>``) the reference silently dropped the whole sample.
Here the labels are then taken from character offsets instead, which gives the same answer spans
and keeps the sample.
"""
from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from llamavid.model.layout import IMAGE_TOKEN, IMAGE_TOKEN_INDEX
from llamavid.prompt.builders import tokenizer_image_token
from llamavid.prompt.templates import get_template
from train.config import IGNORE_INDEX
from train.records import DataError


@dataclass
class TextSample:
    """Token ids with ``-200`` per ``<image>``, labels, and the Q-Former prompt of each visual slot group."""

    input_ids: list[int]
    labels: list[int]
    prompts: list[str]
    masking: str = "reference"  # or "offsets" when the reference rule miscounted

    @property
    def placeholders(self) -> int:
        return sum(1 for i in self.input_ids if i == IMAGE_TOKEN_INDEX)


# --------------------------------------------------------------------------------------- stage 1
def plain_guided(turns: Sequence[tuple[str, str]], tokenizer: Any, where: str) -> TextSample:
    """``<image>`` + caption + ``\\n``; the Q-Former reads the instruction (spec 10.5)."""
    if len(turns) != 2 or IMAGE_TOKEN not in turns[0][1]:
        raise DataError(f"{where}: stage 1 (plain_guided) needs exactly one human turn with {IMAGE_TOKEN} "
                        f"and one answer, got {len(turns)} turns")
    sep = get_template("plain_guided").sep
    prompt = turns[0][1].replace(IMAGE_TOKEN, "").strip().replace("\n", "")  # as after preprocess_multimodal
    ids = tokenizer_image_token(IMAGE_TOKEN + turns[1][1] + sep, tokenizer)
    head = len(tokenizer_image_token(IMAGE_TOKEN, tokenizer))  # BOS and the placeholder
    return TextSample(ids, [IGNORE_INDEX] * head + ids[head:], [prompt])


# ------------------------------------------------------------------------------------ stages 2, 3
def image_turns(turns: Sequence[tuple[str, str]], rng: random.Random) -> tuple[list[tuple[str, str]], list[str]]:
    """Images and clips: every human turn from the first ``<image>`` on carries one (spec 4.4).

    The turn that has it gets it moved to the front; later turns without one get one added in front
    or behind at random, as the reference does. Each such turn's text is its Q-Former prompt.
    """
    out, prompts, seen = [], [], False
    for role, text in turns:
        if role == "human" and IMAGE_TOKEN in text:
            seen = True
            text = IMAGE_TOKEN + "\n" + text.replace(IMAGE_TOKEN, "").strip()
        elif role == "human" and seen:
            text = IMAGE_TOKEN + "\n" + text if rng.randint(0, 1) == 0 else text + "\n" + IMAGE_TOKEN
        if role == "human" and seen:
            prompts.append(text.replace(IMAGE_TOKEN, "").replace("\n", ""))
        out.append((role, text))
    return out, prompts


def movie_turns(turns: Sequence[tuple[str, str]], inputs: str, where: str) -> tuple[list[tuple[str, str]], list[str]]:
    """Long video: the ``<image>`` of the one human turn that has it becomes the whole film.

    Unlike the reference, later turns get no extra ``<image>`` (their slot would have no features).
    """
    holders = [k for k, (role, text) in enumerate(turns) if role == "human" and IMAGE_TOKEN in text]
    if len(holders) != 1 or turns[holders[0]][1].count(IMAGE_TOKEN) != 1:
        raise DataError(f"{where}: a long-video record needs exactly one {IMAGE_TOKEN} (in one human turn) "
                        f"where the film goes; found {sum(t.count(IMAGE_TOKEN) for _, t in turns)}")
    k = holders[0]
    prompt = turns[k][1].replace(IMAGE_TOKEN, "").strip()
    out = list(turns)
    out[k] = ("human", turns[k][1].replace(IMAGE_TOKEN, inputs))
    return out, [prompt]


def text_only_turns(turns: Sequence[tuple[str, str]], where: str) -> tuple[list[tuple[str, str]], list[str]]:
    if any(IMAGE_TOKEN in text for _, text in turns):
        raise DataError(f"{where}: has {IMAGE_TOKEN} but no 'image' or 'video'; add the file or remove the placeholder")
    return list(turns), []


def render(turns: Sequence[tuple[str, str]], template: str) -> str:
    conv = get_template(template)
    for role, text in turns:
        conv.append_message(conv.roles[0] if role == "human" else conv.roles[1], text)
    return conv.get_prompt()


def chat_sample(turns: Sequence[tuple[str, str]], prompts: list[str], tokenizer: Any, template: str,
                where: str) -> TextSample:
    """Render, tokenise and mask one conversation in a ``TWO``-style template (imgsp_v1)."""
    text = render(turns, template)
    ids = tokenizer_image_token(text, tokenizer)
    labels = reference_labels(text, ids, tokenizer, template)
    if labels is not None:
        return TextSample(ids, labels, prompts)
    answers = [t for role, t in turns if role == "gpt"]
    return TextSample(ids, offset_labels(text, ids, answers, tokenizer, template, where), prompts, "offsets")


# ---------------------------------------------------------------------------------------- labels
def reference_labels(text: str, ids: list[int], tokenizer: Any, template: str) -> list[int] | None:
    """The reference's rule (spec 10.5), or None where its count does not reach the sequence length."""
    conv = get_template(template)
    sep = conv.sep + conv.roles[1] + ": "
    labels = list(ids)
    cur = 1
    labels[:cur] = [IGNORE_INDEX]
    for rnd in text.split(conv.sep2):
        if rnd == "":
            break
        parts = rnd.split(sep)
        if len(parts) != 2:
            break
        round_len = len(tokenizer_image_token(rnd, tokenizer))
        instruction_len = len(tokenizer_image_token(parts[0] + sep, tokenizer)) - 2
        labels[cur:cur + instruction_len] = [IGNORE_INDEX] * len(labels[cur:cur + instruction_len])
        cur += round_len
    labels[cur:] = [IGNORE_INDEX] * len(labels[cur:])
    return labels if cur == len(ids) else None


def answer_spans(text: str, answers: Sequence[str], template: str) -> list[tuple[int, int]]:
    """Character spans the loss covers: the space after ``ASSISTANT:``, the answer and ``</s>``."""
    conv = get_template(template)
    spans, cursor = [], 0
    for answer in answers:
        needle = f"{conv.roles[1]}: {answer}{conv.sep2}"
        start = text.index(needle, cursor) + len(conv.roles[1]) + 1
        cursor = start + len(needle) - len(conv.roles[1]) - 1
        spans.append((start, cursor))
    return spans


def token_offsets(text: str, tokenizer: Any) -> tuple[list[int], list[tuple[int, int]]]:
    """``tokenizer_image_token``'s ids with each token's character span in ``text``."""
    ids: list[int] = []
    offsets: list[tuple[int, int]] = []
    bos, pos, strip = tokenizer.bos_token_id, 0, False
    for k, chunk in enumerate(text.split(IMAGE_TOKEN)):
        enc = tokenizer(chunk, return_offsets_mapping=True)
        chunk_ids, chunk_offsets = list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
        if k == 0:
            strip = bos is not None and chunk_ids[:1] == [bos]
        else:
            ids.append(IMAGE_TOKEN_INDEX)
            offsets.append((pos - len(IMAGE_TOKEN), pos))
            if strip and chunk_ids[:1] == [bos]:
                chunk_ids, chunk_offsets = chunk_ids[1:], chunk_offsets[1:]
        ids += chunk_ids
        offsets += [(pos + a, pos + b) if b > a else (pos + a, pos + a) for a, b in chunk_offsets]
        pos += len(chunk) + len(IMAGE_TOKEN)
    return ids, offsets


def offset_labels(text: str, ids: list[int], answers: Sequence[str], tokenizer: Any, template: str,
                  where: str) -> list[int]:
    """Labels from character offsets: a token is learned when it overlaps an answer span."""
    if not getattr(tokenizer, "is_fast", False):
        raise DataError(f"{where}: token counts of the rounds do not add up (reference masking would drop this "
                        "sample) and the tokenizer gives no offsets to align them; use a fast tokenizer")
    offset_ids, offsets = token_offsets(text, tokenizer)
    if offset_ids != ids:
        raise DataError(f"{where}: cannot align tokens with the text to mask the labels")
    spans = answer_spans(text, answers, template)
    labels = [IGNORE_INDEX] * len(ids)
    for k, (a, b) in enumerate(offsets):
        if ids[k] >= 0 and b > a and any(a < end and b > start for start, end in spans):
            labels[k] = ids[k]
    return labels
