"""LLaMA-VID on transformers' LlamaForCausalLM.

Every module exists at construction time under its released name, so a checkpoint's state
dict loads by name with nothing missing and nothing unexpected:

    LlamaVidForCausalLM
    ├── model (LlamaVidModel = LlamaModel + the parts below)
    │   ├── embed_tokens, layers, norm           stock LLaMA
    │   ├── vision_tower.vision_tower            EVA-ViT-g (eva.py)
    │   ├── vlm_att_encoder.bert                 Q-Former (qformer.py)
    │   ├── vlm_att_query, vlm_att_ln            32 learned queries, LayerNorm on EVA features
    │   ├── vlm_att_projector                    Q-Former width -> 1408
    │   ├── vlm_att_key_projector                patch features -> attention keys
    │   ├── vlm_att_val_projector                pooled context -> LLM width (context token)
    │   └── mm_projector                         patches -> LLM width (content tokens)
    └── lm_head
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, LlamaForCausalLM, LlamaModel
from transformers.models.llama.modeling_llama import LlamaPreTrainedModel

from llamavid.model.config import LlamaVidConfig
from llamavid.model.eva import EvaConfig, EvaVisionTower
from llamavid.model.layout import IMAGE_TOKEN_INDEX, drop_cls
from llamavid.model.qformer import QFormer, qformer_config
from llamavid.model.visual_tokens import TokenParts, build_projector, generate_tokens


@dataclass
class VisualTokens:
    """Visual tokens of one visual input (an image, a clip or a film's features).

    ``tokens[p]`` fills the ``<image>`` placeholder that goes with prompt ``p``: (P, T*(1+n), H),
    frame-major ``[ctx_1, content_1, ctx_2, content_2, ...]``.
    """

    tokens: torch.Tensor
    relevance: torch.Tensor  # (P, T): how much prompt p's queries attend to frame t (frame_relevance)
    query_output: torch.Tensor | None = None  # (P*T, Q, 768), prompt-major
    parts: list[TokenParts] = field(default_factory=list)

    def part(self, name: str) -> torch.Tensor:
        return torch.cat([getattr(p, name) for p in self.parts], dim=0)


def eva_config(config: LlamaVidConfig) -> EvaConfig:
    return EvaConfig(image_size=config.image_size, width=config.mm_hidden_size,
                     depth=config.vision_depth or 39, mlp_hidden=config.vision_mlp_hidden)


class LlamaVidModel(LlamaModel):
    config_class = LlamaVidConfig

    def __init__(self, config: LlamaVidConfig):
        super().__init__(config)
        # The Q-Former reads EVA-width features (1408 in every released model).
        qcfg = qformer_config({**config.qformer, "encoder_width": config.mm_hidden_size})
        self.vision_tower = EvaVisionTower(eva_config(config)) if config.mm_vision_tower else None
        self.mm_projector = build_projector(config.mm_projector_type, config.mm_hidden_size, config.hidden_size)
        self.vlm_att_encoder = QFormer(qcfg)
        self.vlm_att_query = nn.Parameter(torch.zeros(1, config.num_query, qcfg.hidden_size))
        self.vlm_att_projector = nn.Linear(qcfg.hidden_size, config.mm_hidden_size)
        self.vlm_att_key_projector = nn.Linear(config.mm_hidden_size, config.mm_hidden_size)
        self.vlm_att_val_projector = nn.Linear(config.mm_hidden_size, config.hidden_size)
        self.vlm_att_ln = nn.LayerNorm(config.mm_hidden_size) if config.uses_vlm_att_ln else None


class LlamaVidForCausalLM(LlamaForCausalLM):
    config_class = LlamaVidConfig

    def __init__(self, config: LlamaVidConfig):
        LlamaPreTrainedModel.__init__(self, config)
        self.model = LlamaVidModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    @torch.no_grad()
    def encode_images(self, pixels: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
        """(B, 3, S, S) pixels -> (B, 1 + N, 1408) EVA features, in batches to bound memory."""
        tower = self.model.vision_tower
        if tower is None:
            raise RuntimeError("this model was loaded without its vision tower; load it with vision enabled")
        return torch.cat([tower(chunk) for chunk in pixels.split(batch_size)], dim=0)

    def _token_block(self, feats: torch.Tensor, ids: torch.Tensor,
                     mask: torch.Tensor) -> tuple[torch.Tensor, TokenParts]:
        """One block of rows: Q-Former on (feature, prompt) pairs, then the two kinds of tokens."""
        m, cfg = self.model, self.config
        bert_in = m.vlm_att_ln(feats) if m.vlm_att_ln is not None else feats
        queries = m.vlm_att_query.expand(feats.shape[0], -1, -1)
        query_out = m.vlm_att_encoder(ids, mask, queries, bert_in)
        text_q = m.vlm_att_projector(query_out)
        patches = drop_cls(feats) if cfg.mm_vision_select_feature == "patch" else feats
        parts = generate_tokens(text_q, patches, m.vlm_att_key_projector, m.vlm_att_val_projector,
                                m.mm_projector, cfg.compress_type)
        return query_out, parts

    def visual_tokens(self, features: torch.Tensor, qformer_ids: torch.Tensor, qformer_mask: torch.Tensor,
                      block_size: int = 64, keep_parts: bool = False,
                      on_block: Callable[[int, int], None] | None = None) -> VisualTokens:
        """Tokens of one visual input for each of its P prompts.

        ``features`` is (T, rows, C) - an image is T=1; a memory-mapped film works too, since rows
        are read ``block_size`` (prompt, frame) pairs at a time, which bounds memory for a 2-hour film.
        ``on_block(done, total)`` is called after each block with the (prompt, frame) pairs done;
        an exception it raises (a cancelled request) stops the pass there.
        """
        p_count, frames = qformer_ids.shape[0], features.shape[0]
        total = p_count * frames
        dev, dtype = self.model.vlm_att_query.device, self.model.vlm_att_query.dtype
        outs, relevance, queries, parts = [], [], [], []
        for start in range(0, total, block_size):
            rows = torch.arange(start, min(start + block_size, total))
            frame_idx = rows % frames
            picked = features[frame_idx] if torch.is_tensor(features) else features[frame_idx.numpy()]
            feats = torch.as_tensor(picked).to(dev, dtype)
            ids, mask = qformer_ids[rows // frames].to(dev), qformer_mask[rows // frames].to(dev)
            query_out, part = self._token_block(feats, ids, mask)
            outs.append(part.tokens)
            relevance.append(part.relevance.float().cpu())
            if keep_parts:
                queries.append(query_out)
                parts.append(part)
            if on_block is not None:
                on_block(int(rows[-1]) + 1, total)
        tokens = torch.cat(outs, dim=0)  # (P*T, 1+n, H), prompt-major
        tokens = tokens.reshape(p_count, frames * tokens.shape[1], tokens.shape[2])
        return VisualTokens(tokens, torch.cat(relevance).reshape(p_count, frames),
                            torch.cat(queries) if keep_parts else None, parts)

    def embed_inputs(self, input_ids: torch.Tensor | Sequence[int], slots: Sequence[torch.Tensor]) -> torch.Tensor:
        """Text embeddings with slot k's rows in place of the k-th ``<image>`` (-200): (1, L', H)."""
        ids = torch.as_tensor(input_ids, device=self.lm_head.weight.device).reshape(-1)
        where = (ids == IMAGE_TOKEN_INDEX).nonzero().flatten().tolist()
        if len(where) != len(slots):
            raise ValueError(f"the prompt has {len(where)} <image> placeholders but {len(slots)} visual inputs")
        text = self.model.embed_tokens(ids.clamp(min=0))
        pieces, prev = [], 0
        for pos, slot in zip(where, slots, strict=True):
            pieces += [text[prev:pos], slot.reshape(-1, text.shape[-1]).to(text.dtype)]
            prev = pos + 1
        pieces.append(text[prev:])
        return torch.cat(pieces, dim=0).unsqueeze(0)


def split_slots(tokens: torch.Tensor, placeholders: int) -> list[torch.Tensor]:
    """Which rows fill which ``<image>``: one slot per prompt, or one row per slot for films.

    Short inputs put all of a prompt's rows behind one ``<image>``; the long-video prompt has
    ``<image><image>`` per frame (context, content), so there each slot takes a single row.
    """
    if placeholders == tokens.shape[0]:
        return list(tokens)
    if tokens.shape[0] == 1 and placeholders == tokens.shape[1]:
        return list(tokens[0].split(1))
    raise ValueError(f"{placeholders} <image> placeholders cannot take visual tokens of shape "
                     f"{tuple(tokens.shape)}: expected one per prompt or one per token row")


def _register() -> None:
    """Let transformers' Auto classes build the model from a config with our own model_type."""
    try:
        AutoConfig.register(LlamaVidConfig.model_type, LlamaVidConfig)
        AutoModelForCausalLM.register(LlamaVidConfig, LlamaVidForCausalLM)
    except ValueError:  # already registered (module reloaded)
        pass


_register()
