"""Visual tokens: the question-conditioned context token and the content token(s) per frame.

This is LLaMA-VID's central idea. For every frame, Q-Former queries that have read the user's
question attend over the frame's patch features; the attention-weighted average becomes one
*context* token, the (pooled) patches become the *content* token(s). Shapes use R for rows
(prompt x frame pairs), N patches, C = 1408 feature width, H LLM width.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from llamavid.model.qformer import can_fold


@dataclass
class TokenParts:
    """What :func:`generate_tokens` computed, kept apart for tests and inspection."""

    ctx_pooled: torch.Tensor  # (R, 1, C)
    content_pooled: torch.Tensor  # (R, n, C)
    context_tokens: torch.Tensor  # (R, 1, H)
    content_tokens: torch.Tensor  # (R, n, H)
    relevance: torch.Tensor  # (R,) see frame_relevance

    @property
    def tokens(self) -> torch.Tensor:
        return torch.cat([self.context_tokens, self.content_tokens], dim=1)  # (R, 1 + n, H)


def pool_content(patches: torch.Tensor, compress_type: str | None) -> torch.Tensor:
    """(R, N, C) -> (R, n, C): all patches, a g x g grid average, or their mean (in that order of checks)."""
    if compress_type is None:
        return patches
    if "grid" in compress_type:
        g = int(compress_type.split(":")[1])
        side = int(math.isqrt(patches.shape[1]))
        grid = patches.transpose(1, 2).reshape(patches.shape[0], -1, side, side)
        pooled = F.avg_pool2d(grid, kernel_size=side // g, stride=side // g)
        return pooled.flatten(2).transpose(1, 2)
    if "mean" in compress_type:
        return patches.mean(dim=1, keepdim=True)
    raise ValueError(f"unknown compress_type {compress_type!r}")


def context_scores(text_q: torch.Tensor, patches: torch.Tensor, key_projector: nn.Module) -> torch.Tensor:
    """q k^T / sqrt(C) of every query against every patch: (R, Q, C), (R, N, C) -> (R, Q, N).

    The scale is applied after the product, as the reference does; it matters for parity.
    """
    if can_fold(key_projector):
        # q (X W^T + b)^T = (q W) X^T + a constant per query row, which softmax ignores: the
        # patches (257 x 1408 per frame) are never projected, the 32 queries are. Same result up
        # to float rounding, ~6x less arithmetic here.
        scores = torch.matmul(torch.matmul(text_q, key_projector.weight), patches.transpose(-1, -2))
    else:
        scores = torch.matmul(text_q, key_projector(patches).transpose(-1, -2))
    return scores / math.sqrt(patches.shape[-1])


def pool_by_scores(scores: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
    """Mean over queries of softmax(scores) @ patches: the values are the raw patch features. (R, 1, C)"""
    return torch.matmul(scores.softmax(dim=-1), patches).mean(dim=1, keepdim=True)


def context_pool(text_q: torch.Tensor, patches: torch.Tensor, key_projector: nn.Module) -> torch.Tensor:
    """The context token before its projection: (R, Q, C), (R, N, C) -> (R, 1, C)."""
    return pool_by_scores(context_scores(text_q, patches, key_projector), patches)


def frame_relevance(scores: torch.Tensor) -> torch.Tensor:
    """How strongly the question's queries attend to a frame at all: (R, Q, N) -> (R,).

    Softmax makes every frame's weights sum to one, so the pooled token cannot say which frames
    matter; the scores before it can. logsumexp over patches is a smooth maximum (a frame with one
    strongly matching region ranks high), averaged over the queries. Under the folded path every
    score of a query is shifted by the same key-bias constant for all frames, which leaves the
    ranking of frames unchanged. It costs one reduction over scores the context token needs anyway.
    """
    return scores.logsumexp(dim=-1).mean(dim=-1)


def generate_tokens(text_q: torch.Tensor, patches: torch.Tensor, key_projector: nn.Module,
                    val_projector: nn.Module, mm_projector: nn.Module,
                    compress_type: str | None) -> TokenParts:
    scores = context_scores(text_q, patches, key_projector)
    ctx = pool_by_scores(scores, patches)
    content = pool_content(patches, compress_type)
    return TokenParts(ctx, content, val_projector(ctx), mm_projector(content), frame_relevance(scores))


def build_projector(kind: str, in_width: int, out_width: int) -> nn.Module:
    """``mlp2x_gelu`` (released) = Linear, GELU, Linear; index names match ``mm_projector.0/2``."""
    if kind == "linear":
        return nn.Linear(in_width, out_width)
    if kind == "identity":
        return nn.Identity()
    if kind.startswith("mlp") and kind.endswith("x_gelu"):
        depth = int(kind[3:-6])
        layers: list[nn.Module] = [nn.Linear(in_width, out_width)]
        for _ in range(depth - 1):
            layers += [nn.GELU(), nn.Linear(out_width, out_width)]
        return nn.Sequential(*layers)
    raise ValueError(f"mm_projector_type must be 'linear', 'identity' or 'mlp<N>x_gelu', got {kind!r}")
