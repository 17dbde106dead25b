"""Token-by-token generation with a KV cache, greedy or sampled.

A small loop of our own rather than ``model.generate``: the prompt arrives as embeddings (text
with visual tokens spliced in), tokens must stream to the caller one by one, a caller may stop
early (Ctrl-C, a closed connection) by simply not pulling the next token, and the cache must
outlive the call so a later turn can extend it instead of re-reading a film.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import DynamicCache

from llamavid.runtime.memory import PREFILL_CHUNK


@dataclass
class SamplingOptions:
    """Defaults of the reference CLI (temperature 0.2, top-p 0.7) with transformers' top-k 50.

    ``temperature <= 0`` means greedy decoding.
    """

    max_new_tokens: int = 512
    temperature: float = 0.2
    top_p: float = 0.7
    top_k: int = 50
    repetition_penalty: float = 1.0
    seed: int | None = None
    stop_ids: Sequence[int] = (2,)

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0


@dataclass
class Step:
    """One generated token and the scores it was chosen from (after penalties, before sampling)."""

    token: int
    scores: torch.Tensor  # (vocab,) float32


@dataclass
class Session:
    """The KV cache and the ids the model has seen, so a conversation can be extended."""

    cache: Any = field(default_factory=DynamicCache)  # the backend's KV state
    length: int = 0
    seen_ids: list[int] = field(default_factory=list)
    pending: list[int] = field(default_factory=list)  # chosen but not yet run through the model
    static_limit: int = 0  # tokens a preallocated (static) cache holds; 0 = it grows


def apply_repetition_penalty(scores: torch.Tensor, seen: Sequence[int], penalty: float) -> torch.Tensor:
    """CTRL-style penalty as transformers applies it: divide positive, multiply negative scores."""
    if penalty == 1.0 or not seen:
        return scores
    ids = torch.tensor(sorted(set(seen)), device=scores.device)
    picked = scores[ids]
    scores = scores.clone()
    scores[ids] = torch.where(picked > 0, picked / penalty, picked * penalty)
    return scores


def sample(scores: torch.Tensor, opts: SamplingOptions, generator: torch.Generator | None) -> int:
    """temperature -> top-k -> top-p -> multinomial, the order transformers uses."""
    if opts.greedy:
        return int(scores.argmax())
    logits = scores / opts.temperature
    if 0 < opts.top_k < logits.shape[-1]:
        kth = torch.topk(logits, opts.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if opts.top_p < 1.0:
        sorted_logits, order = logits.sort(descending=False)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        drop = cumulative <= 1 - opts.top_p
        drop[-1] = False  # always keep the most likely token
        logits = logits.masked_fill(drop.scatter(0, order, drop), float("-inf"))
    probs = logits.softmax(-1)
    return int(torch.multinomial(probs, 1, generator=generator))


@torch.inference_mode()
def forward_step(model, session: Session, embeds: torch.Tensor, chunk: int = PREFILL_CHUNK,
                 step: Callable | None = None, on_chunk: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Run (1, L, H) embeddings through the model after what the session holds; last logits.

    Long prompts (a film is thousands of rows) go in chunks, which bounds the attention
    scores and MLP activations to ``chunk`` rows at a time; the result is the same.
    ``on_chunk(done, total)`` follows each chunk; an exception it raises (a cancel) stops there,
    with the session's length counting only the chunks that ran.
    """
    total, done = embeds.shape[1], 0
    for part in embeds.split(chunk, dim=1):
        positions = torch.arange(session.length, session.length + part.shape[1], device=part.device)
        run = step if step is not None and part.shape[1] == 1 else model
        out = run(inputs_embeds=part, cache=session.cache, use_cache=True,
                  position_ids=positions.unsqueeze(0), logits_to_keep=1)
        session.cache = out.cache
        session.length += part.shape[1]
        done += part.shape[1]
        if on_chunk is not None:
            on_chunk(done, total)
    return out.logits[0, -1].float()


def decode_loop(logits: torch.Tensor, feed: Callable[[int], torch.Tensor], opts: SamplingOptions,
                session: Session, generator: torch.Generator | None) -> Iterator[Step]:
    """Choose, yield, feed back: the part every LLM backend shares.

    ``feed(token)`` runs one token through the backend's model and returns the next logits.
    The last token is left pending in the session (not fed), so a follow-up turn runs it first.
    """
    for i in range(opts.max_new_tokens):
        scores = apply_repetition_penalty(logits, session.seen_ids, opts.repetition_penalty)
        token = sample(scores, opts, generator)
        session.seen_ids.append(token)
        yield Step(token, scores)
        if token in opts.stop_ids or i == opts.max_new_tokens - 1:
            session.pending = [token]
            return
        logits = feed(token)


def make_generator(opts: SamplingOptions, device: torch.device | str = "cpu") -> torch.Generator | None:
    if opts.seed is None or opts.greedy:
        return None
    return torch.Generator(device=device).manual_seed(opts.seed)


def stream(model, prompt_embeds: torch.Tensor, opts: SamplingOptions, session: Session | None = None,
           prompt_ids: Sequence[int] = (), step: Callable | None = None,
           on_prefill: Callable[[int, int], None] | None = None) -> Iterator[Step]:
    """Yield tokens as they are chosen. Stops at a stop id (which is yielded) or the token limit.

    ``prompt_embeds`` continues ``session`` (a fresh one if None), so a follow-up question only
    costs its own tokens. The prompt is read before this returns (``on_prefill(done, total)``
    follows it); the answer is produced as the iterator is pulled. ``step`` replaces the model
    for one-token steps (a compiled forward).
    """
    session = session if session is not None else Session()
    session.seen_ids.extend(i for i in prompt_ids if i >= 0)
    embed = model.get_input_embeddings()
    device = prompt_embeds.device
    prompt_embeds = with_pending(embed, session, prompt_embeds)
    logits = forward_step(model, session, prompt_embeds, on_chunk=on_prefill)

    def feed(token: int) -> torch.Tensor:
        return forward_step(model, session, embed(torch.tensor([[token]], device=device)), step=step)

    return decode_loop(logits, feed, opts, session, make_generator(opts, device))


def with_pending(embed, session: Session, prompt_embeds: torch.Tensor) -> torch.Tensor:
    """The last answer's final token (chosen, never run) goes in first, as the template continues."""
    if not session.pending:
        return prompt_embeds
    pending = embed(torch.tensor([session.pending], device=prompt_embeds.device)).to(prompt_embeds.dtype)
    session.pending = []
    return torch.cat([pending, prompt_embeds], dim=1)
