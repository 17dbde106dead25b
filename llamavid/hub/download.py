"""Fetch one file safely: resumable, verified, never half-written under its final name.

Why not just ``hf_hub_download``: from huggingface-hub 1.x on, its plain-HTTP path writes to a
process-unique temporary file and *deletes it on failure* (huggingface_hub PR #4228), so a 10 GB
shard interrupted at 9 GB starts again from zero on the next run. Users of LLaMA-VID download
16-28 GB on home connections; resuming across runs matters more than anything else here. So:

* huggingface-hub (through :mod:`llamavid.hub.hf`) still does everything hub-specific: the file
  list with sizes and hashes (``HfApi.model_info(files_metadata=True)``), URLs and redirects (``hf_hub_url``,
  ``get_hf_file_metadata``, which honour ``HF_ENDPOINT``), the token (``HF_TOKEN`` /
  ``HF_HOME``), offline mode (``HF_HUB_OFFLINE``) and reuse of files already in the hub cache
  (``try_to_load_from_cache``, ``HF_HUB_CACHE``);
* this module moves the bytes, for hub files and plain HTTP files (``eva_vit_g.pth``) alike:
  ``<file>.part`` + HTTP ``Range`` to resume, retries with back-off while data keeps arriving,
  a fresh URL before every attempt (signed CDN links expire), fsync, size / sha256 / git-blob
  check, then an atomic rename. A file that fails its check is deleted, never renamed.

filelock and tqdm are imported where they are used: ``llamavid --help`` imports
this module (through ``llamavid models``) and must import no third-party package (tests/test_cli.py).
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import shutil
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from llamavid import storage
from llamavid.errors import UserError
from llamavid.storage import human_size

__all__ = [
    "DownloadError",
    "FetchResult",
    "RefusedContent",
    "Remote",
    "TransientError",
    "check_file",
    "check_free_space",
    "fetch",
    "file_sha256",
    "git_blob_sha1",
    "http_resolver",
    "http_size",
    "part_path",
]

log = logging.getLogger(__name__)

CHUNK = 1 << 20
USER_AGENT = "llamavid-models/0.1 (+python-urllib)"
#: (url, headers) to GET; called again before every attempt.
Resolver = Callable[[], tuple[str, dict[str, str]]]


class DownloadError(UserError):
    """A download failed or was refused; the message says what happened to the file and what to do."""


class RefusedContent(DownloadError):
    """The server sent something other than the expected file; the partial file is deleted."""


class TransientError(OSError):
    """A network hiccup worth retrying (connection refused, 5xx, timeout)."""


def part_path(dest: Path) -> Path:
    """Where the bytes of ``dest`` accumulate until they are complete and verified."""
    return dest.with_name(dest.name + ".part")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def git_blob_sha1(path: Path) -> str:
    """The git object id of a file: what the hub uses as ETag for files stored in git (not LFS)."""
    h = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def check_file(path: Path, size: int | None = None, sha256: str | None = None,
               git_sha1: str | None = None, *, hashes: bool = True) -> str | None:
    """What is wrong with ``path`` compared to what is expected, or None if nothing is.

    Only what is known is checked: a None size or hash is skipped, never guessed.
    """
    if not path.is_file():
        return "missing"
    actual = path.stat().st_size
    if size is not None and actual != size:
        how = "truncated" if actual < size else "too large"
        return f"{how}: {actual} bytes ({human_size(actual)}), expected {size} bytes ({human_size(size)})"
    if hashes and sha256 is not None:
        got = file_sha256(path)
        if got != sha256.lower():
            return f"sha256 mismatch: got {got}, expected {sha256.lower()} (corrupt or a different file)"
    if hashes and git_sha1 is not None:
        got = git_blob_sha1(path)
        if got != git_sha1.lower():
            return f"content mismatch: git blob id {got}, expected {git_sha1.lower()}"
    return None


def check_free_space(folder: Path, needed: int, what: str) -> None:
    """Refuse before downloading anything if ``needed`` bytes do not fit in ``folder``'s disk."""
    storage.check_free_space(folder, needed, what, "free some space, or put the data folder on a bigger disk "
                             "(--data-dir DIR or $LLAMAVID_DATA_DIR). Nothing was downloaded.", DownloadError)


class _StripAuthOnHostChange(urllib.request.HTTPRedirectHandler):
    """Follow redirects, but never forward the hub token to another host (a CDN)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D102 - urllib API
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and urlparse(newurl).netloc != urlparse(req.full_url).netloc:
            for key in [k for k in new.headers if k.lower() == "authorization"]:
                del new.headers[key]
        return new


_OPENER = urllib.request.build_opener(_StripAuthOnHostChange)


def _open(url: str, headers: dict[str, str], timeout: float, method: str = "GET") -> Any:
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, **headers}, method=method)
    return _OPENER.open(req, timeout=timeout)


def http_resolver(url: str) -> Resolver:
    return lambda: (url, {"Accept-Encoding": "identity"})


def http_size(url: str, timeout: float = 30.0) -> int | None:
    """The size a plain HTTP(S) or file:// URL announces (HEAD), or None if it does not say."""
    method = "HEAD" if urlparse(url).scheme in ("http", "https") else "GET"
    try:
        with _open(url, {"Accept-Encoding": "identity"}, timeout, method=method) as resp:
            length = resp.headers.get("Content-Length")
    except urllib.error.HTTPError as exc:
        raise DownloadError(f"{url}: the server answered HTTP {exc.code} {exc.reason}; check the URL "
                            f"(or the mirror set in $LLAMAVID_EVA_URL) and your connection") from exc
    except (OSError, http.client.HTTPException) as exc:
        raise DownloadError(f"cannot reach {url} ({exc}); check your connection or proxy settings. "
                            f"Nothing was downloaded.") from exc
    return int(length) if length and length.isdigit() else None


@dataclass
class Remote:
    """One file to fetch and what it must look like when it arrives."""

    dest: Path
    label: str  # shown in progress bars and errors, e.g. "YanweiLi/x/config.json" or a URL
    resolve: Resolver
    size: int | None = None
    sha256: str | None = None
    git_sha1: str | None = None
    cached: Path | None = None  # a complete local copy (hub cache) to link or copy instead
    record_sha256: bool = False  # compute the sha256 even when none is expected (to record it)


@dataclass(frozen=True)
class FetchResult:
    path: Path
    size: int
    sha256: str | None
    from_cache: bool = False


@contextmanager
def _lock(part: Path) -> Iterator[None]:
    """One writer per ``.part`` file: a second ``pull`` of the same file is refused, not interleaved."""
    try:
        from filelock import FileLock, Timeout
    except ImportError:  # filelock comes with huggingface-hub; without it, no lock
        yield
        return
    lock_file = part.with_name(part.name + ".lock")
    lock = FileLock(str(lock_file), timeout=0)
    try:
        lock.acquire()
    except Timeout as exc:
        raise DownloadError(f"another llamavid process is downloading {part.name[:-5]} into {part.parent}; "
                            f"wait for it to finish (or stop it) and try again") from exc
    try:
        yield
    finally:
        lock.release()
        lock_file.unlink(missing_ok=True)


def _progress(remote: Remote, initial: int, enabled: bool | None) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=remote.size, initial=initial, unit="B", unit_scale=True, unit_divisor=1000,
                desc=remote.dest.name[-40:], disable=None if enabled is None else not enabled,
                file=sys.stderr, leave=False, dynamic_ncols=True)


def _content_range_start(value: str | None) -> tuple[int | None, int | None]:
    """(first byte, total) from ``Content-Range: bytes 100-199/200``."""
    m = re.match(r"bytes (\d+)-\d+/(\d+|\*)", value or "")
    if not m:
        return None, None
    return int(m.group(1)), (int(m.group(2)) if m.group(2).isdigit() else None)


def _attempt(remote: Remote, part: Path, have: int, timeout: float, bar: Any) -> tuple[int, bool]:
    """One GET from ``have`` on; returns (bytes now in the part file, finished?)."""
    url, headers = remote.resolve()
    headers = dict(headers)
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        resp = _open(url, headers, timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have and (remote.size is None or have == remote.size):
            return have, True  # "nothing left to send": the part is already whole
        if exc.code == 416:
            part.write_bytes(b"")  # our part is longer than the file: start again
            bar.reset(total=remote.size)
            raise TransientError(f"{remote.label}: server refused the resume range; restarting") from exc
        if exc.code in (408, 429) or exc.code >= 500:
            raise TransientError(f"{remote.label}: HTTP {exc.code} {exc.reason}") from exc
        raise DownloadError(f"{remote.label}: the server answered HTTP {exc.code} {exc.reason}; check the "
                            f"address (HF_ENDPOINT, $LLAMAVID_EVA_URL) and your access rights") from exc
    with resp:
        status = getattr(resp, "status", 200) or 200
        length = resp.headers.get("Content-Length")
        total: int | None = None
        if have and status == 206:
            start, total = _content_range_start(resp.headers.get("Content-Range"))
            if start != have:
                part.write_bytes(b"")
                bar.reset(total=remote.size)
                raise TransientError(f"{remote.label}: server resumed at byte {start}, not {have}; restarting")
            if total is None and length and length.isdigit():
                total = have + int(length)
        else:
            if have:  # Range ignored (200): the body is the whole file again
                part.write_bytes(b"")
                have = 0
                bar.reset(total=remote.size)
            total = int(length) if length and length.isdigit() else None
        if remote.size is not None and total is not None and total != remote.size:
            raise RefusedContent(f"{remote.label}: the server sends {total} bytes, but {remote.size} bytes are "
                                f"expected; refusing it (wrong file, or a mirror serving something else)")
        limit = remote.size if remote.size is not None else total
        with open(part, "ab") as fh:
            try:
                while chunk := resp.read(CHUNK):
                    fh.write(chunk)
                    have += len(chunk)
                    bar.update(len(chunk))
                    if limit is not None and have > limit:
                        raise RefusedContent(f"{remote.label}: the server sent more than the expected {limit} "
                                            f"bytes; refusing it")
            finally:
                fh.flush()
                os.fsync(fh.fileno())
    if limit is not None and have < limit:
        raise TransientError(f"{remote.label}: connection closed after {have} of {limit} bytes")
    return have, True


def _discard(part: Path) -> None:
    part.unlink(missing_ok=True)


def _from_cache(remote: Remote, part: Path) -> bool:
    """Link (same disk) or copy the hub-cache copy into ``part``; False if that is not possible."""
    src = remote.cached
    if src is None or not src.is_file():
        return False
    _discard(part)
    try:
        os.link(os.path.realpath(src), part)
    except OSError:
        try:
            shutil.copyfile(src, part)
        except OSError:
            _discard(part)
            return False
    return True


def fetch(remote: Remote, *, progress: bool | None = None, retries: int = 5, retry_wait: float = 2.0,
          timeout: float = 60.0) -> FetchResult:
    """Download ``remote`` to ``remote.dest``; resume a ``.part`` left by an earlier run.

    ``retries`` counts attempts in a row that brought no new byte; an attempt that made
    progress resets it, so a long download on a flaky line keeps going. On failure the
    ``.part`` file stays for the next run (unless its content was refused); on success it is
    verified (size, sha256 / git blob id where known) and renamed, so ``dest`` either does not
    exist or is complete.

    Raises:
        DownloadError: the file cannot be fetched or failed verification (the message says
            whether the partial file was kept).
    """
    dest = remote.dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(dest)
    with _lock(part):
        from_cache = _from_cache(remote, part)
        if not from_cache:
            _download(remote, part, progress, retries, retry_wait, timeout)
        problem = check_file(part, remote.size, None, None)
        digest = None
        if problem is None and (remote.sha256 or remote.record_sha256):
            digest = file_sha256(part)
            if remote.sha256 and digest != remote.sha256.lower():
                problem = f"sha256 mismatch: got {digest}, expected {remote.sha256.lower()}"
        if problem is None and remote.git_sha1:
            problem = check_file(part, None, None, remote.git_sha1)
        if problem is not None:
            _discard(part)
            source = "the copy in the Hugging Face cache" if from_cache else "the download"
            raise RefusedContent(f"{remote.label}: {problem}; {source} was discarded and {dest.name} was not "
                                f"written. Run the command again; if it fails the same way, the server or "
                                f"mirror serves a different file.")
        size = part.stat().st_size
        os.replace(part, dest)
        storage.fsync_dir(dest.parent)
    return FetchResult(dest, size, digest, from_cache)


def _download(remote: Remote, part: Path, progress: bool | None, retries: int, retry_wait: float,
              timeout: float) -> None:
    have = part.stat().st_size if part.exists() else 0
    if remote.size is not None and have > remote.size:
        _discard(part)
        have = 0
    failures = 0
    bar = _progress(remote, have, progress)
    try:
        while True:
            before = have
            try:
                have, done = _attempt(remote, part, have, timeout, bar)
                if done:
                    return
            except RefusedContent:
                _discard(part)  # keeping it would only poison the next resume
                raise
            except (OSError, http.client.HTTPException) as exc:  # URLError, resets, timeouts, TransientError
                have = part.stat().st_size if part.exists() else 0
                failures = 0 if have > before else failures + 1
                if failures > retries:
                    raise DownloadError(
                        f"{remote.label}: download interrupted ({exc}); {human_size(have)} kept in {part}, "
                        f"run the same command again to resume from there") from exc
                wait = retry_wait * (2 ** min(failures, 5))
                log.info("%s: %s; retrying in %.0f s", remote.label, exc, wait)
                time.sleep(wait)
    except KeyboardInterrupt:
        print(f"\nllamavid: stopped; {human_size(part.stat().st_size if part.exists() else 0)} of "
              f"{remote.dest.name} kept in {part}; run the same command again to resume", file=sys.stderr)
        raise
    finally:
        bar.close()
