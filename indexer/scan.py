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

from indexer import movies
from indexer.store import LibraryStore
from indexer.subtitle_sources import sidecar_signature
from llamavid.errors import UserError
from llamavid.fingerprint import fingerprint

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
    not_video: list[str] = field(default_factory=list)  # named like a film, but text (text_named_ts)
    unchanged: int = 0
    errors: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"{len(self.added)} new", f"{len(self.moved)} moved", f"{len(self.changed)} changed",
                 f"{len(self.missing)} missing", f"{len(self.returned)} back", f"{self.unchanged} unchanged"]
        if self.subtitles:
            parts.append(f"{len(self.subtitles)} with new subtitle files")
        if self.busy:
            parts.append(f"{len(self.busy)} still being written")
        if self.not_video:
            parts.append(f"{len(self.not_video)} text files with a video suffix skipped")
        if self.errors:
            parts.append(f"{len(self.errors)} unreadable")
        return ", ".join(parts)


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS and not path.name.startswith(".")


def text_named_ts(path: Path) -> bool:
    """A ``.ts`` file that is text, not an MPEG transport stream: TypeScript source shares the suffix.

    A transport stream starts with the sync byte 0x47 (at byte 4 in a 192-byte-packet stream) and
    its tables are full of zero bytes; source code has neither in its first 4 KiB. Cheap (one small
    read) and only for ``.ts``: every other file, and anything this does not settle, is left to
    the indexer's probe, which fails what is no video."""
    if path.suffix.lower() != ".ts":
        return False
    with path.open("rb") as f:
        head = f.read(4096)
    if not head or head[:1] == b"\x47" or head[4:5] == b"\x47" or b"\0" in head:
        return False  # empty (the probe says "not copied completely"), a stream, or binary
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:  # a character cut at 4 KiB is still text
        return exc.start >= len(head) - 3
    return True


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


def stat_identity(path: Path) -> dict:
    st = os.stat(path)
    return {"size": st.st_size, "mtime": st.st_mtime}


def add_library(store: LibraryStore, path: str | Path) -> dict:
    """Register a folder (idempotent); refuses files and folders nested in another library."""
    folder = Path(path).expanduser().resolve()
    if not folder.is_dir():
        raise UserError(f"{folder}: not a folder; `llamavid index add` takes a folder of movies")
    for known in store.libraries():
        other = Path(known["path"])
        if other == folder:
            return known
        if folder.is_relative_to(other) or other.is_relative_to(folder):
            raise UserError(f"{folder} overlaps the library folder {other}; remove that one first "
                            f"(`llamavid index rm {other}`) or add a folder that does not overlap")
    return store.add_library(str(folder))


def scan(store: LibraryStore, library_ids: list[int] | None = None,
         settle_seconds: float = 0.0) -> ScanReport:
    """Scan the given libraries (all by default) and queue what needs indexing.

    Files modified less than ``settle_seconds`` ago are skipped (reported as busy).
    """
    report = ScanReport()
    for library in store.libraries():
        if library_ids is None or library["id"] in library_ids:
            scan_library(store, library, report, settle_seconds)
    return report


def scan_library(store: LibraryStore, library: dict, report: ScanReport,
                 settle_seconds: float = 0.0) -> None:
    root = Path(library["path"])
    known = {r["path"]: r for r in store.library_movies(library["id"])}
    if not root.is_dir():  # unplugged drive or deleted folder: everything is missing, nothing is lost
        _mark_missing(store, [r for r in known.values() if not r["missing"]], report)
        report.errors.append(f"{root}: library folder not found")
        return
    found = walk_videos(root)
    settled_before = time.time() - settle_seconds
    for path in found:
        try:
            if settle_seconds and path.stat().st_mtime > settled_before:
                report.busy.append(str(path))
                continue
            _scan_file(store, library, path, known.get(str(path)), report)
        except OSError as exc:
            report.errors.append(f"{path}: {exc.strerror or exc}")
    present = {str(p) for p in found}  # busy files are present too: never marked missing
    _mark_missing(store, [r for p, r in known.items() if p not in present and not r["missing"]], report)
    store.library_scanned(library["id"])


def _mark_missing(store: LibraryStore, rows: list[dict], report: ScanReport) -> None:
    report.missing += store.mark_missing([row["id"] for row in rows])


def _scan_file(store: LibraryStore, library: dict, path: Path, row: dict | None,
               report: ScanReport) -> None:
    identity = stat_identity(path)
    rel = str(path.relative_to(library["path"]))
    if row is not None and row["size"] == identity["size"] and row["mtime"] == identity["mtime"]:
        if row["missing"]:
            store.set_missing(row["id"], False)
            report.returned.append(str(path))
        else:
            report.unchanged += 1
        _check_sidecars(store, row, path, report)
        return
    if row is None and text_named_ts(path):  # TypeScript, not a film: never queued
        report.not_video.append(str(path))
        return
    fp = fingerprint(path)
    if row is not None:
        _changed(store, row, path, dict(identity, fingerprint=fp), report)
        return
    moved = _vanished_with(store, fp) if identity["size"] else None  # empty files all look alike
    if moved is not None:
        store.update_movie(moved["id"], dict(identity, path=str(path), rel_path=rel, missing=0,
                                             library_id=library["id"]))
        report.moved.append(f"{moved['path']} -> {path}")
        return
    store.add_movie(dict(identity, library_id=library["id"], path=str(path), rel_path=rel, fingerprint=fp),
                    "new file")
    report.added.append(str(path))


def _check_sidecars(store: LibraryStore, row: dict, path: Path, report: ScanReport) -> None:
    """Subtitle files added, changed or removed next to an indexed film: read them again."""
    if not row["subtitles_done"] or sidecar_signature(path) == (row["sidecar_sig"] or ""):
        return
    # auto speech recognition may be needed (or not) now
    store.reread_subtitles(row["id"], "subtitle files changed",
                           redo_speech=(row["speech_state"] or "").startswith("skipped"))
    report.subtitles.append(str(path))


def _changed(store: LibraryStore, row: dict, path: Path, identity: dict, report: ScanReport) -> None:
    if identity["fingerprint"] == row["fingerprint"]:  # touched, same content
        store.update_movie(row["id"], dict(identity, missing=0))
        report.unchanged += 1
        return
    movies.reset(store, row["id"], missing=0, **identity)
    store.enqueue(row["id"], "file changed")
    report.changed.append(str(path))


def _vanished_with(store: LibraryStore, fp: str) -> dict | None:
    """A known movie with this content whose recorded path no longer exists (a rename or move)."""
    for row in store.movies_with_fingerprint(fp):
        if not os.path.exists(row["path"]):
            return row
    return None


def rescan_movie(store: LibraryStore, movie_id: int) -> str:
    """Re-check one movie's file (used when it changes under the indexer): missing/changed/same."""
    row = store.movie(movie_id)
    path = Path(row["path"])
    if not path.exists():
        store.set_missing(movie_id, True)
        return "missing"
    identity = dict(stat_identity(path), fingerprint=fingerprint(path))
    report = ScanReport()
    _changed(store, row, path, identity, report)
    return "changed" if report.changed else "same"
