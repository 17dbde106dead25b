"""Reading the files benchmarks publish, with errors that name the file and say what is wrong.

A benchmark's questions come as JSON, JSON Lines (POPE's ``.json`` files are JSON Lines), TSV with
base64 images (MMBench) or parquet (the Hugging Face releases of Video-MME and LongVideoBench);
:func:`read_records` takes any of them by content and suffix, so a user may also hand over a JSON
export of a parquet file.
"""
from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from llamavid.errors import UserError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".JPG", ".JPEG", ".PNG")
VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".MP4", ".MKV", ".AVI", ".MOV")


def require_file(path: Path, what: str) -> Path:
    """``path`` if it is a file; else a UserError naming it and what it should be."""
    if not Path(path).is_file():
        raise UserError(f"{path}: no such file ({what})")
    return Path(path)


def read_json(path: Path, what: str) -> Any:
    require_file(path, what)
    try:
        return json.loads(Path(path).read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON at line {exc.lineno}, column {exc.colno} ({exc.msg}); "
                        f"expected {what}") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text ({exc}); expected {what}") from None


def read_jsonl(path: Path, what: str) -> list[dict]:
    require_file(path, what)
    rows = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8-sig").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{number}: not a JSON object ({exc.msg}); expected {what}, "
                            "one JSON object per line") from None
    return rows


def read_json_or_lines(path: Path, what: str) -> list[dict]:
    """A JSON list, or JSON Lines (POPE ships JSON Lines under a ``.json`` name)."""
    require_file(path, what)
    text = Path(path).read_text(encoding="utf-8-sig").lstrip()
    if text.startswith("["):
        return as_list(read_json(path, what), path, what)
    return read_jsonl(path, what)


def read_tsv(path: Path, what: str) -> list[dict[str, str]]:
    """Rows of a tab-separated file with a header line (MMBench's cells hold whole base64 images)."""
    require_file(path, what)
    csv.field_size_limit(sys.maxsize)
    with open(path, encoding="utf-8-sig", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    if not rows:
        raise UserError(f"{path}: no rows under a header line; expected {what}")
    return rows


def read_parquet(path: Path, what: str) -> list[dict]:
    require_file(path, what)
    try:
        import pyarrow.parquet as pq  # only parquet releases need it (0.3 s to import)
    except ImportError as exc:
        raise UserError(f"{path}: reading parquet needs pyarrow ({exc}); pip install pyarrow, "
                        "or give the same table as JSON") from None
    try:
        return pq.read_table(path).to_pylist()
    except Exception as exc:  # noqa: BLE001 - any arrow error means the file is not what we need
        raise UserError(f"{path}: cannot read it as parquet ({exc}); expected {what}") from None


def read_records(path: Path, what: str) -> list[dict]:
    """A table of records from JSON (a list), JSON Lines or parquet, chosen by suffix and content."""
    if Path(path).suffix == ".parquet":
        return read_parquet(path, what)
    return read_json_or_lines(path, what)


def as_list(value: Any, path: Path, what: str) -> list:
    if not isinstance(value, list):
        raise UserError(f"{path}: expected a JSON list ({what}), found {type(value).__name__}")
    return value


def fields(row: Any, names: Iterable[str], path: Path, where: str) -> None:
    """Fail with the file, the record and the missing field names when a record lacks any of them."""
    if not isinstance(row, Mapping):
        raise UserError(f"{path}: {where} is {type(row).__name__}, expected an object")
    missing = [n for n in names if n not in row]
    if missing:
        raise UserError(f"{path}: {where} lacks {', '.join(repr(m) for m in missing)}; "
                        "is this the benchmark's official file?")


def find_with_suffix(folder: Path, stem: str, suffixes: Iterable[str]) -> Path | None:
    """``folder/stem<suffix>`` for the first suffix that exists (videos come as .mp4, .mkv, .avi...)."""
    for suffix in suffixes:
        candidate = folder / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def first_existing(*candidates: Path) -> Path | None:
    return next((p for p in candidates if p.exists()), None)
