"""Prepared films ("fast answers"): the film prompt read once, ahead of time, with a neutral question.

A new question about a film normally costs the Q-Former over every frame and the LLM's reading of
the whole film prompt: minutes on a CPU. A prepared film has done both once, with a neutral first
question and a fixed answer, and saved the resulting state (:mod:`llamavid.runtime.state`); a new
conversation starts from that state and the user's question is asked as the next turn, which
costs only its own tokens.

The price: the film's context tokens are conditioned on the neutral question, not on the user's,
as the later turns of the long-video model's multi-turn training data are. The exact mode (the
user's question first) stays available; ``llamavid bench film --prepared`` times both and
the evaluation runners can score both ways.
"""
from __future__ import annotations

from llamavid.runtime.chat import Chat, Turn
from llamavid.runtime.control import Control

PREPARED_QUESTION = "Watch this movie carefully. I will ask you about it."
PREPARED_ANSWER = "I have watched the whole movie. What would you like to know?"


def neutral_answer_ids(lv) -> list[int]:
    """The neutral answer as the tokens the model would end with (``</s>`` last): what a kept
    conversation stores for its hidden first turn."""
    ids = lv.tokenize(PREPARED_ANSWER)
    bos = getattr(lv.tokenizer, "bos_token_id", None)
    ids = ids[1:] if ids[:1] == [bos] else ids
    return [*ids, lv.tokenizer.eos_token_id]


def neutral_turn(chat: Chat) -> Turn:
    """The neutral first turn, its answer as the tokens the model would end with (``</s>`` last)."""
    ids = neutral_answer_ids(chat.lv)
    return Turn(PREPARED_QUESTION, PREPARED_ANSWER, len(ids), False, ids)


def prepare(chat: Chat, control: Control | None = None) -> None:
    """Read the film with the neutral turn into a new chat (progress and cancel through ``control``)."""
    if chat.turns:
        raise ValueError("prepare() starts a new chat; this one already has turns")
    chat.restore([neutral_turn(chat)], control)
