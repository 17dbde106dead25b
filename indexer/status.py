"""The human-readable ``llamavid index status`` table."""
from __future__ import annotations

from indexer.estimate import library_estimate
from indexer.library import list_movies
from indexer.scenes import NOT_INSTALLED, OFF, PULL_HINT
from indexer.store import LibraryStore
from llamavid.storage import human_size


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return ""
    minutes = int(seconds // 60)
    return f"ETA {minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"ETA {minutes}m{int(seconds % 60):02d}s"


def _progress(movie) -> str:
    done, total = movie.progress
    if movie.state in ("running", "queued", "paused") and movie.stage and total:
        return f"{movie.stage} {done}/{total} {_eta(movie.eta_seconds)}".strip()
    return ""


def _folder_bytes(folder) -> int:
    """Everything in the feature cache, partial files and caches of removed movies included."""
    if not folder.is_dir():
        return 0
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


def print_table(store: LibraryStore, movies, cache_dir=None) -> None:
    print(f"{'ID':>4} {'STATE':<9} {'FRAMES':>7} {'CUES':>6} {'SUBTITLES':<18} {'CACHE':>9}  PATH")
    for m in movies:
        sources = ",".join(m.subtitle_sources) or "-"
        print(f"{m.id:>4} {m.state:<9} {m.frames:>7} {m.cue_count:>6} {sources:<18} "
              f"{human_size(m.cache_bytes):>9}  {m.rel_path}")
        prepared = (f"prepared for fast answers ({human_size(m.prepared_bytes)})" if m.prepared_bytes
                    else "to be prepared for fast answers" if m.prepare_wanted else None)
        for text in (_progress(m), prepared, m.error and f"error: {m.error}", m.warning and f"note: {m.warning}"):
            if text:
                print(f"{'':>6}{text}")
        for track in m.subtitle_tracks:
            if track["status"] != "ok":
                print(f"{'':>6}subtitles: {track['message']}")
    counts = store.queue_counts()
    total = sum(m.cache_bytes for m in movies)
    disk = _folder_bytes(cache_dir) if cache_dir else total
    queue = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "empty"
    paused = " (queue paused)" if store.queue_paused() else ""
    print(f"\n{len(movies)} movies, cache {human_size(total)} (on disk: {human_size(disk)}); jobs: {queue}{paused}")
    scenes = scenes_line(movies)
    if scenes:
        print(scenes)
    estimate = library_estimate(store, list_movies(store))
    if estimate.films:
        print(estimate.describe() + " (`llamavid index first MOVIE` changes the order)")


def scenes_line(movies) -> str | None:
    """What the library's scene vectors are (search by description, frame evidence for questions), or
    why there are none: said once for the library, not per film."""
    done = [m for m in movies if m.scenes_state == "done"]
    if any(m.scenes_state == NOT_INSTALLED for m in movies):
        return (f"scene search: {len(done)} of {len(movies)} films; no scene model is installed: {PULL_HINT} "
                "adds scene vectors to every film (about 3.7 MB per film hour)")
    if any(m.scenes_state == OFF for m in movies):
        return f"scene search: {len(done)} of {len(movies)} films (scene vectors off: --scenes never)"
    if done:
        return f"scene search: {len(done)} of {len(movies)} films ({human_size(sum(m.scenes_bytes for m in done))})"
    return None
