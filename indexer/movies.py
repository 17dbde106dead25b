"""Movie operations that touch the feature cache files as well as the database rows.

Resetting a movie (its content changed) drops everything derived from the old content: features,
scene vectors, frame times, subtitle tracks, cues and its prepared state. Removing one deletes its feature cache and
its prepared state with its rows (a prepared state left behind would sit on the disk outside the
size cap, which counts only the films of the library); the conversations kept about it stay, and the
chat service detaches them (the film's id is never given to another film).
"""
from __future__ import annotations

from pathlib import Path

from indexer.features import PARTIAL_SUFFIX
from indexer.store import LibraryStore


def remove_cache_files(row: dict, scenes: bool = True) -> None:
    """Delete a movie's feature files and (``scenes``) its scene vectors, final and partial; missing
    files are fine. The scene vectors do not depend on EVA: new features keep them."""
    for path in (row.get("feature_path"), row.get("scenes_path") if scenes else None):
        if not path:
            continue
        for candidate in (Path(path), Path(path + PARTIAL_SUFFIX)):
            try:
                candidate.unlink()
            except FileNotFoundError:
                pass


def remove_prepared_file(row: dict) -> None:
    """Delete a movie's prepared state (see indexer.prepare); a missing file is fine."""
    path = row.get("prepared_path")
    if path:
        Path(path).unlink(missing_ok=True)


def clear_features(store: LibraryStore, movie_id: int) -> None:
    """Forget the features (file and frame times) so the feature stage starts over."""
    remove_cache_files(store.movie(movie_id), scenes=False)
    store.clear_features(movie_id)


def reset(store: LibraryStore, movie_id: int, **identity) -> None:
    """The content changed: drop everything derived from it and record the new identity."""
    row = store.movie(movie_id)
    remove_cache_files(row)
    remove_prepared_file(row)
    store.reset_movie(movie_id, identity)


def delete(store: LibraryStore, movie_id: int) -> None:
    """Remove the movie from the index with its feature cache and prepared state (the video file
    itself is never touched)."""
    row = store.movie(movie_id)
    remove_cache_files(row)
    remove_prepared_file(row)
    store.delete_movie(movie_id)
