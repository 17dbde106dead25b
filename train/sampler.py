"""Which samples go into which micro-batch on which rank, epoch by epoch (spec 10.6).

With ``group_by_modality`` (stage 2), multimodal and text-only records are shuffled separately and
grouped by length into mega-batches of ``world_size x batch_size``, each split into ``world_size``
chunks of balanced length; the mega-batches are then shuffled together. The reference asserted
when a dataset had only one modality; here that case falls back to plain length grouping.
The plan is a pure function of (lengths, seed, epoch), so a resumed run skips ahead exactly.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch


def split_to_even_chunks(indices: list[int], lengths: Sequence[int], chunks: int) -> list[list[int]]:
    """Greedy: give each index (longest first) to the chunk with the smallest total length."""
    if len(indices) % chunks != 0:
        return [indices[i::chunks] for i in range(chunks)]
    per_chunk = len(indices) // chunks
    out: list[list[int]] = [[] for _ in range(chunks)]
    totals = [0] * chunks
    for index in indices:
        k = min(range(chunks), key=lambda c: totals[c] if len(out[c]) < per_chunk else float("inf"))
        out[k].append(index)
        totals[k] += lengths[index]
    return out


def length_grouped(lengths: Sequence[int], batch_size: int, world_size: int, gen: torch.Generator) -> list[int]:
    indices = torch.randperm(len(lengths), generator=gen).tolist()
    size = world_size * batch_size
    megabatches = [sorted(indices[i:i + size], key=lambda i: lengths[i], reverse=True)
                   for i in range(0, len(indices), size)]
    return [i for mb in megabatches for chunk in split_to_even_chunks(mb, lengths, world_size) for i in chunk]


def modality_grouped(lengths: Sequence[int], batch_size: int, world_size: int, gen: torch.Generator) -> list[int]:
    """LLaVA's ``get_modality_length_grouped_indices`` (positive = multimodal, negative = text-only)."""
    if all(n > 0 for n in lengths) or all(n < 0 for n in lengths):
        return length_grouped([abs(n) for n in lengths], batch_size, world_size, gen)
    mm = [i for i, n in enumerate(lengths) if n > 0]
    lang = [i for i, n in enumerate(lengths) if n < 0]
    mm_order = [mm[i] for i in length_grouped([lengths[i] for i in mm], batch_size, world_size, gen)]
    lang_order = [lang[i] for i in length_grouped([-lengths[i] for i in lang], batch_size, world_size, gen)]
    size = world_size * batch_size
    mm_mb = [mm_order[i:i + size] for i in range(0, len(mm_order), size)]
    lang_mb = [lang_order[i:i + size] for i in range(0, len(lang_order), size)]
    leftover = mm_mb[-1] + lang_mb[-1]
    megabatches = mm_mb[:-1] + lang_mb[:-1]
    megabatches = [megabatches[i] for i in torch.randperm(len(megabatches), generator=gen).tolist()]
    if leftover:
        megabatches.append(sorted(leftover))
    return [i for mb in megabatches for i in mb]


def epoch_order(lengths: Sequence[int], batch_size: int, world_size: int, seed: int, epoch: int,
                group_by_modality: bool) -> list[int]:
    gen = torch.Generator().manual_seed(seed + epoch)
    if group_by_modality:
        return modality_grouped(lengths, batch_size, world_size, gen)
    return torch.randperm(len(lengths), generator=gen).tolist()


def rank_batches(order: list[int], batch_size: int, world_size: int, rank: int) -> list[list[int]]:
    """This rank's micro-batches: batch k of the global order goes to rank ``k % world_size``.

    The order is padded by wrapping around so every rank gets the same number of full batches
    (ranks that ran out would leave the others waiting forever).
    """
    if not order:
        return []
    size = batch_size * world_size
    padded = list(order)
    while len(padded) % size:
        padded += order[: size - len(padded) % size]
    batches = [padded[i:i + batch_size] for i in range(0, len(padded), batch_size)]
    return batches[rank::world_size]


def micro_batches_per_epoch(n: int, batch_size: int, world_size: int) -> int:
    size = batch_size * world_size
    return -(-n // size) if n else 0
