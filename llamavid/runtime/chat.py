"""The chat engine: one resident model, conversations that extend their KV cache turn by turn.

The first turn renders the whole template; each later turn appends only its own text after the
tokens already in the cache, so a film's thousands of visual tokens are read once, conditioned on
the first question (the long-video model was trained on multi-turn data the same way: later turns
see the film through the cache, not through new visual tokens).

A turn runs in three phases (``visual``: the Q-Former over the frames, ``prefill``: reading the
prompt, ``answer``), each reporting progress and checking for a cancel through a
:class:`~llamavid.runtime.control.Control`. Before any of them a pre-flight counts the turn's
tokens from its text and the known rows per placeholder and checks the context, the memory and,
when a time budget is given, the expected time; a refusal says what would fit. A turn is kept
only once its prompt has been read; a turn that fails or is cancelled is cut out of the KV cache,
so the next question gets the answer it would have got had the failed turn never been asked.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from llamavid.errors import CheckpointError, ContextOverflow, NotEnoughMemory, UserError
from llamavid.model.layout import IMAGE_TOKEN
from llamavid.prompt.builders import image_prompt, movie_prompt
from llamavid.prompt.subtitles import interleave_subtitles, subtitle_text
from llamavid.prompt.templates import get_template
from llamavid.runtime.backend import Backend
from llamavid.runtime.control import Control
from llamavid.runtime.generate import SamplingOptions, Step
from llamavid.runtime.inputs import Visual
from llamavid.runtime.memory import FilmPlan, frame_stride, ordinal, plan_context, require_free
from llamavid.storage import human_size

FILM_ROWS_PER_FRAME = 2  # the long-video prompt: <image><image> per frame, a context and a content row


@dataclass
class Turn:
    question: str
    answer: str = ""
    tokens: int = 0
    stopped: bool = False  # cut short by the caller (Ctrl-C, closing the stream)
    answer_ids: list[int] = field(default_factory=list)  # what the model chose, to rebuild the cache exactly


@dataclass
class TurnPlan:
    """A turn before anything heavy runs: its ids (-200 at each placeholder) and the rows each
    placeholder will take, so the pre-flight can count tokens without the Q-Former."""

    ids: list[int]
    slot_rows: list[int]
    follow_up: bool

    @property
    def tokens(self) -> int:
        return len(self.ids) - len(self.slot_rows) + sum(self.slot_rows)


#: the frame stride of a chat about a film's dialogue alone (no frame is read): kept with a
#: conversation, it stays about the dialogue when the film's frames are indexed later
DIALOGUE_ONLY = 0


class Chat:
    """A multi-turn conversation about one visual input.

    The first turn renders the whole template; each later turn only appends
    ``USER: <image>\\n{question} ASSISTANT:`` after the tokens already in the cache. As in
    training (``imgsp_v1``), every image/video turn gets its own ``<image>`` whose tokens are
    conditioned on that turn's question; a film's thousands of tokens are read once, with the
    first question. ``relevance`` holds, per frame, how strongly the question that made the
    cached visual tokens attended to it (:func:`llamavid.model.visual_tokens.frame_relevance`).
    """

    def __init__(self, lv, visual: Visual, backend: Backend | None = None, time_budget: float | None = None,
                 stride: int | None = None, plan: FilmPlan | None = None):
        """``stride`` reads a film with every k-th frame as an earlier session did (a kept
        conversation must see the film it was asked about); None plans it (:meth:`plan_stride`).
        ``plan`` (a library film's, or a kept conversation's; kept as :attr:`film_plan`) fixes both
        the stride and the context:
        the backend runs an ``n_ctx``-token context (llama.cpp makes one of that size, refusing with
        :class:`~llamavid.errors.MemoryInUse` when it does not fit the memory free now), and
        nothing is planned from the memory free now."""
        self.lv = lv
        self.backend = backend or lv.backend
        self.film_plan = plan
        if plan is not None:
            self.backend.use_context(plan.n_ctx)
        self.state = self.backend.new_state()
        self.turns: list[Turn] = []
        self.last_token: int | None = None
        self.relevance: torch.Tensor | None = None
        self.stride = 1
        if plan is not None:
            stride = plan.stride
        if visual.kind == "film":
            visual = self._fit_film(visual, time_budget, stride)
        elif visual.kind == "dialogue":
            visual = self._fit_dialogue(visual)
            self.stride = DIALOGUE_ONLY
        self.visual = visual
        self.notes: list[str] = list(self.visual.notes)

    def _film_text_tokens(self, v: Visual, reserve: int) -> int:
        """Tokens of a film prompt besides its frames (the template, the subtitles), plus ``reserve``."""
        return film_text_tokens(self.lv, v, reserve)

    def _fit_film(self, v: Visual, time_budget: float | None, stride: int | None, reserve: int = 256) -> Visual:
        """Keep every k-th frame when the film would not fit the context, the memory or the time
        budget; ``reserve`` leaves room for the question and the start of the answer (each turn's
        pre-flight then fits the answer to what is left). Subtitles all stay: they attach to the
        nearest kept frame. The caller's ``Visual`` is left as it is (others may share it)."""
        if stride is None:
            text = self._film_text_tokens(v, reserve)
            stride, limit = self.plan_stride(len(v.features), FILM_ROWS_PER_FRAME, text, 0, time_budget)
        elif self.film_plan is not None and self.film_plan.budget is not None:
            n_ctx, budget = self.film_plan.n_ctx, human_size(self.film_plan.budget)
            limit = (f"the {n_ctx}-token context of the {budget} film memory budget holds "
                     "(`llamavid index prepare --memory-gb` sets it)")
        else:
            limit = "this conversation was read with"
        self.stride = stride
        if stride == 1:
            return v
        times = v.frame_times[::stride]
        note = (f"the film has more frames than {limit}; "
                f"using every {ordinal(stride)} frame ({len(times)} frames)")
        return replace(v, features=v.features[::stride], frame_times=times, notes=[*v.notes, note])

    def _fit_dialogue(self, v: Visual, reserve: int = 512) -> Visual:
        """A film's dialogue alone (its frames are not read yet): every k-th line when all of them
        would not leave ``reserve`` tokens of the context for the question and the answer."""
        limit = self.context_length() - reserve
        step = 1
        while step < max(1, len(v.subtitles)):
            if len(self.lv.tokenize(dialogue_text(v.subtitles[::step], "", self.lv.template))) <= limit:
                break
            step += 1
        if step == 1:
            return v
        kept = v.subtitles[::step]
        return replace(v, subtitles=kept, notes=[*v.notes, f"the dialogue is longer than the context holds; "
                                                           f"using every {ordinal(step)} line ({len(kept)} lines)"])

    def plan_stride(self, frames: int, rows_per_frame: int, text_tokens: int, answer_tokens: int,
                    time_budget: float | None = None) -> tuple[int, str]:
        """The smallest frame stride whose turn fits the context, the memory and (when the machine's
        rates are known) the time budget, and which of them set it, in words. Refuses (a
        ContextOverflow) only when not even one frame fits beside the text."""
        limit = self.context_length()
        stride = frame_stride(frames, rows_per_frame, text_tokens + answer_tokens, limit)
        why = f"the {limit}-token context holds"
        while stride < frames:
            kept = math.ceil(frames / stride)
            tokens = text_tokens + rows_per_frame * kept
            estimate = self.backend.preflight(self.state, tokens, answer_tokens)
            seconds = self.expected_seconds(kept, tokens)
            if not estimate.fits:
                why = f"the free memory holds ({estimate.available / 2**30:.1f} GiB)"
            elif time_budget is not None and seconds is not None and seconds > time_budget:
                why = f"can be read in {time_budget:.0f} s"
            else:
                break
            stride += 1
        return stride, why

    def context_length(self) -> int:
        """The tokens this conversation may hold: its :attr:`film_plan`'s context, else the backend's."""
        limit = self.backend.context_length()
        return min(limit, self.film_plan.n_ctx) if self.film_plan is not None else limit

    def expected_seconds(self, frames: int, tokens: int) -> float | None:
        """Q-Former and prefill time at the rates measured on this machine (None before any)."""
        visual = self.lv.rates.seconds("visual", frames) if frames else 0.0
        prefill = self.lv.rates.seconds("prefill", tokens)
        return None if visual is None or prefill is None else visual + prefill

    def plan(self, question: str) -> TurnPlan:
        """This turn's ids and placeholder rows, before any Q-Former work."""
        v, tpf = self.visual, self.lv.config.tokens_per_frame
        if v.kind == "film":
            rows = [] if self.turns else [1] * (FILM_ROWS_PER_FRAME * len(v.features))
        elif v.kind == "video":
            rows = [tpf * len(v.features)]
        elif v.kind == "image":
            rows = [tpf] * len(v.features)
        else:
            rows = []
        text = self._text(question, len(rows) if v.kind != "film" else None)
        ids = self.lv.tokenize(text)
        follow_up = bool(self.turns)
        if follow_up:
            bos = getattr(self.lv.tokenizer, "bos_token_id", None)
            ids = ids[1:] if ids[:1] == [bos] else ids
            eos = self.lv.tokenizer.eos_token_id
            if self.last_token != eos:  # the last answer was cut: close it as the template would
                ids = [eos] + ids
        return TurnPlan(ids, rows, follow_up)

    def _text(self, question: str, placeholders: int | None) -> str:
        """The turn's prompt text; ``placeholders`` None: a film's first turn (the movie prompt)."""
        v, marker = self.visual, IMAGE_TOKEN + "\n"
        if v.kind == "film" and not self.turns:
            return movie_prompt(interleave_subtitles(v.frame_times, v.subtitles), question, template=self.lv.template)
        if v.kind == "dialogue" and not self.turns:
            return dialogue_text(v.subtitles, question, self.lv.template)
        prefix = marker * (placeholders or 0)
        if self.turns:
            conv = get_template(self.lv.template)
            return f"{conv.roles[0]}: {prefix}{question}{conv.sep}{conv.roles[1]}:"
        if not prefix:
            return image_prompt(question, self.lv.template, image_in="none")
        return image_prompt(question, self.lv.template, image_in="latest").replace(marker, prefix, 1)

    def preflight(self, plan: TurnPlan, opts: SamplingOptions, time_budget: float | None = None) -> SamplingOptions:
        """Refuse before any heavy work a turn that cannot fit; returns the options with the answer
        budget cut to the context left (an answer stops at the context's end, never overflows)."""
        limit, used, new = self.context_length(), self.state.length, plan.tokens
        if used + new + 1 > limit:
            raise ContextOverflow(f"this turn needs {new} tokens but only {limit - used} of the model's "
                                  f"{limit}-token context are left; start a new chat or use fewer frames",
                                  needed=used + new + 1, limit=limit)
        answer = min(opts.max_new_tokens, limit - used - new)
        estimate = self.backend.preflight(self.state, new, answer)
        if not estimate.fits and self.film_plan is not None:  # the film's plan is fixed: only freeing memory helps
            require_free(estimate.needed, estimate.available, "this question")
        if not estimate.fits:
            raise NotEnoughMemory(f"not enough memory: {estimate.describe()}; "
                                  "use fewer frames, --load-4bit or a smaller model")
        frames = len(self.visual.features) if plan.slot_rows and self.visual.features is not None else 0
        seconds = self.expected_seconds(frames, new)
        if time_budget is not None and seconds is not None and seconds > time_budget:
            raise UserError(f"this question would take about {seconds:.0f} s on this machine, over the "
                            f"{time_budget:.0f} s allowed; {self._what_fits(plan, frames, time_budget)}")
        return replace(opts, max_new_tokens=answer)

    def _what_fits(self, plan: TurnPlan, frames: int, budget: float) -> str:
        """The first stride whose expected time fits, in words ("every 2nd frame: about 110 s")."""
        rows_per_frame = sum(plan.slot_rows) // frames if frames else 0
        for stride in (2, 3, 4, 6, 8, 12, 16):
            kept = math.ceil(frames / stride)
            seconds = self.expected_seconds(kept, plan.tokens - rows_per_frame * (frames - kept))
            if seconds is not None and seconds <= budget:
                return f"every {ordinal(stride)} frame: about {seconds:.0f} s"
        return "ask about a shorter clip or allow more time"

    def _slots(self, question: str, control: Control | None) -> list[torch.Tensor]:
        """Visual rows for this turn's placeholders: the Q-Former pass, with progress and cancel."""
        v = self.visual
        if v.kind in ("none", "dialogue") or (v.kind == "film" and self.turns):
            return []
        features = [v.features[i:i + 1] for i in range(len(v.features))] if v.kind == "image" else [v.features]
        tracker = control.phase("visual", len(v.features), "frames") if control else None
        done, out = 0, []
        for part in features:
            hook = (lambda n, total, before=done: tracker.update(before + n)) if tracker else None
            tokens = self.lv.visual_tokens(part, [question], on_block=hook)
            self.relevance = tokens.relevance[0] if v.kind != "image" else None
            out += list(tokens.tokens[0].split(1)) if v.kind == "film" else [tokens.tokens[0]]
            done += len(part)
        if tracker:
            tracker.finish()
        return out

    def turn_text(self, question: str) -> tuple[str, list[torch.Tensor], bool]:
        """This turn's prompt text, its visual rows, and whether it continues earlier turns."""
        plan = self.plan(question)
        return self._text(question, len(plan.slot_rows) if self.visual.kind != "film" else None), \
            self._slots(question, None), plan.follow_up

    def turn_ids(self, question: str) -> tuple[list[int], list[torch.Tensor]]:
        """This turn's ids and visual rows (runs the Q-Former): what ``ask`` sends to the backend."""
        return self.plan(question).ids, self._slots(question, None)

    def ask(self, question: str, options: SamplingOptions | None = None, control: Control | None = None,
            time_budget: float | None = None) -> Iterator[str]:
        """Stream the answer. The pre-flight, the Q-Former pass and the prompt's prefill run before
        this returns; ``control`` may cancel any of them, or the answer, from another thread
        (:class:`~llamavid.errors.Cancelled`: the turn is cut out as if never asked). Closing the
        returned iterator early keeps the answer so far, marked ``stopped``."""
        plan = self.plan(question)
        opts = self.preflight(plan, self.lv.sampling(options), time_budget)
        snap = self.backend.snapshot(self.state)
        last_token, relevance = self.last_token, self.relevance
        try:
            slots = self._slots(question, control)
            tracker = control.phase("prefill", plan.tokens + len(self.state.pending), "tokens") if control else None
            steps = self.backend.generate(self.state, plan.ids, slots, opts,
                                          on_prefill=(lambda n, total: tracker.update(n)) if tracker else None)
            if tracker:
                tracker.finish()
        except BaseException:
            self.backend.rollback(self.state, snap)
            self.relevance = relevance
            raise
        turn = Turn(question)
        self.turns.append(turn)
        return self._answer(turn, steps, opts, control, snap, last_token)

    def _answer(self, turn: Turn, steps: Iterator[Step], opts: SamplingOptions, control: Control | None,
                snap, last_token: int | None) -> Iterator[str]:
        tracker = control.phase("answer", opts.max_new_tokens, "tokens") if control else None

        def tracked() -> Iterator[Step]:
            for step in steps:
                self.last_token = step.token
                turn.tokens += 1
                turn.answer_ids.append(step.token)
                yield step
                if tracker:
                    tracker.update(turn.tokens)

        try:
            for piece in self.lv.decode(tracked()):
                turn.answer += piece
                yield piece
        except GeneratorExit:
            turn.stopped = True
            raise
        except BaseException:  # a cancel or an error mid-answer: the turn never happened
            self.backend.rollback(self.state, snap)
            self.turns.remove(turn)
            self.last_token = last_token
            raise

    def restore(self, turns: Sequence[Turn], control: Control | None = None) -> None:
        """Rebuild a kept conversation (after a restart): each turn's prompt is read and its answer
        fed token by token, as when it was generated, so the cache is the one it had then and the
        next answer is the one an uninterrupted chat would give."""
        if self.turns:
            raise ValueError("restore() rebuilds a new chat; this one already has turns")
        for kept in turns:
            if not kept.answer_ids:
                raise ValueError(f"turn {kept.question!r} has no answer token ids to rebuild from")
            plan = self.plan(kept.question)
            slots = self._slots(kept.question, control)
            tracker = control.phase("prefill", plan.tokens + len(self.state.pending), "tokens") if control else None
            self.backend.feed(self.state, plan.ids, slots,
                              on_prefill=(lambda n, total, t=tracker: t.update(n)) if tracker else None)
            for token in kept.answer_ids[:-1]:
                self.backend.feed(self.state, [token])
            self._end_turn(replace(kept, answer_ids=list(kept.answer_ids)))

    def replay(self, history: Sequence[tuple[str, str]], control: Control | None = None) -> None:
        """Read earlier (question, answer) turns that another chat answered (an OpenAI-style message
        list) into this new chat's cache, as if it had answered them: each turn's prompt and the
        given answer in one prefill, ending as a generated answer ends (the end-of-sequence token).
        Unlike :meth:`restore`, the answers are text: their tokens are the tokenizer's, not the
        model's own choices."""
        if self.turns:
            raise ValueError("replay() starts a new chat; this one already has turns")
        tokenizer, limit = self.lv.tokenizer, self.context_length()
        if history and tokenizer is None:
            raise CheckpointError(f"{self.lv.report.folder}: no LLaMA tokenizer (tokenizer.model) in the "
                                  "checkpoint folder")
        for question, answer in history:
            if control:
                control.check()
            plan = self.plan(question)
            answer_ids = tokenizer.encode(answer, add_special_tokens=False) + [tokenizer.eos_token_id]
            needed = self.state.length + plan.tokens + len(answer_ids)
            if needed + 1 > limit:
                raise ContextOverflow(f"the earlier messages need {needed} tokens, more than the model's "
                                      f"{limit}-token context; send fewer of them", needed=needed, limit=limit)
            slots = self._slots(question, control)
            tracker = control.phase("prefill", len(plan.ids) + len(answer_ids) - 1 + len(self.state.pending),
                                    "tokens") if control else None
            self.backend.feed(self.state, plan.ids + answer_ids[:-1], slots,
                              on_prefill=(lambda n, total, t=tracker: t.update(n)) if tracker else None)
            if tracker:
                tracker.finish()
            self._end_turn(Turn(question, answer, len(answer_ids), False, answer_ids))

    def _end_turn(self, turn: Turn) -> None:
        """Keep a turn read from outside: its last token (end of sequence) waits to be fed with the next."""
        last = turn.answer_ids[-1]
        self.state.seen_ids.append(last)
        self.state.pending = [last]
        self.last_token = last
        self.turns.append(turn)


def film_text_tokens(lv, visual: Visual, reserve: int = 256) -> int:
    """Tokens of a film prompt besides its frames (the template, the subtitles), plus ``reserve``
    for the question and the start of the answer."""
    per_frame = interleave_subtitles(visual.frame_times, visual.subtitles)
    ids = lv.tokenize(movie_prompt(per_frame, "", template=lv.template))
    return len(ids) - FILM_ROWS_PER_FRAME * len(visual.features) + reserve


def plan_film(lv, visual: Visual, budget: int, backend: Backend | None = None) -> FilmPlan:
    """A film's :class:`FilmPlan` for this model: the context its trained length allows within
    ``budget`` bytes of KV cache (:func:`~llamavid.runtime.memory.plan_context`), then the smallest
    stride whose frames and text (with room for a question) fit it. Depends on the film, the model
    and the budget only: the memory free now plays no part, so every process plans a film alike."""
    backend = backend or lv.backend
    n_ctx = plan_context(backend.trained_context(), backend.kv_bytes_per_token(), budget)
    stride = frame_stride(len(visual.features), FILM_ROWS_PER_FRAME, film_text_tokens(lv, visual), n_ctx)
    return FilmPlan(stride, n_ctx, budget)


def plan_video_stride(lv, frames: int, question_tokens: int = 64, max_new_tokens: int = 512) -> int:
    """Frame stride so a clip's tokens fit the context (2 per frame for video checkpoints)."""
    limit = lv.backend.context_length()
    return frame_stride(frames, lv.config.tokens_per_frame, question_tokens + max_new_tokens, limit)


def dialogue_text(cues: Sequence[Any], question: str, template: Any) -> str:
    """The movie prompt with the film's lines alone, one per line: the reference's ``--pure-text``
    mode, for a film whose frames are not read yet."""
    return movie_prompt("\n".join(subtitle_text(c) for c in cues), question, template=template, pure_text=True)
