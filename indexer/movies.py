"""Movie operations that touch the feature cache files as well as the database rows.

Resetting a movie (its content changed) drops everything derived from the old content: features,
frame times, subtitle tracks and cues.
"""
from __future__ import annotations

from pathlib import Path

from indexer.features import PARTIAL_SUFFIX
from indexer.store import LibraryStore


def remove_cache_files(row: dict) -> None:
    """Delete a movie's feature files (final and partial); missing files are fine."""
    path = row.get("feature_path")
    if not path:
        return
    for candidate in (Path(path), Path(path + PARTIAL_SUFFIX)):
        try:
            candidate.unlink()
        except FileNotFoundError:
            pass


def clear_features(store: LibraryStore, movie_id: int) -> None:
    """Forget the features (file and frame times) so the feature stage starts over."""
    remove_cache_files(store.movie(movie_id))
    store.clear_features(movie_id)


def reset(store: LibraryStore, movie_id: int, **identity) -> None:
    """The content changed: drop everything derived from it and record the new identity."""
    remove_cache_files(store.movie(movie_id))
    store.reset_movie(movie_id, identity)


def delete(store: LibraryStore, movie_id: int) -> None:
    """Remove the movie from the index (the video file itself is never touched)."""
    remove_cache_files(store.movie(movie_id))
    store.delete_movie(movie_id)
