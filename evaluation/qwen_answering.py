"""The second family (Qwen3-VL) in ``llamavid eval``: the same items, runner and files as LLaMA-VID.

:class:`~evaluation.answering.Answerer` asks LLaMA-VID through :class:`~llamavid.runtime.api.LlamaVid`;
this module asks a loaded :class:`~llamavid.runtime.family.QwenVL` the same way, so a run of either
family is the same ``answers.jsonl`` with the same fields and ``llamavid eval compare`` can set them
side by side:

* the inputs are the chat's: a picture resized to the chat's token budget
  (:func:`~llamavid.runtime.qwen_chat.image_turn`), a clip sampled at the run's ``--fps`` in timed
  pairs, a library film as its planned frames decoded by seeking (:mod:`indexer.qwen_film`: the
  frames a chat question about the same film sees) with the item's subtitles interleaved;
* each question is read into an empty cache (the exact mode; the frames of a group are decoded once);
* multiple choice is the option letter scoring highest at the first step, free text is greedy.

The fast film mode (a film read once, each question a follow-up) is LLaMA-VID's prepared films,
which this family does not have yet: such a run is refused with the reason.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from evaluation.films import Films
from evaluation.items import Item, Source
from indexer.qwen_film import DEFAULT_BUDGET, film_frames
from llamavid.errors import BadMedia, CheckpointError, UserError
from llamavid.media.load import check_clip, load_image, load_video
from llamavid.model.qwen_vl import fit_grid
from llamavid.prompt.qwen_vl import QwenPrompt, Text, clip_prompt, film_prompt
from llamavid.prompt.subtitles import Cue
from llamavid.runtime.family import QwenVL
from llamavid.runtime.qwen_chat import image_turn, text_turn

__all__ = ["QwenAnswerer", "QwenInput", "load_qwen_input"]


@dataclass
class QwenInput:
    """A group's input for a Qwen3-VL, decoded once: ``kind`` none, image, video or film; pixels as
    RGB uint8 arrays already at the size the prompt reads them; a film's cues (its own or the library's)."""

    kind: str
    images: list[np.ndarray] = field(default_factory=list)
    frames: list[np.ndarray] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    cues: list[Cue] = field(default_factory=list)

    def prompt(self, question: str, subtitles: bool = True) -> QwenPrompt:
        """The first turn's prompt for ``question`` (a film without its cues when ``subtitles`` is False)."""
        if self.kind == "image":
            return image_turn(self.images).build(question, None)
        if self.kind == "video":
            return clip_prompt(question, self.frames, self.times)
        if self.kind == "film":
            return film_prompt(question, self.frames, self.times, self.cues if subtitles else [])
        return text_turn().build(question, None)


def load_qwen_input(source: Source, films: Films | None, fps: float, max_frames: int | None) -> QwenInput:
    """A benchmark source as a Qwen input: pictures whole (the prompt resizes them), a clip at ``fps``
    (at most ``max_frames``, and never past the film budget's cap) with each frame at the size one
    pair of a film's frames is planned at, a film through :mod:`indexer.qwen_film`."""
    if source.kind == "none":
        return QwenInput("none")
    if source.kind == "image":
        from evaluation.visuals import decode_base64_image  # visuals imports this module

        picture = (np.asarray(decode_base64_image(source.data, source.path)) if source.data is not None
                   else load_image(source.path, 512))  # as the chat reads a picture (app.qwen_live)
        return QwenInput("image", images=[picture])
    if source.kind == "video":
        info = check_clip(source.path)
        w, h = (info.height, info.width) if round(info.rotation / 90) % 2 else (info.width, info.height)
        size = fit_grid(w, h, DEFAULT_BUDGET.tokens_per_pair)
        cap = min(max_frames or DEFAULT_BUDGET.max_frames, DEFAULT_BUDGET.max_frames)
        frames, times = load_video(source.path, fps=fps, max_frames=cap,
                                   transform=lambda f: np.asarray(Image.fromarray(f).resize(size, Image.BICUBIC)))
        if not frames:
            raise BadMedia(f"{source.path}: no frame could be decoded")
        return QwenInput("video", frames=list(frames), times=list(times))
    if source.kind == "film":
        if films is None:
            raise ValueError("film sources need the library (VisualLoader(films=...))")
        movie, plan, cues = films.qwen_film(source.path, source.subtitle_file, source.subtitle_offset)
        return QwenInput("film", frames=film_frames(movie, plan), times=list(plan.times), cues=cues)
    raise ValueError(f"unknown source kind {source.kind!r}")


def letter_ids(model: QwenVL, letter: str) -> list[int]:
    """Token ids that spell ``letter`` as a first answer token (``A`` and `` A``, where each is one token)."""
    found = {ids[0] for ids in (model.tokenize(letter), model.tokenize(" " + letter)) if len(ids) == 1}
    if not found:
        raise CheckpointError(f"the Qwen tokenizer has no single token for the option letter {letter!r}; "
                              "multiple-choice items cannot be scored with this checkpoint")
    return sorted(found)


class QwenAnswerer:
    """Answers groups of items that share one input, as :class:`~evaluation.answering.Answerer` does."""

    def __init__(self, model: QwenVL, max_new_tokens: int = 128, film_mode: str = "exact"):
        if film_mode != "exact":
            raise UserError("the fast film mode reads a prepared film, which Qwen3-VL models do not have yet; "
                            "run this family with --film-mode exact")
        self.model = model
        self.max_new_tokens = max_new_tokens
        self.film_mode = film_mode
        self._letters: dict[str, list[int]] = {}

    def answer_group(self, visual: QwenInput, group: Sequence[Item], pending: set[str]
                     ) -> Iterator[tuple[Item, dict]]:
        """(item, record) for each item of ``group`` whose id is in ``pending``, in group order."""
        for item in group:
            if item.id not in pending:
                continue
            record = self.respond(item, visual.prompt(item.prompt, item.subtitles))
            if visual.kind == "film":
                record["frames"] = len(visual.frames)
            yield item, record

    def respond(self, item: Item, prompt: QwenPrompt) -> dict[str, Any]:
        """The record of one item, read into an empty cache: ``answer`` or ``choice`` with every letter's score."""
        if item.answer_prefix:
            prompt = QwenPrompt([*prompt.parts, Text(item.answer_prefix)])
        self.model.reset()
        logits = self.model.read(prompt)
        if item.letters:
            scores = {letter: max(float(logits[i]) for i in self._letter_ids(letter)) for letter in item.letters}
            choice = max(item.letters, key=lambda letter: scores[letter])  # max keeps the first of equals
            return {"choice": choice, "letter_scores": {k: round(v, 6) for k, v in scores.items()}}
        return {"answer": self._greedy(logits).strip()}

    def _greedy(self, logits: torch.Tensor) -> str:
        ids: list[int] = []
        for _ in range(self.max_new_tokens):
            if self.model.length >= self.model.context:
                break
            token = int(torch.argmax(logits))
            if token in self.model.stops:
                break
            ids.append(token)
            logits = self.model.step(token)
        return self.model.decode(ids)

    def _letter_ids(self, letter: str) -> list[int]:
        if letter not in self._letters:
            self._letters[letter] = letter_ids(self.model, letter)
        return self._letters[letter]
