"""Reading LLaVA-format training records and naming what each one refers to.

A data file is a JSON list (LLaVA) or JSON lines of records::

    {"id": "...", "image": "coco/x.jpg" | "video": "clips/y.mp4" | "films/z.npy",
     "conversations": [{"from": "human", "value": "<image>\\nWhat is ..."}, {"from": "gpt", "value": "..."}]}

``video`` ending in ``.npy``, ``.npz`` or ``.pkl`` names precomputed long-video EVA features
(see :mod:`train.visual_inputs`); a ``.npy`` record may carry ``subtitles`` and ``frame_times``.
Every problem is a :class:`DataError` that names the file, the record and what to fix: the
reference swallowed such errors and trained on a random other sample instead.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llamavid.model.layout import IMAGE_TOKEN

FEATURE_SUFFIXES = (".npy", ".npz", ".pkl")
ROLES = ("human", "gpt")


class DataError(ValueError):
    """A training record that cannot be used as it is; the message says which and why."""


def where(index: int, record: Any) -> str:
    """``record 12 (id=abc)``: how messages point at a record."""
    rid = record.get("id") if isinstance(record, dict) else None
    return f"record {index}" + (f" (id={rid})" if rid is not None else "")


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """All records of a ``.json`` list or a ``.jsonl`` file, or a DataError saying where the JSON breaks."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: data file not found")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        return list(_json_lines(path, text))
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of records (LLaVA format), got a {type(data).__name__}")
    return data


def _json_lines(path: Path, text: str) -> Iterator[dict[str, Any]]:
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: line {number} is not valid JSON: {exc.msg} (column {exc.colno})") from None


@dataclass(frozen=True)
class MediaRef:
    """The visual input of a record: ``image``, ``video`` (a clip), ``features`` (a film) or ``text``."""

    kind: str
    path: Path | None = None


def media_ref(index: int, record: dict[str, Any], image_folder: Path, video_folder: Path) -> MediaRef:
    """Resolve the record's ``image`` / ``video`` against the data folders."""
    image, video = record.get("image"), record.get("video")
    if image is not None and video is not None:
        raise DataError(f"{where(index, record)}: has both 'image' and 'video'; give one visual input per record")
    if image is not None:
        if not isinstance(image, str) or not image:
            raise DataError(f"{where(index, record)}: 'image' must be one relative path (a string), got {image!r}")
        return MediaRef("image", image_folder / image)
    if video is not None:
        if not isinstance(video, str) or not video:
            raise DataError(f"{where(index, record)}: 'video' must be one relative path (a string), got {video!r}")
        path = video_folder / video
        return MediaRef("features" if path.suffix.lower() in FEATURE_SUFFIXES else "video", path)
    return MediaRef("text")


def conversation_turns(index: int, record: Any) -> list[tuple[str, str]]:
    """(role, text) pairs, human first and alternating, ending with an answer.

    A leading ``gpt`` turn is dropped, as the reference does.
    """
    if not isinstance(record, dict):
        raise DataError(f"{where(index, record)}: a record must be a JSON object, got {type(record).__name__}")
    convs = record.get("conversations")
    if not isinstance(convs, list) or not convs:
        raise DataError(f"{where(index, record)}: needs a non-empty 'conversations' list")
    turns = []
    for k, turn in enumerate(convs):
        if not isinstance(turn, dict) or turn.get("from") not in ROLES or not isinstance(turn.get("value"), str):
            raise DataError(f"{where(index, record)}: conversation turn {k} must be "
                            f'{{"from": "human"|"gpt", "value": "text"}}, got {turn!r:.80}')
        turns.append((turn["from"], turn["value"]))
    if turns[0][0] == "gpt":
        turns = turns[1:]
    for k, (role, _) in enumerate(turns):
        if role != ROLES[k % 2]:
            raise DataError(f"{where(index, record)}: turns must alternate human, gpt, human, ...; "
                            f"turn {k} is from {role!r}")
    if len(turns) < 2 or turns[-1][0] != "gpt":
        raise DataError(f"{where(index, record)}: the conversation must end with a gpt answer")
    for k, (role, text) in enumerate(turns):
        if role == "gpt" and not text.strip():
            raise DataError(f"{where(index, record)}: answer {k // 2 + 1} is empty")
        if role == "gpt" and IMAGE_TOKEN in text:
            raise DataError(f"{where(index, record)}: answer {k // 2 + 1} contains {IMAGE_TOKEN}; "
                            "placeholders belong in human turns")
    return turns


def modality_length(record: dict[str, Any]) -> int:
    """Word count of all turns; negative for text-only records (the reference's grouping key)."""
    words = sum(len(str(t.get("value", "")).split()) for t in record.get("conversations", []) if isinstance(t, dict))
    words = max(words, 1)
    return words if ("image" in record or "video" in record) else -words
