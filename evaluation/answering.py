"""Deterministic answers through the engine: greedy text, or the letter the model scores highest.

Everything goes through :class:`llamavid.runtime.api.LlamaVid`'s public steps (``visual_tokens``,
``tokenize``, ``prepare``, ``generate``, ``decode``), so any backend the engine runs (transformers,
llama.cpp) and any quantization is evaluated exactly as it chats.

Items about one image or clip are answered from one Q-Former pass over all their prompts
(``visual_tokens(features, prompts)`` gives one row set per prompt). The pass always covers the whole
group, answered items included, so a resumed run computes the same numbers as one that never stopped.
A film's questions each read the whole film (its context token depends on the question), one
``prepare`` per question: the exact mode. In the fast mode (``film_mode="fast"``, the chat's "fast
answers") the film is read once with the neutral first turn (:mod:`llamavid.runtime.prepared`) and
each question is asked as the next turn, the cache cut back after it; running a long-video benchmark
both ways and comparing the runs (``llamavid eval compare``) measures how much the two modes agree.

Multiple choice is decided from the first step's scores of the option letters, not from free text:
the highest-scoring letter wins (the earlier letter on a tie); every letter's score is recorded.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

from evaluation.items import Item
from evaluation.qwen_answering import QwenAnswerer
from llamavid.errors import CheckpointError
from llamavid.prompt.builders import image_prompt
from llamavid.runtime.api import LlamaVid, Prepared
from llamavid.runtime.chat import Chat
from llamavid.runtime.family import QwenVL
from llamavid.runtime.generate import SamplingOptions, Session
from llamavid.runtime.inputs import Visual
from llamavid.runtime.prepared import prepare

SPACE = "\u2581"  # SentencePiece's word-start mark
FILM_MODES = ("exact", "fast")


def letter_token_ids(tokenizer: Any, letter: str) -> list[int]:
    """Vocabulary ids that spell ``letter`` as a first answer token: ``▁A``, ``A`` and its byte token."""
    unk = getattr(tokenizer, "unk_token_id", None)
    found = set()
    for piece in (SPACE + letter, letter, f"<0x{ord(letter):02X}>"):
        token = tokenizer.convert_tokens_to_ids(piece)
        if isinstance(token, int) and token >= 0 and token != unk:
            found.add(token)
    if not found:
        raise CheckpointError(f"the LLaMA tokenizer has no token for the option letter {letter!r}; "
                              "multiple-choice items cannot be scored with this checkpoint")
    return sorted(found)


def answerer_for(model: LlamaVid | QwenVL, max_new_tokens: int = 128,
                 film_mode: str = "exact") -> Answerer | QwenAnswerer:
    """The answerer of the loaded model's family: the runner, items and files are the same for both."""
    if isinstance(model, QwenVL):
        return QwenAnswerer(model, max_new_tokens, film_mode)
    return Answerer(model, max_new_tokens, film_mode)


class Answerer:
    """Answers groups of items that share one visual input."""

    def __init__(self, lv: LlamaVid, max_new_tokens: int = 128, film_mode: str = "exact"):
        if film_mode not in FILM_MODES:
            raise ValueError(f"film_mode must be one of {', '.join(FILM_MODES)}, got {film_mode!r}")
        self.lv = lv
        self.max_new_tokens = max_new_tokens
        self.film_mode = film_mode
        self._letters: dict[str, list[int]] = {}

    def answer_group(self, visual: Visual, group: Sequence[Item], pending: set[str]) -> Iterator[tuple[Item, dict]]:
        """(item, record) for each item of ``group`` whose id is in ``pending``, in group order."""
        if visual.kind == "film":
            yield from self._film_group(visual, group, pending)
            return
        tokens = None
        if visual.kind in ("image", "video") and any(item.id in pending for item in group):
            tokens = self.lv.visual_tokens(visual.features, [item.prompt for item in group]).tokens
        for index, item in enumerate(group):
            if item.id not in pending:
                continue
            slots = [tokens[index]] if tokens is not None else []
            text = image_prompt(item.prompt, self.lv.template, image_in="latest" if slots else "none")
            yield item, self.respond(item, Prepared(text, self.lv.tokenize(text), slots, self.lv.model))

    def _film_group(self, visual: Visual, group: Sequence[Item], pending: set[str]) -> Iterator[tuple[Item, dict]]:
        if self.film_mode == "fast":
            yield from self._film_group_fast(visual, group, pending)
            return
        for item in group:
            if item.id not in pending:
                continue
            subtitles = visual.subtitles if item.subtitles else []
            prepared = self.lv.prepare(item.prompt, features=visual.features, frame_times=visual.frame_times,
                                       subtitles=subtitles)
            yield item, {**self.respond(item, prepared), "frames": len(visual.features)}

    def _film_group_fast(self, visual: Visual, group: Sequence[Item],
                         pending: set[str]) -> Iterator[tuple[Item, dict]]:
        chats: dict[bool, Chat] = {}
        for item in group:
            if item.id not in pending:
                continue
            if item.subtitles not in chats:  # one reading of the film per subtitle mode
                chats[item.subtitles] = Chat(self.lv, replace(visual, subtitles=visual.subtitles if item.subtitles
                                                              else []))
                prepare(chats[item.subtitles])
            chat = chats[item.subtitles]
            snapshot = chat.backend.snapshot(chat.state)
            ids = chat.plan(item.prompt).ids
            prepared = Prepared(self.lv.tokenizer.decode(ids), ids, [], self.lv.model)
            try:
                record = self.respond(item, prepared, state=chat.state)
            finally:
                chat.backend.rollback(chat.state, snapshot)
            yield item, {**record, "frames": len(chat.visual.features), "film_mode": "fast"}

    def respond(self, item: Item, prepared: Prepared, state: Any = None) -> dict[str, Any]:
        """The record of one item: ``answer`` (text) or ``choice`` with every letter's score."""
        if item.answer_prefix:
            ids = self.lv.tokenize(item.answer_prefix)
            bos = getattr(self.lv.tokenizer, "bos_token_id", None)
            ids = ids[1:] if ids[:1] == [bos] else ids
            prepared = replace(prepared, text=f"{prepared.text} {item.answer_prefix}",
                               input_ids=prepared.input_ids + ids)
        if item.letters:
            return self._choose(item, prepared, state)
        options = SamplingOptions(temperature=0, max_new_tokens=self.max_new_tokens)
        steps = self.lv.generate(prepared, options, state=state or self._state(prepared, options))
        return {"answer": "".join(self.lv.decode(steps)).strip()}

    def _choose(self, item: Item, prepared: Prepared, state: Any = None) -> dict[str, Any]:
        options = SamplingOptions(temperature=0, max_new_tokens=1)
        first = next(iter(self.lv.generate(prepared, options, state=state or self._state(prepared, options))))
        scores = {letter: max(float(first.scores[i]) for i in self._letter_ids(letter)) for letter in item.letters}
        choice = max(item.letters, key=lambda letter: scores[letter])  # max keeps the first of equals
        return {"choice": choice, "letter_scores": {k: round(v, 6) for k, v in scores.items()}}

    def _letter_ids(self, letter: str) -> list[int]:
        if letter not in self._letters:
            self._letters[letter] = letter_token_ids(self.lv.tokenizer, letter)
        return self._letters[letter]

    def _state(self, prepared: Prepared, options: SamplingOptions) -> Any:
        """A growing KV cache for a prompt longer than the transformers backend preallocates (a film on
        a GPU); None (the backend's own fresh state) otherwise."""
        backend = self.lv.backend
        limit = getattr(backend, "static_tokens", 0) if getattr(backend, "static_cache", False) else 0
        if not limit:
            return None
        rows = len(prepared.input_ids) - len(prepared.slots) + sum(int(s.shape[0]) for s in prepared.slots)
        return Session() if rows + options.max_new_tokens + 1 > limit else None
