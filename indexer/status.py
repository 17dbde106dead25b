"""The human-readable ``llamavid index status`` table."""
from __future__ import annotations

from indexer.estimate import library_estimate
from indexer.library import list_movies
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
    estimate = library_estimate(store, list_movies(store))
    if estimate.films:
        print(estimate.describe() + " (`llamavid index first MOVIE` changes the order)")
