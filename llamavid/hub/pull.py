"""``llamavid models pull``: a plan of what to fetch for a catalogue entry (checked against the hub's
listing and the disk), and carrying it out with resumable, verified downloads."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llamavid.errors import UserError
from llamavid.files import CONFIG, MANIFEST
from llamavid.hub import catalog, download, hf
from llamavid.hub.catalog import CatalogEntry
from llamavid.hub.installed import (
    SHARED,
    data_dir_of,
    now_iso,
    read_manifest,
    read_registry,
    shared_dir,
    shared_manifest,
)
from llamavid.paths import DataDir
from llamavid.storage import human_size, write_json_atomic


@dataclass
class PullPlan:
    """What `pull` will do for one catalogue entry, decided before any byte is downloaded."""

    entry: CatalogEntry
    folder: Path
    commit: str
    manifest: dict
    remotes: list[download.Remote] = field(default_factory=list)
    shared_remotes: list[download.Remote] = field(default_factory=list)
    present: list[str] = field(default_factory=list)  # files already complete

    @property
    def needed_bytes(self) -> int:
        """Bytes still to write: sizes minus what ``.part`` files already hold (cache copies count)."""
        total = 0
        shared = [(r, catalog.SHARED_PARTS[r.dest.name].approx_size) for r in self.shared_remotes]
        for r, guess in [*((r, None) for r in self.remotes), *shared]:
            size = r.size if r.size is not None else guess or 0  # unknown length: the catalogue's estimate
            part = download.part_path(r.dest)
            have = part.stat().st_size if part.exists() else 0
            total += max(size - have, 0)
        return total


def _shared_remote(part: catalog.SharedPart, dd: DataDir) -> download.Remote:
    dest = shared_dir(dd) / part.filename
    if part.repo_id:
        commit, info = hf.hub_file_info(part.repo_id, part.repo_file or part.filename)
        return download.Remote(dest, f"{part.repo_id}/{part.repo_file}",
                               hf.hub_resolver(part.repo_id, part.repo_file or part.filename, commit),
                               size=info.size, sha256=info.sha256 or part.sha256, git_sha1=info.git_sha1,
                               cached=hf.cached_hub_file(part.repo_id, part.repo_file or part.filename,
                                                               commit), record_sha256=True)
    url = catalog.shared_part_url(part)
    assert url is not None, part
    return download.Remote(dest, url, download.http_resolver(url), size=download.http_size(url),
                           sha256=part.sha256, record_sha256=True)


def plan_pull(entry: CatalogEntry, data_dir: DataDir | str | os.PathLike[str], *, force: bool = False) -> PullPlan:
    """Ask the hub for the repo's files and decide what is missing; downloads nothing."""
    dd = data_dir_of(data_dir)
    folder = dd.models / entry.name
    if entry.name in read_registry(dd):
        raise UserError(f"{entry.name!r} is registered for a local folder; `llamavid models rm {entry.name}` "
                        f"first if you want to download it instead")
    listing = hf.hub_repo_files(entry.repo_id)
    by_name = {f.name: f for f in listing.files}
    wanted = catalog.select_repo_files(list(by_name), entry.files)
    if entry.files and len(wanted) < len(entry.files):
        raise UserError(f"{entry.repo_id} at commit {listing.commit[:8]} lacks {', '.join(entry.files)}; "
                        "the repo has changed: update llamavid, or pull another model")
    if CONFIG not in wanted and not entry.files:
        raise UserError(f"{entry.repo_id} has no config.json at commit {listing.commit[:8]}; it is not a "
                        f"checkpoint repo (check HF_ENDPOINT)")
    manifest = {"format": 1, "name": entry.name, "repo_id": entry.repo_id, "commit": listing.commit,
                "endpoint": hf.hub_endpoint(), "files": {}, "complete": False}
    plan = PullPlan(entry, folder, listing.commit, manifest)
    before = (read_manifest(folder) or {"files": {}})["files"]
    for name in wanted:
        info = by_name[name]
        manifest["files"][name] = {"size": info.size, "sha256": info.sha256, "git_sha1": info.git_sha1}
        dest = folder / name
        old = before.get(name, {})
        # a file the repo has changed since the last pull is fetched again even if its size is the same
        changed = any(old.get(k) not in (None, v) for k, v in (("sha256", info.sha256), ("git_sha1", info.git_sha1)))
        if not force and not changed and dest.is_file() and download.check_file(dest, info.size, hashes=False) is None:
            plan.present.append(name)
            continue
        plan.remotes.append(download.Remote(
            dest, f"{entry.repo_id}/{name}", hf.hub_resolver(entry.repo_id, name, listing.commit),
            size=info.size, sha256=info.sha256, git_sha1=info.git_sha1,
            cached=hf.cached_hub_file(entry.repo_id, name, listing.commit)))
    recorded = shared_manifest(dd)["files"]
    for part_name in entry.shared:
        dest = shared_dir(dd) / part_name
        size = (recorded.get(part_name) or {}).get("size")
        if not force and dest.is_file() and download.check_file(dest, size, hashes=False) is None:
            plan.present.append(f"{SHARED}/{part_name}")
            continue
        plan.shared_remotes.append(_shared_remote(catalog.SHARED_PARTS[part_name], dd))
    return plan


def pull(plan: PullPlan, *, progress: bool | None = None, retries: int = 5, retry_wait: float = 2.0,
         say: Any = print) -> PullPlan:
    """Carry out a plan: check disk space, fetch each missing file, record what arrived."""
    dd = DataDir(plan.folder.parent.parent)
    download.check_free_space(plan.folder.parent, plan.needed_bytes, f"pulling {plan.entry.name}")
    plan.folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(plan.folder / MANIFEST, plan.manifest)
    todo = [*plan.shared_remotes, *plan.remotes]
    for i, remote in enumerate(todo, 1):
        size = human_size(remote.size) if remote.size is not None else "size unknown"
        say(f"[{i}/{len(todo)}] {remote.label} ({size})")
        result = download.fetch(remote, progress=progress, retries=retries, retry_wait=retry_wait)
        if remote.dest.parent == shared_dir(dd):
            shared = shared_manifest(dd)
            shared["files"][remote.dest.name] = {
                "size": result.size, "sha256": result.sha256, "source": remote.label,
                "sha256_source": ("published by the hub (checked)" if remote.sha256 else
                                  "computed after download; content checked against the hub's git blob id"
                                  if remote.git_sha1 else "computed after download (no hash is published; "
                                                          "size checked)"),
                "fetched": now_iso()}
            write_json_atomic(shared_dir(dd) / MANIFEST, shared)
    plan.manifest["complete"] = True
    plan.manifest["pulled"] = now_iso()
    write_json_atomic(plan.folder / MANIFEST, plan.manifest)
    return plan


