"""The append-only log of answered items that a run resumes from.

One JSON object per line, keyed by ``"id"``; each line is flushed and fsync'd before the next item
starts, so a run killed at any moment loses at most the item it was working on. A line cut short by
a crash (no newline at the end) is dropped, and the file is truncated back to the last whole line
before anything is appended, so the log never holds a torn record.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llamavid.errors import UserError


class AnswerLog:
    """Records keyed by id, read once at open and appended to as items are answered."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.records: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        raw = self.path.read_bytes()
        whole = raw[: raw.rfind(b"\n") + 1]  # a torn last line (no newline) is dropped
        for number, line in enumerate(whole.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                key = str(record["id"])
            except (ValueError, KeyError, TypeError) as exc:
                raise UserError(f"{self.path}:{number}: not an answer record ({exc}); "
                                "delete the file or the line to answer that item again") from None
            self.records[key] = record
        if len(whole) != len(raw):
            with open(self.path, "r+b") as fh:
                fh.truncate(len(whole))

    def __contains__(self, key: object) -> bool:
        return key in self.records

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.records.values())

    def get(self, key: str) -> dict[str, Any] | None:
        return self.records.get(key)

    def append(self, record: dict[str, Any]) -> None:
        """Write one record durably (flush + fsync), then remember it."""
        key = str(record["id"])
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n"
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        self.records[key] = record
