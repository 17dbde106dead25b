"""The Q-Former's shortcuts (folded cross-attention, folded context keys) give the textbook result."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from llamavid.model.qformer import QFormerAttention, qformer_config
from llamavid.model.visual_tokens import context_pool


def _reference_attention(att: QFormerAttention, hidden: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """softmax(Q K^T / sqrt(d)) V with every row of the context projected, as BERT writes it."""
    q, k, v = (att._heads(f(x)) for f, x in ((att.query, hidden), (att.key, context), (att.value, context)))
    weights = (q @ k.transpose(-1, -2) / math.sqrt(att.head_dim)).softmax(-1)
    return (weights @ v).transpose(1, 2).reshape(hidden.shape[0], hidden.shape[1], -1)


@pytest.mark.parametrize("queries, patches", [(32, 257), (4, 50)])
def test_folded_cross_attention_equals_projected_keys_and_values(queries, patches):
    torch.manual_seed(0)
    cfg = qformer_config(dict(hidden_size=256, num_attention_heads=4, encoder_width=320))  # head size 64
    att = QFormerAttention(cfg, cfg.encoder_width).double().eval()
    for linear in (att.key, att.value):
        nn.init.normal_(linear.bias, std=0.5)  # the folding argument is about these biases
    hidden, context = torch.randn(2, queries, 256).double(), torch.randn(2, patches, 320).double()
    with torch.inference_mode():
        assert att._folds(hidden, context, None)
        torch.testing.assert_close(att(hidden, context, None), _reference_attention(att, hidden, context),
                                   rtol=1e-10, atol=1e-10)
    assert not att._folds(hidden, context, None)  # gradients wanted: the direct path
    att.train()  # dropout: the direct path
    with torch.no_grad():
        assert not att._folds(hidden, context, None)


@torch.no_grad()
def test_attention_folds_only_where_it_saves_work():
    cfg = qformer_config(dict(hidden_size=256, num_attention_heads=4, encoder_width=320))
    att = QFormerAttention(cfg, 256).eval()
    x = torch.randn(1, 40, 256)
    assert not att._folds(x, x, None)                                # self-attention: as many rows
    assert not att._folds(x[:, :4], x, torch.zeros(1, 1, 1, 40))      # a mask: the direct path
    wide = QFormerAttention(cfg, 320).eval()
    assert wide._folds(torch.randn(1, 4, 256), torch.randn(1, 257, 320), None)
    quantized = torch.ao.quantization.quantize_dynamic(wide, {nn.Linear})
    assert not quantized._folds(torch.randn(1, 4, 256), torch.randn(1, 257, 320), None)


def test_context_pool_folded_keys_equal_projected_keys():
    torch.manual_seed(0)
    text_q, patches = torch.randn(3, 32, 64).double(), torch.randn(3, 257, 64).double()
    key = nn.Linear(64, 64).double()
    nn.init.normal_(key.bias, std=1.0)
    weights = (text_q @ key(patches).transpose(-1, -2) / math.sqrt(64)).softmax(-1)
    expected = (weights @ patches).mean(1, keepdim=True)
    with torch.no_grad():
        torch.testing.assert_close(context_pool(text_q, patches, key), expected, rtol=1e-10, atol=1e-10)
    context_pool(text_q, patches, key).sum().backward()  # training: the bias gets its (tiny) gradient
    assert key.bias.grad is not None
    wrapped = nn.Sequential(key)  # anything but a plain Linear takes the direct path
    torch.testing.assert_close(context_pool(text_q, patches, wrapped), expected, rtol=1e-10, atol=1e-10)
