"""The training dataset: one record in, token ids + labels + visual inputs out.

Items are addressed as ``(epoch, index)`` so the random choices of a record (where a later turn's
``<image>`` goes) depend only on the seed, the epoch and the index: a resumed run sees exactly the
samples an uninterrupted one would.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from llamavid.errors import UserError
from llamavid.model.layout import IMAGE_TOKEN
from llamavid.model.qformer import tokenize_prompts
from train.config import IGNORE_INDEX
from train.records import DataError, MediaRef, conversation_turns, media_ref, modality_length, where
from train.text import TextSample, chat_sample, image_turns, movie_turns, plain_guided, text_only_turns
from train.visual_inputs import film_inputs, image_pixels, load_film, video_pixels


@dataclass
class DataOptions:
    """How records become samples; the run's settings that matter here."""

    image_folder: Path
    video_folder: Path
    template: str
    image_size: int = 224
    image_aspect_ratio: str = "pad"
    video_fps: float = 1.0
    video_token: int = 2
    max_frames: int | None = None
    trust_pickle: bool = False
    skip_bad_samples: bool = False
    seed: int = 42


@dataclass
class Sample:
    """One training sample, ready for :class:`train.step.TrainStep`."""

    index: int
    sample_id: str
    kind: str  # image | video | features | text
    input_ids: torch.Tensor  # (L,) with -200 per <image>
    labels: torch.Tensor  # (L,) -100 where no loss
    pixels: torch.Tensor | None = None  # (T, 3, S, S): one image, or a clip's frames
    features: Any = None  # (T, N, C) film features: a tensor or memory-mapped FeatureRows
    qformer_ids: torch.Tensor | None = None  # (P, Lq): one Q-Former prompt per visual slot group
    qformer_mask: torch.Tensor | None = None
    masking: str = "reference"
    problem: str | None = None  # set when a bad record was skipped (--skip-bad-samples)

    @property
    def has_visual(self) -> bool:
        return self.pixels is not None or self.features is not None


class LlavaDataset(Dataset):
    """LLaVA JSON records for one stage; ``dataset[(epoch, i)]`` is a :class:`Sample`."""

    def __init__(self, records: list[dict[str, Any]], tokenizer: Any, qformer_tokenizer: Any, options: DataOptions):
        self.records = records
        self.tokenizer = tokenizer
        self.qformer_tokenizer = qformer_tokenizer
        self.options = options

    def __len__(self) -> int:
        return len(self.records)

    @property
    def modality_lengths(self) -> list[int]:
        return [modality_length(r) if isinstance(r, dict) else 1 for r in self.records]

    def __getitem__(self, key: tuple[int, int] | int) -> Sample:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        try:
            return self.sample(epoch, index)
        except (DataError, UserError) as exc:
            if not self.options.skip_bad_samples:
                raise DataError(f"{exc} (check the data with `llamavid train validate`, or pass "
                                "--skip-bad-samples to train without such records)") from None
            return self.skipped(index, str(exc))

    def text(self, epoch: int, index: int) -> tuple[TextSample, MediaRef, Any]:
        """Ids, labels and prompts of a record, its media reference and a film's features (no pixels read)."""
        record, opts = self.records[index], self.options
        turns = conversation_turns(index, record)
        media = media_ref(index, record, opts.image_folder, opts.video_folder)
        name = where(index, record)
        if opts.template == "plain_guided":
            if media.kind not in ("image", "video"):
                raise DataError(f"{name}: stage 1 trains on images and clips only, this record has {media.kind}")
            return plain_guided(turns, self.tokenizer, name), media, None
        film = None
        if media.kind == "features":
            feats, inputs = load_film(media.path, record, opts.video_fps, opts.trust_pickle)
            turns, prompts = movie_turns(turns, film_inputs(inputs, len(feats), opts.video_token, name), name)
            film = feats
        elif media.kind == "text":
            turns, prompts = text_only_turns(turns, name)
        else:
            rng = random.Random(f"{opts.seed}:{epoch}:{index}")
            turns, prompts = image_turns(turns, rng)
            if not prompts:
                raise DataError(f"{name}: has an {media.kind} but no {IMAGE_TOKEN} placeholder in a human turn")
        return chat_sample(turns, prompts, self.tokenizer, opts.template, name), media, film

    def sample(self, epoch: int, index: int) -> Sample:
        record, opts = self.records[index], self.options
        text, media, film = self.text(epoch, index)
        name = where(index, record)
        expected = len(film) * opts.video_token if film is not None else len(text.prompts)
        if text.placeholders != expected:
            raise DataError(f"{name}: {text.placeholders} {IMAGE_TOKEN} placeholders in the text but {expected} "
                            f"visual slots; check for literal {IMAGE_TOKEN} in the text")
        out = Sample(index, str(record.get("id", index)), media.kind, torch.tensor(text.input_ids),
                     torch.tensor(text.labels), masking=text.masking)
        if media.kind == "text":
            return out
        if not media.path.is_file():
            raise DataError(f"{name}: {media.kind} file not found: {media.path}")
        if media.kind == "image":
            out.pixels = image_pixels(media.path, opts.image_size, opts.image_aspect_ratio)
        elif media.kind == "video":
            out.pixels = video_pixels(media.path, opts.image_size, opts.video_fps, opts.max_frames)
        else:
            out.features = film if not hasattr(film, "dtype") else torch.from_numpy(film)
        out.qformer_ids, out.qformer_mask = tokenize_prompts(self.qformer_tokenizer, text.prompts)
        return out

    def skipped(self, index: int, problem: str) -> Sample:
        """A stand-in with no loss, so one broken record does not stop a week-long run."""
        ids = torch.tensor([self.tokenizer.bos_token_id or 1])
        return Sample(index, str(index), "text", ids, torch.full_like(ids, IGNORE_INDEX), problem=problem)


def collate(samples: list[Sample]) -> list[Sample]:
    """Samples stay separate: each is spliced with its own visual tokens before padding."""
    return samples
