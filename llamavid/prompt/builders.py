"""Prompt text and token ids in the layout the LLaMA-VID reference feeds its LLM (spec 4.4, 7.1, 8.2).

Each ``<image>`` in the text becomes one ``IMAGE_TOKEN_INDEX`` id, and the model replaces the k-th of
them with the visual tokens computed from the k-th Q-Former prompt. So the builders here always
come with a statement of which turn carries an ``<image>``; ``qformer_prompts_for`` gives the
matching prompt list. Literal ``<image>`` typed by a user (or found in a subtitle) is removed, as
the reference's web UI does, because it would otherwise open a slot with no features behind it.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

from llamavid.model.layout import IMAGE_TOKEN, IMAGE_TOKEN_INDEX
from llamavid.prompt.templates import DEFAULT_TEMPLATE, Conversation, get_template

MOVIE_INTRO = "Below is a movie. Memorize the content and answer my question after watching this movie."
MOVIE_OUTRO = "Now the movie end."

ImageIn = Literal["every", "latest", "first", "none"]
History = Sequence[tuple[str, str]]
Template = str | Conversation


def _encode(tokenizer: Any, text: str) -> list[int]:
    """Ids of ``tokenizer(text)``: a list, an object with ``.input_ids`` or a mapping with them."""
    out = tokenizer(text)
    if isinstance(out, Mapping):
        ids = out["input_ids"]
    else:
        ids = getattr(out, "input_ids", out)
    ids = list(ids)
    if ids and not isinstance(ids[0], (int, np.integer)):
        raise TypeError("tokenizer(text) must return one flat sequence of int ids "
                        f"(got elements of type {type(ids[0]).__name__})")
    return [int(i) for i in ids]


def tokenizer_image_token(prompt: str, tokenizer: Any, image_token_index: int = IMAGE_TOKEN_INDEX,
                          bos_token_id: int | None = None) -> list[int]:
    """LLaVA ``tokenizer_image_token``: token ids with ``image_token_index`` at every ``<image>``.

    Each chunk between ``<image>`` markers is tokenised on its own (so SentencePiece adds its
    dummy-prefix ``▁`` to every chunk, as in the reference). Protocol: ``tokenizer(text)`` returns
    the ids of ``text`` *with* a leading BOS - a HF tokenizer (``.input_ids``), a mapping with
    ``"input_ids"`` or a plain list. The BOS id is ``bos_token_id`` or ``tokenizer.bos_token_id``.
    If the first chunk starts with BOS it is kept and the leading BOS of every later chunk is
    dropped, so an empty chunk (``<image><image>``) contributes nothing; if BOS is unknown or the
    first chunk lacks it, nothing is dropped (the reference does the same).
    """
    bos = bos_token_id if bos_token_id is not None else getattr(tokenizer, "bos_token_id", None)
    chunks = prompt.split(IMAGE_TOKEN)
    empty: list[int] | None = None  # movie prompts hold thousands of empty chunks: encode once
    ids: list[int] = []
    strip_bos = False
    for i, chunk in enumerate(chunks):
        if chunk == "" and i > 0:
            empty = _encode(tokenizer, "") if empty is None else empty
            chunk_ids = empty
        else:
            chunk_ids = _encode(tokenizer, chunk)
        if i == 0:
            strip_bos = bos is not None and chunk_ids[:1] == [bos]
        else:
            ids.append(image_token_index)
            if strip_bos and chunk_ids[:1] == [bos]:
                chunk_ids = chunk_ids[1:]
        ids.extend(chunk_ids)
    return ids


def strip_placeholders(text: str) -> str:
    """Text with every literal ``<image>`` removed: typed by a user or found in a subtitle, it would
    open a slot with no features behind it."""
    return text.replace(IMAGE_TOKEN, "")


def _conversation(template: Template) -> Conversation:
    return get_template(template) if isinstance(template, str) else template.copy()


def _image_turns(n_turns: int, image_in: ImageIn) -> list[bool]:
    """Which of ``n_turns`` user turns carry an ``<image>`` (the last turn is the new question)."""
    if image_in == "every":
        return [True] * n_turns
    if image_in == "latest":
        return [i == n_turns - 1 for i in range(n_turns)]
    if image_in == "first":
        return [i == 0 for i in range(n_turns)]
    if image_in == "none":
        return [False] * n_turns
    raise ValueError(f"image_in must be 'every', 'latest', 'first' or 'none', got {image_in!r}")


def _turns(question: str, history: History) -> list[tuple[str, str | None]]:
    turns: list[tuple[str, str | None]] = []
    for item in history:
        if len(item) != 2:
            raise ValueError(f"history items must be (user, assistant) pairs, got {item!r}")
        user, answer = item
        turns.append((strip_placeholders(user), None if answer is None else strip_placeholders(answer)))
    return turns + [(strip_placeholders(question), None)]


def image_prompt(question: str, template: Template = DEFAULT_TEMPLATE, history: History = (),
                 image_in: ImageIn = "every") -> str:
    """Rendered prompt with ``"<image>\\n" + text`` as user message(s), ending with ``ASSISTANT:``.

    ``history`` holds earlier (user, assistant) pairs; answers are stored without ``</s>`` (the
    template appends ``sep2``). ``image_in`` says which user turns carry an ``<image>``:
    ``"every"`` (default) - each turn, each with that turn's Q-Former prompt, as in training
    (``imgsp_v1``) and the golden multi-turn case; ``"latest"`` - only the new question, as the
    reference CLI; ``"first"`` - only the first question, as the reference Gradio worker;
    ``"none"`` - text-only chat.
    """
    turns = _turns(question, history)
    conv = _conversation(template)
    for (user, answer), has_image in zip(turns, _image_turns(len(turns), image_in), strict=True):
        conv.append_user(IMAGE_TOKEN + "\n" + user if has_image else user)
        conv.append_assistant(answer)
    return conv.get_prompt()


def video_prompt(question: str, template: Template = DEFAULT_TEMPLATE, history: History = (),
                 image_in: ImageIn = "every") -> str:
    """Short video: the same single ``<image>`` per turn; the model expands it to 2T rows."""
    return image_prompt(question, template, history, image_in)


def qformer_prompts_for(question: str, history: History = (), image_in: ImageIn = "every") -> list[str]:
    """Q-Former prompt per ``<image>`` slot of ``image_prompt(question, history=..., image_in=...)``."""
    turns = _turns(question, history)
    return [user for (user, _), has_image in zip(turns, _image_turns(len(turns), image_in), strict=True)
            if has_image]


def _as_text(per_frame_text: Any) -> str:
    """A str, a 0-d string array (golden npz) or a sequence of per-frame strings."""
    if isinstance(per_frame_text, np.ndarray) and per_frame_text.ndim == 0:
        per_frame_text = per_frame_text.item()
    if isinstance(per_frame_text, str):
        return per_frame_text
    return "".join(str(t) for t in per_frame_text)


def movie_prompt(per_frame_text: Any, question: str, video_token: int = 2,
                 template: Template = DEFAULT_TEMPLATE, *, pure_text: bool = False) -> str:
    """Prompt of ``run_llamavid_movie.py``: one user turn with the whole movie, then the question.

    Every frame's ``<image>`` is repeated ``video_token`` times (context + content token per frame
    for the released long-video model). ``pure_text=True`` drops all ``<image>`` like the
    reference's ``--pure-text`` (then no features are passed).
    """
    if not isinstance(video_token, (int, np.integer)) or video_token < 1:
        raise ValueError(f"video_token must be a positive int, got {video_token!r}")
    inputs = _as_text(per_frame_text).replace(IMAGE_TOKEN, IMAGE_TOKEN * int(video_token))
    conv = _conversation(template)
    conv.append_user(MOVIE_INTRO + inputs + MOVIE_OUTRO + "\n" + strip_placeholders(question))
    conv.append_assistant(None)
    prompt = conv.get_prompt()
    return strip_placeholders(prompt) if pure_text else prompt
