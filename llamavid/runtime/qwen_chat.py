"""A conversation with a Qwen3-VL (the second family): the same turns, streaming and cancel as :class:`Chat`.

The first turn reads what the conversation is about (pictures, a clip's frames, a library film's
frames with its dialogue, or nothing) with the first question, built by a :class:`FirstTurn` when
the question comes (a film's frames are decoded then, with progress); each later turn appends only
its own text after the answer before it, so the film is read once. Every chosen token is read into
the cache as it is chosen (a stop token too), so a follow-up continues exactly where the answer
ended. A turn that fails or is cancelled before its answer is kept is cut out of the cache, as
:class:`~llamavid.runtime.chat.Chat` does: the next answer is the one it would have been.

The conversation's state is the backend's cache (``state_bytes``/``load_state``) beside the kept
turns' ids: :meth:`QwenChat.restore` rebuilds it from the turns when no state is at hand.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from llamavid.errors import ContextOverflow
from llamavid.model.qwen_vl import fit_grid
from llamavid.prompt.qwen_vl import END_USER, USER, Frames, QwenPrompt, Text, clean, follow_up
from llamavid.runtime.chat import Turn
from llamavid.runtime.control import Control
from llamavid.runtime.family import QwenVL
from llamavid.runtime.generate import SamplingOptions, apply_repetition_penalty, make_generator, sample

__all__ = ["IMAGE_TOKENS", "FirstTurn", "QwenChat", "image_turn", "text_turn"]

#: Visual tokens one picture may spend (a 512x512 picture is 256): four pairs of a film's frames,
#: enough to read a caption, and a second or two of prefill for a 4B on a laptop CPU.
IMAGE_TOKENS = 256


@dataclass
class FirstTurn:
    """What a conversation is about: ``build(question, control)`` makes its first turn's prompt
    (decoding frames then); ``frame_times`` are the times of the frames shown (for moments);
    ``kind``: none, image, video, film or dialogue."""

    kind: str
    build: Callable[[str, Control | None], QwenPrompt]
    frame_times: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    tokens_hint: int = 0  # tokens the first turn will take besides the question, where known before building


def text_turn() -> FirstTurn:
    return FirstTurn("none", lambda q, _c: QwenPrompt([Text(USER + clean(q) + END_USER)]))


def image_turn(images: Sequence[np.ndarray], max_tokens: int = IMAGE_TOKENS) -> FirstTurn:
    """Pictures (RGB arrays), each resized to spend at most ``max_tokens``, before the question."""
    from PIL import Image

    groups = []
    for image in images:
        h, w = np.asarray(image).shape[:2]
        size = fit_grid(w, h, max_tokens)
        resized = np.asarray(Image.fromarray(np.asarray(image, dtype=np.uint8)).resize(size, Image.BICUBIC))
        groups.append(Frames((resized,), video=False))

    def build(question: str, _control: Control | None) -> QwenPrompt:
        return QwenPrompt([Text(USER), *groups, Text(clean(question) + END_USER)])

    return FirstTurn("image", build, tokens_hint=sum(g.tokens() for g in groups))


@dataclass
class View:
    """What :mod:`app.moments` reads of a chat: the times of the frames the model saw."""

    frame_times: list[float]


class QwenChat:
    """A conversation with a Qwen3-VL about one input (see the module docstring)."""

    stride = 1  # every planned frame is read: kept with the conversation like LLaMA-VID's stride
    relevance = None  # no Q-Former: moments come from the cues and the scene vectors alone

    def __init__(self, model: QwenVL, first: FirstTurn):
        self.model, self.first = model, first
        self.turns: list[Turn] = []
        self.notes: list[str] = list(first.notes)
        self.visual = View(first.frame_times)
        self.closed = True  # the last answer ended with a stop token (else the next turn closes it)
        model.reset()

    @property
    def lv(self) -> QwenVL:  # the name the front ends' progress code reads rates from
        return self.model

    def context_length(self) -> int:
        return self.model.context

    def _prompt(self, question: str, control: Control | None) -> QwenPrompt:
        return self.first.build(question, control) if not self.turns else follow_up(question, self.closed)

    def ask(self, question: str, options: SamplingOptions | None = None, control: Control | None = None,
            time_budget: float | None = None) -> Iterator[str]:
        """Stream the answer; the prompt is read before this returns (``control``: progress, cancel).
        Closing the iterator early keeps the answer so far, marked ``stopped``."""
        opts = replace(options or SamplingOptions(), stop_ids=self.model.stops)
        mark = self.model.mark()
        try:
            prompt = self._prompt(question, control)
            self._check_fits(prompt, opts)
            logits = self.model.read(prompt, control)
        except BaseException:
            self.model.rollback(mark)
            raise
        left = self.model.context - self.model.length - 1
        opts = replace(opts, max_new_tokens=max(1, min(opts.max_new_tokens, left)))
        turn = Turn(question)
        self.turns.append(turn)
        return self._answer(turn, logits, opts, control, mark)

    def _check_fits(self, prompt: QwenPrompt, opts: SamplingOptions) -> None:
        """Refuse a turn whose visual tokens alone would not fit what is left of the context."""
        need = prompt.visual_tokens(self.model.geometry) + sum(len(p.text) // 4 for p in prompt.parts
                                                                if isinstance(p, Text))
        left = self.model.context - self.model.length
        if need + 16 > left:
            raise ContextOverflow(f"this turn needs about {need} tokens but only {left} of the model's "
                                  f"{self.model.context}-token context are left; start a new chat, or load the "
                                  "model with a larger context (--n-ctx)", needed=self.model.length + need,
                                  limit=self.model.context)

    def _answer(self, turn: Turn, logits: torch.Tensor, opts: SamplingOptions, control: Control | None,
                mark) -> Iterator[str]:
        tracker = control.phase("answer", opts.max_new_tokens, "tokens") if control else None
        generator = make_generator(opts)
        seen: list[int] = []
        shown = ""
        try:
            for _ in range(opts.max_new_tokens):
                scores = apply_repetition_penalty(logits, seen, opts.repetition_penalty)
                token = sample(scores, opts, generator)
                seen.append(token)
                turn.answer_ids.append(token)
                turn.tokens += 1
                logits = self.model.step(token)  # read now: a follow-up continues after it
                self.closed = token in opts.stop_ids
                text = self.model.decode(turn.answer_ids)
                if not text.endswith("\ufffd") and len(text) > len(shown):  # whole characters only
                    piece, shown = text[len(shown):], text
                    turn.answer = shown
                    yield piece
                if tracker:
                    tracker.update(turn.tokens)
                if self.closed:
                    break
        except GeneratorExit:
            turn.stopped = True
            turn.answer = shown
            raise
        except BaseException:  # a cancel or an error mid-answer: the turn never happened
            self.model.rollback(mark)
            self.turns.remove(turn)
            self.closed = self._ends_closed()
            raise
        turn.answer = self.model.decode(turn.answer_ids)

    def restore(self, turns: Sequence[Turn], control: Control | None = None) -> None:
        """Rebuild a kept conversation: each turn's prompt read (the first decodes its frames again),
        its answer's ids fed back, so the cache is the one it had and the next answer the same."""
        if self.turns:
            raise ValueError("restore() rebuilds a new chat; this one already has turns")
        for kept in turns:
            if not kept.answer_ids:
                raise ValueError(f"turn {kept.question!r} has no answer token ids to rebuild from")
            self.model.read(self._prompt(kept.question, control), control)
            self.model.feed_ids(kept.answer_ids)
            self.turns.append(replace(kept, answer_ids=list(kept.answer_ids)))
            self.closed = kept.answer_ids[-1] in self.model.stops

    def replay(self, history: Sequence[tuple[str, str]], control: Control | None = None) -> None:
        """Read earlier (question, answer) turns another chat answered (an OpenAI message list), each
        answer as its text's tokens and a stop token, as if this chat had answered them."""
        end = self.model.stops[0] if self.model.stops else None
        turns = []
        for question, answer in history:
            ids = self.model.tokenize(clean(answer)) + ([end] if end is not None else [])
            turns.append(Turn(question, answer, len(ids), False, ids))
        self.restore(turns, control)

    def state_bytes(self) -> bytes:
        return self.model.state_bytes()

    def load_state(self, data: bytes, turns: Sequence[Turn]) -> None:
        """The cache a conversation with ``turns`` had (see :meth:`state_bytes`)."""
        self.model.load_state(data)
        self.turns = [replace(t, answer_ids=list(t.answer_ids)) for t in turns]
        self.closed = self._ends_closed()

    def _ends_closed(self) -> bool:
        """Whether the last kept answer ended with a stop token (none kept: nothing to close)."""
        last = self.turns[-1].answer_ids[-1:] if self.turns else []
        return not last or last[0] in self.model.stops
