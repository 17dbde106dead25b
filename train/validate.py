"""Check a training data file before a run: bad JSON, missing files, wrong placeholders, over-long samples.

``llamavid train validate DATA.json`` reports every problem with the record it is in, e.g.::

    record 7 (id=000123): image file not found: /data/coco/000123.jpg
    record 9 (id=v42): turn 3 has 2 <image> placeholders; put one per turn
    record 12 (id=film3): 70211 tokens (text 12805 + visual 57406) exceed the maximum length 65536

The text checks use the same code as training (one code path, so the validator cannot disagree
with the run). Lengths need the LLM's tokenizer (``--model``); visual rows are counted per image
(1 + 256/576 at 224/336 px, 2 with ``mean``), per clip frame at ``--video-fps`` (from the file's
duration) and per film frame.
"""
from __future__ import annotations

import math
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from llamavid.errors import BadMedia, UserError
from llamavid.files import CONFIG
from llamavid.media.load import load_image
from llamavid.media.probe import probe
from llamavid.model.layout import IMAGE_TOKEN, tokens_per_frame
from llamavid.runtime.api import load_llm_tokenizer
from train.config import STAGES
from train.dataset import DataOptions, LlavaDataset
from train.init import checkpoint_shape
from train.records import DataError, MediaRef, conversation_turns, media_ref, read_records, where
from train.visual_inputs import load_film


@dataclass
class CheckOptions:
    stage: int = 2
    image_folder: Path | None = None
    video_folder: Path | None = None
    tokenizer: Any = None
    max_length: int | None = None
    compress_type: str | None = "mean"
    image_size: int = 224
    video_fps: float = 1.0
    video_token: int = 2
    max_frames: int | None = None
    trust_pickle: bool = False
    deep: bool = False
    allow_truncation: bool = False


@dataclass
class Report:
    path: Path
    records: int = 0
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    kinds: Counter = field(default_factory=Counter)
    longest: int = 0
    offset_masked: int = 0
    lengths_checked: bool = False

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(self.kinds.items())) or "none"
        text = (f"{self.path}: {self.records} records ({kinds}): {len(self.errors)} errors, "
                f"{len(self.warnings)} warnings")
        if self.lengths_checked:
            text += f"; longest sample {self.longest} tokens"
            if self.offset_masked:
                text += f"; {self.offset_masked} samples masked by offsets (the reference rule miscounts them)"
        else:
            text += "; lengths not checked"
        return text

    def text(self, limit: int = 50) -> str:
        lines = [f"error: {m}" for m in self.errors[:limit]] + [f"warning: {m}" for m in self.warnings[:limit]]
        hidden = max(0, len(self.errors) - limit) + max(0, len(self.warnings) - limit)
        if hidden:
            lines.append(f"... and {hidden} more (--limit to show more)")
        return "\n".join(lines + [self.summary()])

    def to_json(self) -> dict[str, Any]:
        return {"path": str(self.path), "records": self.records, "ok": self.ok, "errors": self.errors,
                "warnings": self.warnings, "kinds": dict(self.kinds), "longest": self.longest,
                "lengths_checked": self.lengths_checked}


def use_model(options: CheckOptions, folder: Path) -> None:
    """Count tokens with ``folder``'s tokenizer (``--model``); a LLaMA-VID folder also sets the compress
    type and image size, so visual rows are counted as that model makes them."""
    options.tokenizer = load_llm_tokenizer(folder)
    if options.tokenizer is None:
        raise UserError(f"--model {folder}: no tokenizer.model / tokenizer.json in that folder")
    shape = checkpoint_shape(folder) if (Path(folder) / CONFIG).is_file() else None
    if shape is not None:
        options.compress_type, options.image_size = shape["compress_type"], shape["image_size"]


def validate(path: str | Path, options: CheckOptions) -> Report:
    """Check every record of ``path``; never raises for data problems, reports them."""
    path = Path(path)
    report = Report(path, lengths_checked=options.tokenizer is not None)
    try:
        records = read_records(path)
    except DataError as exc:
        report.errors.append(str(exc))
        return report
    image_folder = Path(options.image_folder or path.parent)
    video_folder = Path(options.video_folder or path.parent)
    report.records = len(records)
    dataset = _text_dataset(records, options, image_folder, video_folder) if options.tokenizer is not None else None
    films = 0
    for index, record in enumerate(records):
        try:
            media = check_record(index, record, options, image_folder, video_folder, report)
        except DataError as exc:
            report.errors.append(str(exc))
            continue
        report.kinds[media.kind] += 1
        films += media.kind == "features"
        if dataset is not None:
            check_length(index, record, media, dataset, options, report)
    per_frame = tokens_per_frame(options.compress_type, options.image_size)
    if films and options.video_token != per_frame:
        report.errors.append(f"--video-token is {options.video_token} but the model makes {per_frame} tokens per "
                             f"frame (compress_type {options.compress_type}); films need them equal")
    return report


def check_record(index: int, record: Any, options: CheckOptions, image_folder: Path, video_folder: Path,
                 report: Report) -> MediaRef:
    """Structure, placeholders and files of one record; returns what it refers to."""
    turns = conversation_turns(index, record)
    media = media_ref(index, record, image_folder, video_folder)
    name = where(index, record)
    check_placeholders(name, turns, media, STAGES[options.stage].template, report)
    if media.path is not None:
        if not media.path.is_file():
            raise DataError(f"{name}: {'feature' if media.kind == 'features' else media.kind} file not found: "
                            f"{media.path}")
        if options.deep:
            check_file(name, media, options)
    return media


def check_placeholders(name: str, turns: list[tuple[str, str]], media: MediaRef, template: str, report: Report) -> None:
    counts = [text.count(IMAGE_TOKEN) for role, text in turns if role == "human"]
    total = sum(counts)
    if media.kind == "text":
        if total:
            raise DataError(f"{name}: has {total} {IMAGE_TOKEN} placeholders but no 'image' or 'video'")
        return
    if template == "plain_guided":
        if len(turns) != 2 or counts != [1]:
            raise DataError(f"{name}: stage 1 needs one human turn with exactly one {IMAGE_TOKEN} and one answer; "
                            f"found {total} {IMAGE_TOKEN} in {len(turns)} turns")
        return
    if total == 0:
        raise DataError(f"{name}: has an {media.kind} but no {IMAGE_TOKEN} placeholder in a human turn")
    if media.kind == "features" and total != 1:
        raise DataError(f"{name}: a film record needs exactly one {IMAGE_TOKEN} (where the film goes), found {total}")
    for k, n in enumerate(counts):
        if n > 1:
            raise DataError(f"{name}: turn {2 * k + 1} has {n} {IMAGE_TOKEN} placeholders; put one per turn")
    if counts[0] == 0 and media.kind != "features":
        report.warnings.append(f"{name}: the first question has no {IMAGE_TOKEN}; turns before the first "
                               f"{IMAGE_TOKEN} do not see the {media.kind}")


def check_file(name: str, media: MediaRef, options: CheckOptions) -> None:
    """Open the file (``--deep``): an unreadable image or video fails here, not hours into a run."""
    try:
        if media.kind == "image":
            load_image(media.path)
        elif media.kind == "video":
            video_frames(media.path, options)
        else:
            feature_shape(media.path, options.trust_pickle)
    except (UserError, DataError, OSError, ValueError) as exc:
        raise DataError(f"{name}: {exc}") from None


def video_frames(path: Path, options: CheckOptions) -> int:
    """About how many frames sampling at ``video_fps`` gives (from the container's duration)."""
    try:
        info = probe(path)
    except BadMedia as exc:
        raise DataError(f"{path}: {exc}") from None
    frames = max(1, math.ceil((info.duration or 1.0) * options.video_fps))
    return min(frames, options.max_frames) if options.max_frames else frames


def feature_shape(path: Path, trust_pickle: bool) -> tuple[int, ...]:
    """Shape of a film's features, read from the file header only."""
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return tuple(np.load(path, mmap_mode="r").shape)
    if suffix == ".npz":
        with zipfile.ZipFile(path) as archive, archive.open("feats.npy") as fh:
            version = np.lib.format.read_magic(fh)
            reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, _ = reader(fh)
            return tuple(shape)
    if not trust_pickle:
        raise DataError(f"{path}: .pkl needs --trust-pickle to be opened")
    feats, _ = load_film(path, {}, 1.0, True)
    return tuple(feats.shape)


def _text_dataset(records: list, options: CheckOptions, image_folder: Path, video_folder: Path) -> LlavaDataset:
    data = DataOptions(image_folder, video_folder, STAGES[options.stage].template, options.image_size,
                       video_fps=options.video_fps, video_token=options.video_token, trust_pickle=options.trust_pickle)
    return LlavaDataset(records, options.tokenizer, None, data)


def check_length(index: int, record: Any, media: MediaRef, dataset, options: CheckOptions, report: Report) -> None:
    """Tokenise as training does and count visual rows; flag samples longer than the maximum."""
    name = where(index, record)
    try:
        text, media, film = dataset.text(0, index)
    except DataError as exc:
        report.errors.append(str(exc))
        return
    report.offset_masked += text.masking == "offsets"
    if all(label < 0 for label in text.labels):
        report.errors.append(f"{name}: no answer token is learned from this sample (check the answers)")
    per_frame = tokens_per_frame(options.compress_type, options.image_size)
    slots = text.placeholders
    if media.kind == "image":
        visual = slots * per_frame
    elif media.kind == "video":
        visual = slots * video_frames(media.path, options) * per_frame
    else:
        visual = slots  # a film: one row per placeholder
    total = len(text.input_ids) - slots + visual
    report.longest = max(report.longest, total)
    limit = options.max_length
    if limit and total > limit:
        message = (f"{name}: {total} tokens (text {len(text.input_ids) - slots} + visual {visual}) exceed the "
                   f"maximum length {limit}; training would cut it")
        (report.warnings if options.allow_truncation else report.errors).append(message)
