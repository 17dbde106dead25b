"""The chat engine: one resident model, conversations that extend their KV cache turn by turn.

An LLM backend only has to take token ids with visual rows at the ``<image>`` placeholders and
stream tokens; the vision side (EVA, Q-Former, projectors) always runs in torch. That split is
what lets llama.cpp serve the LLM on a laptop while this module stays the same.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from . import prompts as P
from .conversation import get_template
from .generate import SamplingOptions, Session, Step, stream
from .memory import Estimate, estimate, frame_stride


class Backend(Protocol):
    """What an LLM engine provides (transformers here, llama.cpp elsewhere)."""

    name: str

    def context_length(self) -> int: ...

    def new_state(self) -> Any: ...

    def generate(self, state: Any, input_ids: Sequence[int], slots: Sequence[torch.Tensor],
                 options: SamplingOptions) -> Iterator[Step]: ...

    def preflight(self, state: Any, new_tokens: int) -> Estimate: ...


class TransformersBackend:
    """The LLM of a loaded :class:`LlamaVidForCausalLM` with a KV cache per conversation.

    On CUDA the cache is static (preallocated, fixed shapes) and the one-token decode step is
    compiled with CUDA graphs (``torch.compile(mode="reduce-overhead")``): at batch 1 decode is
    bound by kernel launches otherwise. Elsewhere the cache grows (``DynamicCache``) and the
    model runs eagerly. ``static_cache_tokens`` caps the preallocation; longer conversations
    (a film) fall back to the growing cache.
    """

    name = "transformers"

    def __init__(self, model, static_cache: bool | None = None, compile_decode: bool | None = None,
                 static_cache_tokens: int = 8192):
        self.model = model
        cuda = model.lm_head.weight.device.type == "cuda"
        self.static_cache = cuda if static_cache is None else static_cache
        self.static_tokens = min(static_cache_tokens, self.context_length())
        self.decode_step = None
        if (cuda if compile_decode is None else compile_decode) and self.static_cache:
            self.decode_step = torch.compile(model.forward, mode="reduce-overhead", dynamic=False)

    def context_length(self) -> int:
        cfg = self.model.config
        factor = (cfg.rope_parameters or {}).get("factor", 1.0) if cfg.rope_parameters else 1.0
        return int(cfg.max_position_embeddings * factor)

    def new_state(self) -> Session:
        if not self.static_cache:
            return Session()
        from transformers import StaticCache

        cache = StaticCache(config=self.model.config, max_cache_len=self.static_tokens)
        return Session(cache=cache, static_limit=self.static_tokens)

    def generate(self, state: Session, input_ids: Sequence[int], slots: Sequence[torch.Tensor],
                 options: SamplingOptions) -> Iterator[Step]:
        with torch.inference_mode():
            embeds = self.model.embed_inputs(list(input_ids), list(slots))
        needed = state.length + embeds.shape[1] + options.max_new_tokens + len(state.pending)
        if state.static_limit and needed > state.static_limit:
            raise ValueError(f"this conversation needs {needed} tokens, more than the {state.static_limit} "
                             "preallocated; start it with a larger static_cache_tokens or static_cache=False")
        return stream(self.model, embeds, options, state, input_ids, step=self.decode_step)

    def preflight(self, state: Session, new_tokens: int) -> Estimate:
        w = self.model.lm_head.weight
        return estimate(self.model.config, 0, state.length + new_tokens, w.device, w.element_size())


@dataclass
class Turn:
    question: str
    answer: str = ""
    tokens: int = 0
    stopped: bool = False  # cut short by the caller (Ctrl-C, Stop button)


@dataclass
class Visual:
    """The visual input of a chat, encoded once: EVA features stay cached across turns."""

    kind: str  # "none", "image", "video" or "film"
    features: Any = None  # (K, rows, C) images, (T, rows, C) clip or film
    frame_times: list[float] = field(default_factory=list)
    subtitles: list[Any] = field(default_factory=list)


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
        self.notes: list[str] = []
        if visual.kind == "film":
            self._fit_film()

    def _fit_film(self, reserve: int = 256) -> None:
        """Keep every k-th frame when a film's 2 tokens per frame would overflow the context.

        The text is measured by tokenizing the movie prompt once; ``reserve`` leaves room for the
        question and the start of the answer. Subtitles all stay: they attach to the nearest kept
        frame, so no dialogue is lost.
        """
        v, limit = self.visual, self.backend.context_length()
        frames = len(v.features)
        per_frame = P.interleave_subtitles(v.frame_times, v.subtitles)
        ids = self.lv.tokenize(P.movie_prompt(per_frame, "", template=self.lv.template))
        text_tokens = len(ids) - 2 * frames + reserve
        if text_tokens + 2 * frames <= limit:
            return
        stride = frame_stride(frames, 2, text_tokens, limit)
        v.features, v.frame_times = v.features[::stride], v.frame_times[::stride]
        self.notes.append(f"the film has more frames than the {limit}-token context holds; "
                          f"using every {stride}th frame ({len(v.frame_times)} frames)")

    # ----------------------------------------------------------------------------- prompt pieces
    def _visual_slots(self, question: str) -> tuple[str, list[torch.Tensor]]:
        """Text that carries this turn's ``<image>`` placeholders, and the rows for them."""
        v, marker = self.visual, P.DEFAULT_IMAGE_TOKEN + "\n"
        if v.kind == "none" or (v.kind == "film" and self.turns):
            return "", []
        if v.kind == "film":
            per_frame = P.interleave_subtitles(v.frame_times, v.subtitles)
            text = P.movie_prompt(per_frame, question, template=self.lv.template)
            tokens = self.lv.visual_tokens(v.features, [question]).tokens
            return text, list(tokens[0].split(1))
        if v.kind == "video":
            return marker, [self.lv.visual_tokens(v.features, [question]).tokens[0]]
        slots = [self.lv.visual_tokens(v.features[i:i + 1], [question]).tokens[0] for i in range(len(v.features))]
        return marker * len(slots), slots

    def turn_text(self, question: str) -> tuple[str, list[torch.Tensor], bool]:
        """This turn's prompt text, its visual rows, and whether it continues earlier turns."""
        prefix, slots = self._visual_slots(question)
        marker = P.DEFAULT_IMAGE_TOKEN + "\n"
        if not self.turns:
            if self.visual.kind == "film":
                return prefix, slots, False
            if not prefix:
                return P.image_prompt(question, self.lv.template, image_in="none"), slots, False
            text = P.image_prompt(question, self.lv.template, image_in="latest")
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

    # --------------------------------------------------------------------------------- one turn
    def ask(self, question: str, options: SamplingOptions | None = None) -> Iterator[str]:
        """Stream the answer; stopping the iteration early keeps the conversation consistent."""
        opts = self.lv.sampling(options)
        ids, slots = self._turn_ids(question)
        new_tokens = len(ids) - len(slots) + sum(s.shape[0] for s in slots)
        limit = self.backend.context_length()
        used = getattr(self.state, "length", 0)
        if used + new_tokens + 1 > limit:
            raise ValueError(f"this turn needs {new_tokens} tokens but only {limit - used} of the "
                             f"model's {limit}-token context are left; start a new chat or use fewer frames")
        plan = self.backend.preflight(self.state, new_tokens + opts.max_new_tokens)
        if not plan.fits:
            raise MemoryError(f"not enough memory: {plan.describe()}; use fewer frames, --load-4bit or a smaller model")
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


def film_visual(db, movie) -> Visual:
    """A library film as a chat input: features without the CLS row, as the long-video model reads them.

    The reference's movie path feeds ``feats[:, 1:]``, so its Q-Former never sees CLS; the
    memory map is sliced, not copied.
    """
    from indexer.library import frame_times, open_features, subtitles

    return Visual("film", film_features(open_features(movie)), frame_times(db, movie).tolist(),
                  subtitles(db, movie))


def film_features(feats):
    """Drop the CLS row of stored EVA features (T, 257, C) -> (T, 256, C), as the long-video
    path of the reference and of training feed them; a memory map stays a memory map."""
    return feats[:, 1:] if feats.shape[1] % 2 == 1 else feats


def plan_video_stride(lv, frames: int, question_tokens: int = 64, max_new_tokens: int = 512) -> int:
    """Frame stride so a clip's tokens fit the context (2 per frame for video checkpoints)."""
    cfg = lv.config
    per_frame = 1 + (1 if cfg.compress_type and "mean" in cfg.compress_type else
                     (int(cfg.compress_type.split(":")[1]) ** 2 if cfg.compress_type else
                      (cfg.image_size // 14) ** 2))
    limit = lv.backend.context_length()
    return frame_stride(frames, per_frame, question_tokens + max_new_tokens, limit)
