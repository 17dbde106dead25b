"""Library folders and the scan that keeps the movie table in step with the disk.

A scan never re-reads a film whose size and mtime are unchanged. A new path is fingerprinted
(fingerprint.py); if a known movie with that fingerprint has vanished from its old path, it was
renamed or moved, and keeps its features and subtitles. A changed file is reset and re-queued.
Movies whose file is gone are marked missing, never deleted: an unplugged drive must not cost
hours of feature extraction.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import sqlite_utils

from indexer import movies
from indexer.db import atomic
from indexer.fingerprint import fingerprint
from indexer.subtitle_sources import sidecar_signature

VIDEO_EXTENSIONS = frozenset({
    ".mkv", ".mp4", ".m4v", ".mov", ".avi", ".wmv", ".webm", ".mpg", ".mpeg", ".ts", ".m2ts",
    ".mts", ".flv", ".ogv", ".vob", ".divx", ".3gp", ".mxf", ".asf", ".rm", ".rmvb",
})


@dataclass
class ScanReport:
    added: list[str] = field(default_factory=list)
    moved: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    returned: list[str] = field(default_factory=list)
    subtitles: list[str] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)
    unchanged: int = 0
    errors: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"{len(self.added)} new", f"{len(self.moved)} moved", f"{len(self.changed)} changed",
                 f"{len(self.missing)} missing", f"{len(self.returned)} back", f"{self.unchanged} unchanged"]
        if self.subtitles:
            parts.append(f"{len(self.subtitles)} with new subtitle files")
        if self.busy:
            parts.append(f"{len(self.busy)} still being written")
        if self.errors:
            parts.append(f"{len(self.errors)} unreadable")
        return ", ".join(parts)


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS and not path.name.startswith(".")


def walk_videos(root: Path) -> list[Path]:
    """Video files under ``root``, recursively, following folder links once (no loops)."""
    found, seen = [], set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(folder) / f for f in sorted(files) if is_video(Path(f))]
    return found


def add_library(db: sqlite_utils.Database, path: str | Path) -> dict:
    """Register a folder (idempotent); refuses files and folders nested in another library."""
    from llamavid.errors import UserError

    folder = Path(path).expanduser().resolve()
    if not folder.is_dir():
        raise UserError(f"{folder}: not a folder; `llamavid index add` takes a folder of movies")
    for row in db.query("SELECT path FROM libraries"):
        other = Path(row["path"])
        if other == folder:
            return next(db.query("SELECT * FROM libraries WHERE path = ?", [str(folder)]))
        if folder.is_relative_to(other) or other.is_relative_to(folder):
            raise UserError(f"{folder} overlaps the library folder {other}; remove that one first "
                            f"(`llamavid index rm {other}`) or add a folder that does not overlap")
    with atomic(db):
        db.execute("INSERT INTO libraries (path, added_at) VALUES (?, ?)", [str(folder), movies.now()])
    return next(db.query("SELECT * FROM libraries WHERE path = ?", [str(folder)]))


def scan(db: sqlite_utils.Database, library_ids: list[int] | None = None,
         settle_seconds: float = 0.0) -> ScanReport:
    """Scan the given libraries (all by default) and queue what needs indexing.

    Files modified less than ``settle_seconds`` ago are skipped (reported as busy).
    """
    report = ScanReport()
    libraries = list(db.query("SELECT * FROM libraries ORDER BY id"))
    for library in libraries:
        if library_ids is None or library["id"] in library_ids:
            scan_library(db, library, report, settle_seconds)
    return report


def scan_library(db: sqlite_utils.Database, library: dict, report: ScanReport,
                 settle_seconds: float = 0.0) -> None:
    root = Path(library["path"])
    known = {r["path"]: r for r in db.query("SELECT * FROM movies WHERE library_id = ?", [library["id"]])}
    if not root.is_dir():  # unplugged drive or deleted folder: everything is missing, nothing is lost
        _mark_missing(db, [r for r in known.values() if not r["missing"]], report)
        report.errors.append(f"{root}: library folder not found")
        return
    found = walk_videos(root)
    settled_before = time.time() - settle_seconds
    for path in found:
        try:
            if settle_seconds and path.stat().st_mtime > settled_before:
                report.busy.append(str(path))
                continue
            _scan_file(db, library, path, known.get(str(path)), report)
        except OSError as exc:
            report.errors.append(f"{path}: {exc.strerror or exc}")
    present = {str(p) for p in found}  # busy files are present too: never marked missing
    _mark_missing(db, [r for p, r in known.items() if p not in present and not r["missing"]], report)
    with atomic(db):
        db.execute("UPDATE libraries SET scanned_at = ? WHERE id = ?", [movies.now(), library["id"]])


def _mark_missing(db: sqlite_utils.Database, rows: list[dict], report: ScanReport) -> None:
    with atomic(db):
        for row in rows:
            current = db.execute("SELECT path FROM movies WHERE id = ?", [row["id"]]).fetchone()
            if current and not os.path.exists(current[0]):  # a move earlier in the scan updated it
                db.execute("UPDATE movies SET missing = 1 WHERE id = ?", [row["id"]])
                report.missing.append(current[0])


def _scan_file(db: sqlite_utils.Database, library: dict, path: Path, row: dict | None,
               report: ScanReport) -> None:
    identity = movies.stat_identity(path)
    rel = str(path.relative_to(library["path"]))
    if row is not None and row["size"] == identity["size"] and row["mtime"] == identity["mtime"]:
        if row["missing"]:
            with atomic(db):
                db.execute("UPDATE movies SET missing = 0 WHERE id = ?", [row["id"]])
            report.returned.append(str(path))
        else:
            report.unchanged += 1
        _check_sidecars(db, row, path, report)
        return
    fp = fingerprint(path)
    if row is not None:
        _changed(db, row, path, dict(identity, fingerprint=fp), report)
        return
    moved = _vanished_with(db, fp) if identity["size"] else None  # empty files all look alike
    if moved is not None:
        with atomic(db):
            db["movies"].update(moved["id"], dict(identity, path=str(path), rel_path=rel, missing=0,
                                                  library_id=library["id"]))
        report.moved.append(f"{moved['path']} -> {path}")
        return
    t = movies.now()
    with atomic(db):
        movie_id = db["movies"].insert(dict(identity, library_id=library["id"], path=str(path), rel_path=rel,
                                            fingerprint=fp, added_at=t, changed_at=t)).last_pk
        movies.enqueue(db, movie_id, "new file")
    report.added.append(str(path))


def _check_sidecars(db: sqlite_utils.Database, row: dict, path: Path, report: ScanReport) -> None:
    """Subtitle files added, changed or removed next to an indexed film: read them again."""
    if not row["subtitles_done"] or sidecar_signature(path) == (row["sidecar_sig"] or ""):
        return
    with atomic(db):
        db.execute("UPDATE movies SET subtitles_done = 0 WHERE id = ?", [row["id"]])
        if (row["speech_state"] or "").startswith("skipped"):  # auto speech may be needed (or not) now
            db.execute("UPDATE movies SET speech_state = NULL WHERE id = ?", [row["id"]])
        movies.enqueue(db, row["id"], "subtitle files changed", keep_error=True)
    report.subtitles.append(str(path))


def _changed(db: sqlite_utils.Database, row: dict, path: Path, identity: dict, report: ScanReport) -> None:
    if identity["fingerprint"] == row["fingerprint"]:  # touched, same content
        with atomic(db):
            db["movies"].update(row["id"], dict(identity, missing=0))
        report.unchanged += 1
        return
    movies.reset(db, row["id"], missing=0, **identity)
    movies.enqueue(db, row["id"], "file changed")
    report.changed.append(str(path))


def _vanished_with(db: sqlite_utils.Database, fp: str) -> dict | None:
    """A known movie with this content whose recorded path no longer exists (a rename or move)."""
    for row in db.query("SELECT * FROM movies WHERE fingerprint = ? ORDER BY missing DESC, id", [fp]):
        if not os.path.exists(row["path"]):
            return row
    return None


def rescan_movie(db: sqlite_utils.Database, movie_id: int) -> str:
    """Re-check one movie's file (used when it changes under the indexer): missing/changed/same."""
    row = movies.get(db, movie_id)
    path = Path(row["path"])
    if not path.exists():
        with atomic(db):
            db.execute("UPDATE movies SET missing = 1 WHERE id = ?", [movie_id])
        return "missing"
    identity = dict(movies.stat_identity(path), fingerprint=fingerprint(path))
    report = ScanReport()
    _changed(db, row, path, identity, report)
    return "changed" if report.changed else "same"
