"""One micro-batch through LLaMA-VID, as a module: EVA -> visual tokens -> spliced text -> LLM -> loss.

Everything happens inside ``forward`` so DDP and FSDP see exactly one call per micro-batch (their
gather / reduce hooks run there). The loss is the mean cross-entropy over supervised tokens of the
micro-batch, as transformers computes it, but ``lm_head`` only runs on the supervised positions:
a 64K-token film sample with a short answer needs a few rows of logits, not 64K x 32000.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from llamavid.model.layout import IMAGE_TOKEN_INDEX
from llamavid.model.modeling import LlamaVidForCausalLM, split_slots
from train.config import IGNORE_INDEX, PROJECTOR_PARTS, matches
from train.dataset import Sample


def expand_labels(labels: torch.Tensor, input_ids: torch.Tensor, slot_rows: Sequence[int]) -> torch.Tensor:
    """Labels of the spliced sequence: each ``<image>`` becomes its visual rows, all ignored."""
    where = (input_ids == IMAGE_TOKEN_INDEX).nonzero().flatten().tolist()
    pieces, prev = [], 0
    for pos, rows in zip(where, slot_rows, strict=True):
        pieces += [labels[prev:pos], labels.new_full((rows,), IGNORE_INDEX)]
        prev = pos + 1
    pieces.append(labels[prev:])
    return torch.cat(pieces)


def pad_batch(embeds: list[torch.Tensor], labels: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """Right-pad to the longest sample: zeros, mask 0, label -100 (the reference's collator)."""
    length = max(e.shape[0] for e in embeds)
    width, dev = embeds[0].shape[1], embeds[0].device
    out = embeds[0].new_zeros(len(embeds), length, width)
    mask = torch.zeros(len(embeds), length, dtype=torch.long, device=dev)
    target = torch.full((len(embeds), length), IGNORE_INDEX, dtype=torch.long, device=dev)
    for i, (e, lab) in enumerate(zip(embeds, labels, strict=True)):
        out[i, : e.shape[0]] = e
        mask[i, : e.shape[0]] = 1
        target[i, : lab.shape[0]] = lab.to(dev)
    return out, mask, target


def masked_lm_loss(lm_head: nn.Module, hidden: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Mean next-token cross-entropy over positions whose label is not -100 (shifted by one)."""
    targets = labels[:, 1:]
    keep = targets != IGNORE_INDEX
    logits = lm_head(hidden[:, :-1][keep]).float()
    count = int(keep.sum())
    if count == 0:
        return logits.sum() * 0.0, 0
    return F.cross_entropy(logits, targets[keep]), count


class TrainStep(nn.Module):
    """Holds the model (as ``.model``, so state-dict names gain a ``model.`` prefix) and computes the loss."""

    def __init__(self, model: LlamaVidForCausalLM, max_length: int, eva_batch: int = 16):
        super().__init__()
        self.model = model
        self.max_length = max_length
        self.eva_batch = eva_batch
        self.visual_trainable = any(p.requires_grad for n, p in model.named_parameters() if matches(n, PROJECTOR_PARTS))

    @property
    def device(self) -> torch.device:
        return self.model.model.vlm_att_query.device

    def forward(self, batch: list[Sample]) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, number of supervised tokens) of one micro-batch."""
        features = self.encode(batch)
        embeds, labels = [], []
        for sample, feats in zip(batch, features, strict=True):
            e, lab = self.splice(sample, feats)
            embeds.append(e[: self.max_length])
            labels.append(lab[: self.max_length])
        inputs, mask, target = pad_batch(embeds, labels)
        hidden = self.model.model(inputs_embeds=inputs, attention_mask=mask, use_cache=False).last_hidden_state
        loss, count = masked_lm_loss(self.model.lm_head, hidden, target)
        if self.visual_trainable and not any(s.has_visual for s in batch):
            loss = loss + self.unused_visual_term()
        return loss, torch.tensor(count, device=loss.device)

    def encode(self, batch: list[Sample]) -> list[torch.Tensor | None]:
        """EVA features of all images and frames of the batch in one pass (EVA is frozen: no graph)."""
        pixels = [s.pixels for s in batch if s.pixels is not None]
        if not pixels:
            return [s.features for s in batch]
        feats = self.model.encode_images(torch.cat(pixels), batch_size=self.eva_batch)
        parts = iter(feats.split([p.shape[0] for p in pixels]))
        return [next(parts) if s.pixels is not None else s.features for s in batch]

    def splice(self, sample: Sample, features) -> tuple[torch.Tensor, torch.Tensor]:
        """(L', H) embeddings with visual rows at the placeholders, and the matching labels."""
        slots: list[torch.Tensor] = []
        if sample.has_visual:
            tokens = self.model.visual_tokens(features, sample.qformer_ids, sample.qformer_mask).tokens
            placeholders = int((sample.input_ids == IMAGE_TOKEN_INDEX).sum())
            slots = split_slots(tokens, placeholders)
        embeds = self.model.embed_inputs(sample.input_ids, slots)[0]
        return embeds, expand_labels(sample.labels, sample.input_ids, [s.reshape(-1, embeds.shape[-1]).shape[0]
                                                                      for s in slots])

    def unused_visual_term(self) -> torch.Tensor:
        """Zero that depends on every trainable visual weight, for micro-batches without images.

        DDP and FSDP reduce gradients of the same parameters on every rank; a rank whose batch is
        text-only would otherwise have none for the Q-Former and wait forever (the reference fed a
        zero image for the same reason).
        """
        m = self.model
        rows = m.model.vision_tower.num_patches + 1 if m.model.vision_tower is not None else 2
        feats = torch.zeros(1, rows, m.config.mm_hidden_size, device=self.device)
        ids = torch.zeros(1, 1, dtype=torch.long)
        return m.visual_tokens(feats, ids, torch.ones_like(ids)).tokens.sum() * 0.0
