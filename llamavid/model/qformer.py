"""The InstructBLIP-style BERT Q-Former of LLaMA-VID (LAVIS flavour).

It differs from a stock BERT in ways that change numbers: 32 learned query rows are prepended
to the text without position embeddings, cross-attention to the image runs every second layer
on the query rows only, and queries and text have separate feed-forward weights. Names follow
the released checkpoints (``vlm_att_encoder.bert.*``) so weights load without renaming; the
post-attention / feed-forward blocks are transformers' own BERT modules, which have those names
and the same numerics.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertConfig, BertTokenizer
from transformers.models.bert.modeling_bert import BertIntermediate, BertOutput, BertSelfOutput

# bert-base-uncased as LLaMA-VID builds it: vocab 30522 + "[DEC]".
QFORMER_DEFAULTS: dict[str, Any] = dict(
    vocab_size=30523, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
    intermediate_size=3072, hidden_act="gelu", layer_norm_eps=1e-12, max_position_embeddings=512,
    hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, pad_token_id=0,
    encoder_width=1408, cross_attention_freq=2, add_cross_attention=True,
)
PADDING_MASK_VALUE = -10000.0  # LAVIS uses a finite value, not -inf


def qformer_config(overrides: Mapping[str, Any] | None = None) -> BertConfig:
    """A BertConfig with the Q-Former extras (``encoder_width``, ``cross_attention_freq``)."""
    values = dict(QFORMER_DEFAULTS)
    values.update({k: v for k, v in (overrides or {}).items() if not k.startswith("_")})
    return BertConfig(**values)


def can_fold(*projections: nn.Module) -> bool:
    """Whether a key/value projection may be folded into the queries (see
    :meth:`QFormerAttention._folded` and :func:`llamavid.model.visual_tokens.context_pool`): only at inference
    (with gradients the key bias would get none, where the reference's optimizer updates it) and
    only for plain float ``nn.Linear`` weights (not int8-quantized or wrapped ones)."""
    return not torch.is_grad_enabled() and all(type(p) is nn.Linear for p in projections)


class PlainLinear(nn.Linear):
    """An ``nn.Linear`` that :func:`can_fold` refuses, so attention projects every key and value row:
    the textbook ("plain") path, which some CPUs run faster than the folded one (see
    :func:`unfold`). Same weights, same state-dict names."""


def unfold(module: nn.Module) -> nn.Module:
    """Make every plain ``nn.Linear`` under ``module`` a :class:`PlainLinear`, in place; returns it.

    The folded shortcut does less arithmetic, but in many small batched products; measured on
    2 cores, an Intel Xeon ran the plain path 1.5x faster and an AMD EPYC the folded one, hence a
    per-machine choice (``llamavid.runtime.vision_engines``). The numbers agree to float rounding.
    """
    for sub in module.modules():
        if type(sub) is nn.Linear:
            sub.__class__ = PlainLinear
    return module


class QFormerEmbeddings(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size, padding_idx=cfg.pad_token_id)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)
        self.register_buffer("position_ids", torch.arange(cfg.max_position_embeddings).unsqueeze(0))

    def forward(self, input_ids: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        """[queries (no positions); words + positions] -> one LayerNorm over the concatenation."""
        length = input_ids.shape[1]
        text = self.word_embeddings(input_ids) + self.position_embeddings(self.position_ids[:, :length])
        return self.dropout(self.LayerNorm(torch.cat([queries.to(text.dtype), text], dim=1)))


class QFormerAttention(nn.Module):
    """BERT multi-head attention; keys/values may come from the wider image features."""

    def __init__(self, cfg: BertConfig, kv_width: int):
        super().__init__()
        self.num_heads = cfg.num_attention_heads
        self.head_dim = cfg.hidden_size // cfg.num_attention_heads
        self.dropout_p = cfg.attention_probs_dropout_prob
        self.query = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.key = nn.Linear(kv_width, cfg.hidden_size)
        self.value = nn.Linear(kv_width, cfg.hidden_size)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], x.shape[1], self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, hidden: torch.Tensor, context: torch.Tensor,
                mask: torch.Tensor | None) -> torch.Tensor:
        if self._folds(hidden, context, mask):
            return self._folded(hidden, context)
        q, k, v = self._heads(self.query(hidden)), self._heads(self.key(context)), self._heads(self.value(context))
        p = self.dropout_p if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        return out.transpose(1, 2).reshape(hidden.shape[0], hidden.shape[1], -1)

    def _folds(self, hidden: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None) -> bool:
        """Whether :meth:`_folded` is exact and cheaper: :func:`can_fold`, no dropout (it would
        break the bias argument below), no mask, and few query rows reading many context rows
        (cross-attention: 32 queries over 257 patches; multiply-adds counted below)."""
        if self.training or mask is not None or not can_fold(self.key, self.value):
            return False
        n, length, width, wide = hidden.shape[1], context.shape[1], hidden.shape[-1], context.shape[-1]
        folded = 2 * n * wide * (width + self.num_heads * length)
        direct = 2 * length * wide * width + 2 * n * length * width
        return folded < direct

    def _folded(self, hidden: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Attention without projecting the context to keys and values.

        Per head h: q_h (X W_kh^T + b_kh)^T = (q_h W_kh) X^T + a constant per query row, which
        softmax ignores; and softmax(.) (X W_vh^T + b_vh) = (softmax(.) X) W_vh^T + b_vh because
        each softmax row sums to one. Projecting 32 query rows instead of 257 context rows is
        about 40 % less arithmetic in each cross-attention layer, with the same result up to
        float rounding.
        """
        b, n, _ = hidden.shape
        q = self._heads(self.query(hidden))                                  # (B, h, n, d)
        wk = self.key.weight.view(self.num_heads, self.head_dim, -1)         # (h, d, Cx)
        wv = self.value.weight.view(self.num_heads, self.head_dim, -1)
        # batched matrix products without broadcasting, which would copy the context per head
        qk = torch.einsum("bhnd,hdc->bhnc", q, wk).reshape(b, self.num_heads * n, -1)
        weights = (torch.bmm(qk, context.transpose(1, 2)) / math.sqrt(self.head_dim)).softmax(dim=-1)
        mixed = torch.bmm(weights, context).view(b, self.num_heads, n, -1)  # (B, h, n, Cx)
        out = torch.einsum("bhnc,hdc->bnhd", mixed, wv).reshape(b, n, -1)
        return out + self.value.bias if self.value.bias is not None else out


class QFormerAttentionBlock(nn.Module):
    """Attention + BERT's post-LN residual; ``self``/``output`` names match the checkpoints."""

    def __init__(self, cfg: BertConfig, kv_width: int):
        super().__init__()
        self.self = QFormerAttention(cfg, kv_width)
        self.output = BertSelfOutput(cfg)

    def forward(self, hidden: torch.Tensor, context: torch.Tensor,
                mask: torch.Tensor | None) -> torch.Tensor:
        return self.output(self.self(hidden, context, mask), hidden)


class QFormerLayer(nn.Module):
    def __init__(self, cfg: BertConfig, index: int):
        super().__init__()
        self.attention = QFormerAttentionBlock(cfg, cfg.hidden_size)
        self.has_cross_attention = index % cfg.cross_attention_freq == 0
        if self.has_cross_attention:
            self.crossattention = QFormerAttentionBlock(cfg, cfg.encoder_width)
        self.intermediate = BertIntermediate(cfg)
        self.output = BertOutput(cfg)
        self.intermediate_query = BertIntermediate(cfg)
        self.output_query = BertOutput(cfg)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor, image: torch.Tensor,
                num_query: int, queries_only: bool = False) -> torch.Tensor:
        """One layer; ``queries_only`` (the last layer) skips work whose result nobody reads.

        Only the query rows leave the Q-Former, so the last layer needs neither the text rows'
        attention outputs nor their feed-forward: same numbers, about a third less work there.
        """
        rows = hidden[:, :num_query].contiguous() if queries_only else hidden
        hidden = self.attention.output(self.attention.self(rows, hidden, mask), rows)
        # contiguous slices: a Linear on a strided view copies it anyway, in a slower kernel
        query, text = hidden[:, :num_query].contiguous(), hidden[:, num_query:].contiguous()
        if self.has_cross_attention:
            query = self.crossattention(query, image, None)
        query = self.output_query(self.intermediate_query(query), query)
        if text.shape[1] == 0:
            return query
        return torch.cat([query, self.output(self.intermediate(text), text)], dim=1)


class QFormerEncoder(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.layer = nn.ModuleList(QFormerLayer(cfg, i) for i in range(cfg.num_hidden_layers))


class QFormerBert(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.config = cfg
        self.embeddings = QFormerEmbeddings(cfg)
        self.encoder = QFormerEncoder(cfg)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, queries: torch.Tensor,
                image: torch.Tensor) -> torch.Tensor:
        """Bidirectional pass over [queries; text]; returns the query rows, (B, Q, hidden).

        LLaMA-VID calls BERT in encoder mode, so the self-attention mask is only the padding
        mask (the "instruction-aware" Q-Former), not the causal mask of BLIP-2's decoder.
        """
        num_query = queries.shape[1]
        hidden = self.embeddings(input_ids, queries)
        full = torch.cat([attention_mask.new_ones(attention_mask.shape[0], num_query), attention_mask], dim=1)
        mask = ((1.0 - full[:, None, None, :].to(hidden.dtype)) * PADDING_MASK_VALUE)
        image = image.to(hidden.dtype)
        last = len(self.encoder.layer) - 1
        for i, layer in enumerate(self.encoder.layer):
            hidden = layer(hidden, mask, image, num_query, queries_only=i == last)
        return hidden[:, :num_query]


class QFormer(nn.Module):
    """LAVIS ``BertLMHeadModel`` without its LM head: only the ``bert`` child carries weights."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.bert = QFormerBert(cfg)

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.bert(*args, **kwargs)


def load_qformer_tokenizer(vocab_file: str | Path, max_length: int = 256):
    """The Q-Former's WordPiece tokenizer from a local vocabulary, never from a hub.

    LLaMA-VID appends ``[DEC]`` as BOS (so the embedding table has one row more than the
    vocabulary) and truncates from the left so the end of a long question survives.
    """
    vocab_file = Path(vocab_file)
    if not vocab_file.is_file():
        raise FileNotFoundError(f"{vocab_file}: Q-Former vocabulary not found (a bert-base-uncased vocab.txt)")
    words = vocab_file.read_text(encoding="utf-8").splitlines()
    vocab = {word: i for i, word in enumerate(words) if word}
    if "[UNK]" not in vocab or "[CLS]" not in vocab:
        raise ValueError(f"{vocab_file}: not a BERT WordPiece vocabulary (no [UNK] / [CLS] entries)")
    tok = BertTokenizer(vocab=vocab, do_lower_case=True, truncation_side="left", model_max_length=max_length)
    tok.add_special_tokens({"bos_token": "[DEC]"})
    return tok


def tokenize_prompts(tokenizer, prompts: list[str], max_length: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts of one sample, padded to the longest as the reference does."""
    enc = tokenizer(list(prompts), padding="longest", truncation=True, max_length=max_length,
                    return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]
