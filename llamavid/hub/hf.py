"""The Hugging Face hub as the model manager uses it: a repo's file listing with sizes and hashes,
URLs that honour ``HF_ENDPOINT``, the token, offline mode, and files already in the hub cache.

huggingface-hub is imported where it is used: ``llamavid --help`` imports this package and must
import no third-party package (tests/test_cli.py).
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from llamavid.hub.download import DownloadError, Resolver, TransientError


@dataclass(frozen=True)
class RepoFile:
    """A file of a hub repo as the hub describes it."""

    name: str
    size: int | None
    sha256: str | None  # LFS files: the sha256 the hub stores
    git_sha1: str | None  # files kept in git: their blob id


@dataclass(frozen=True)
class RepoListing:
    repo_id: str
    commit: str
    files: tuple[RepoFile, ...]


def hub_endpoint() -> str:
    """The hub URL in use: ``$HF_ENDPOINT`` (read by huggingface-hub at import) or huggingface.co."""
    from huggingface_hub import constants

    return constants.ENDPOINT


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Network-level exceptions of whichever HTTP client this huggingface-hub version uses."""
    found: list[type[BaseException]] = []
    for module, name in (("httpx2", "TransportError"), ("httpx", "TransportError"),
                         ("requests", "ConnectionError"), ("requests", "Timeout")):
        try:
            found.append(getattr(__import__(module), name))
        except (ImportError, AttributeError):
            continue
    return tuple(found)


def _hub_call(fn: Callable[[], Any], what: str) -> Any:
    """Run a huggingface-hub call; turn its errors into messages that say what to do."""
    from huggingface_hub import errors as hub_errors

    not_found = tuple(getattr(hub_errors, n) for n in ("RevisionNotFoundError", "RemoteEntryNotFoundError",
                                                       "EntryNotFoundError") if hasattr(hub_errors, n))

    try:
        return fn()
    except hub_errors.OfflineModeIsEnabled as exc:
        raise DownloadError(
            f"cannot fetch {what}: HF_HUB_OFFLINE is set, so no download is attempted. Unset it "
            f"(unset HF_HUB_OFFLINE) to download, or register a checkpoint folder you already have "
            f"with `llamavid models add NAME FOLDER`.") from exc
    except hub_errors.GatedRepoError as exc:
        raise DownloadError(f"{what} is gated on {hub_endpoint()}: accept its terms on the hub page and log in "
                            f"with `hf auth login` (or set HF_TOKEN)") from exc
    except hub_errors.RepositoryNotFoundError as exc:
        raise DownloadError(f"{what}: repository not found on {hub_endpoint()} (or private: log in with "
                            f"`hf auth login`). If HF_ENDPOINT points to a mirror, check that it has "
                            f"this repo.") from exc
    except not_found as exc:
        raise DownloadError(f"{what}: not found on {hub_endpoint()} ({exc.__class__.__name__}); the repo may "
                            f"have changed: `llamavid models list --available` shows what is expected") from exc
    except hub_errors.HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status in (401, 403):
            raise DownloadError(f"{what}: access denied by {hub_endpoint()} (HTTP {status}); log in with "
                                f"`hf auth login` or check HF_TOKEN") from exc
        raise TransientError(f"{what}: {hub_endpoint()} answered HTTP {status}") from exc
    except (*_transport_errors(), hub_errors.FileMetadataError) as exc:
        raise TransientError(f"{what}: cannot reach {hub_endpoint()} ({exc})") from exc


def _planning(fn: Callable[[], Any], what: str) -> Any:
    """A hub call made before any download: a network failure ends the command with advice."""
    try:
        return _hub_call(fn, what)
    except TransientError as exc:
        raise DownloadError(f"{exc}; check your connection, proxy and HF_ENDPOINT. Nothing was "
                            f"downloaded.") from exc


def hub_repo_files(repo_id: str, revision: str | None = None) -> RepoListing:
    """The files of a model repo with their sizes and hashes, pinned to one commit."""
    from huggingface_hub import HfApi

    info = _planning(lambda: HfApi().model_info(repo_id, revision=revision, files_metadata=True), repo_id)
    files = tuple(
        RepoFile(s.rfilename, s.lfs.size if s.lfs else s.size, s.lfs.sha256 if s.lfs else None,
                 None if s.lfs else s.blob_id)
        for s in (info.siblings or []))
    if not info.sha:
        raise DownloadError(f"{repo_id}: {hub_endpoint()} did not say which commit it serves; is HF_ENDPOINT a "
                            f"Hugging Face hub?")
    return RepoListing(repo_id, info.sha, files)


_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_SHA1 = re.compile(r"^[0-9a-f]{40}$")


def hub_file_info(repo_id: str, filename: str, revision: str | None = None) -> tuple[str, RepoFile]:
    """(commit, file description) of one hub file, from a HEAD request (its ETag is the hash)."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    meta = _planning(lambda: get_hf_file_metadata(hf_hub_url(repo_id, filename, revision=revision)),
                     f"{repo_id}/{filename}")
    etag = (meta.etag or "").lower()
    return meta.commit_hash, RepoFile(filename, meta.size, etag if _SHA256.match(etag) else None,
                                      etag if _SHA1.match(etag) else None)


def hub_resolver(repo_id: str, filename: str, revision: str) -> Resolver:
    """Resolve the download URL of a hub file at a fixed commit, just before each attempt."""

    def resolve() -> tuple[str, dict[str, str]]:
        from huggingface_hub import get_hf_file_metadata, hf_hub_url
        from huggingface_hub.utils import build_hf_headers

        url = hf_hub_url(repo_id, filename, revision=revision)
        meta = _hub_call(lambda: get_hf_file_metadata(url), f"{repo_id}/{filename}")
        location = meta.location or url
        same_host = urlparse(location).netloc == urlparse(url).netloc
        headers = build_hf_headers() if same_host else {}
        headers["Accept-Encoding"] = "identity"
        return location, headers

    return resolve


def cached_hub_file(repo_id: str, filename: str, commit: str) -> Path | None:
    """A copy of the file already in the Hugging Face cache (``HF_HUB_CACHE``), if any."""
    from huggingface_hub import constants, try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, filename, cache_dir=constants.HF_HUB_CACHE, revision=commit)
    except Exception:  # noqa: BLE001 - a broken cache only means "download it"
        return None
    return Path(found) if isinstance(found, str) else None


