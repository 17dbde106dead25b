"""The chat engine: one resident model, conversations that extend their KV cache turn by turn.

The first turn renders the whole template; each later turn appends only its own text after the
tokens already in the cache, so a film's thousands of visual tokens are read once.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

import torch

from llamavid.errors import ContextOverflow, NotEnoughMemory
from llamavid.model.layout import IMAGE_TOKEN
from llamavid.prompt.builders import image_prompt, movie_prompt
from llamavid.prompt.subtitles import interleave_subtitles
from llamavid.prompt.templates import get_template
from llamavid.runtime.backend import Backend
from llamavid.runtime.generate import SamplingOptions, Step
from llamavid.runtime.inputs import Visual
from llamavid.runtime.memory import frame_stride


@dataclass
class Turn:
    question: str
    answer: str = ""
    tokens: int = 0
    stopped: bool = False  # cut short by the caller (Ctrl-C, Stop button)


class Chat:
    """A multi-turn conversation about one visual input.

    The first turn renders the whole template; each later turn only appends
    ``USER: <image>\\n{question} ASSISTANT:`` after the tokens already in the cache. As in
    training (``imgsp_v1``), every image/video turn gets its own ``<image>`` whose tokens are
    conditioned on that turn's question; a film's thousands of tokens are read once, with the
    first question.
    """

    def __init__(self, lv, visual: Visual, backend: Backend | None = None):
        self.lv = lv
        self.visual = visual
        self.backend = backend or lv.backend
        self.state = self.backend.new_state()
        self.turns: list[Turn] = []
        self.last_token: int | None = None
        if visual.kind == "film":
            self.visual = self._fit_film(visual)
        self.notes: list[str] = list(self.visual.notes)

    def _fit_film(self, v: Visual, reserve: int = 256) -> Visual:
        """Keep every k-th frame when a film's 2 tokens per frame would overflow the context.

        The text is measured by tokenizing the movie prompt once; ``reserve`` leaves room for the
        question and the start of the answer. Subtitles all stay: they attach to the nearest kept
        frame, so no dialogue is lost. The caller's ``Visual`` is left as it is (others may share it).
        """
        limit, frames = self.backend.context_length(), len(v.features)
        per_frame = interleave_subtitles(v.frame_times, v.subtitles)
        ids = self.lv.tokenize(movie_prompt(per_frame, "", template=self.lv.template))
        text_tokens = len(ids) - 2 * frames + reserve
        if text_tokens + 2 * frames <= limit:
            return v
        stride = frame_stride(frames, 2, text_tokens, limit)
        times = v.frame_times[::stride]
        note = (f"the film has more frames than the {limit}-token context holds; "
                f"using every {stride}th frame ({len(times)} frames)")
        return replace(v, features=v.features[::stride], frame_times=times, notes=[*v.notes, note])

    def _visual_slots(self, question: str) -> tuple[str, list[torch.Tensor]]:
        """Text that carries this turn's ``<image>`` placeholders, and the rows for them."""
        v, marker = self.visual, IMAGE_TOKEN + "\n"
        if v.kind == "none" or (v.kind == "film" and self.turns):
            return "", []
        if v.kind == "film":
            per_frame = interleave_subtitles(v.frame_times, v.subtitles)
            text = movie_prompt(per_frame, question, template=self.lv.template)
            tokens = self.lv.visual_tokens(v.features, [question]).tokens
            return text, list(tokens[0].split(1))
        if v.kind == "video":
            return marker, [self.lv.visual_tokens(v.features, [question]).tokens[0]]
        slots = [self.lv.visual_tokens(v.features[i:i + 1], [question]).tokens[0] for i in range(len(v.features))]
        return marker * len(slots), slots

    def turn_text(self, question: str) -> tuple[str, list[torch.Tensor], bool]:
        """This turn's prompt text, its visual rows, and whether it continues earlier turns."""
        prefix, slots = self._visual_slots(question)
        marker = IMAGE_TOKEN + "\n"
        if not self.turns:
            if self.visual.kind == "film":
                return prefix, slots, False
            if not prefix:
                return image_prompt(question, self.lv.template, image_in="none"), slots, False
            text = image_prompt(question, self.lv.template, image_in="latest")
            return text.replace(marker, prefix, 1), slots, False
        conv = get_template(self.lv.template)
        return f"{conv.roles[0]}: {prefix}{question}{conv.sep}{conv.roles[1]}:", slots, True

    def _turn_ids(self, question: str) -> tuple[list[int], list[torch.Tensor]]:
        text, slots, follow_up = self.turn_text(question)
        ids = self.lv.tokenize(text)
        if follow_up:
            bos = getattr(self.lv.tokenizer, "bos_token_id", None)
            ids = ids[1:] if ids[:1] == [bos] else ids
            eos = self.lv.tokenizer.eos_token_id
            if self.last_token != eos:  # the last answer was cut: close it as the template would
                ids = [eos] + ids
        return ids, slots

    def ask(self, question: str, options: SamplingOptions | None = None) -> Iterator[str]:
        """Stream the answer; stopping the iteration early keeps the conversation consistent."""
        opts = self.lv.sampling(options)
        ids, slots = self._turn_ids(question)
        new_tokens = len(ids) - len(slots) + sum(s.shape[0] for s in slots)
        limit = self.backend.context_length()
        used = getattr(self.state, "length", 0)
        if used + new_tokens + 1 > limit:
            raise ContextOverflow(f"this turn needs {new_tokens} tokens but only {limit - used} of the "
                                  f"model's {limit}-token context are left; start a new chat or use fewer frames",
                                  needed=used + new_tokens + 1, limit=limit)
        plan = self.backend.preflight(self.state, new_tokens + opts.max_new_tokens)
        if not plan.fits:
            raise NotEnoughMemory(f"not enough memory: {plan.describe()}; "
                                  "use fewer frames, --load-4bit or a smaller model")
        turn = Turn(question)
        self.turns.append(turn)
        steps = self.backend.generate(self.state, ids, slots, opts)
        return self._decode(turn, steps)

    def _decode(self, turn: Turn, steps: Iterator[Step]) -> Iterator[str]:
        def tracked() -> Iterator[Step]:
            for step in steps:
                self.last_token = step.token
                turn.tokens += 1
                yield step

        try:
            for piece in self.lv.decode(tracked()):
                turn.answer += piece
                yield piece
        except GeneratorExit:
            turn.stopped = True
            raise


def plan_video_stride(lv, frames: int, question_tokens: int = 64, max_new_tokens: int = 512) -> int:
    """Frame stride so a clip's tokens fit the context (2 per frame for video checkpoints)."""
    limit = lv.backend.context_length()
    return frame_stride(frames, lv.config.tokens_per_frame, question_tokens + max_new_tokens, limit)
