"""The movie library indexer: folders of films into SQLite plus per-movie EVA feature caches.

Writers: ``llamavid index ...`` (llamavid.cli.index) and the job runner (indexer.runner), through
the queries of indexer.store. Readers (the apps): the functions of indexer.library, re-exported
here. They load on first use: every ``import indexer.<module>`` runs this file, and
indexer.library imports torch (its ``Cue`` comes from llamavid.prompt.subtitles, which imports the
model), which commands such as ``llamavid index pause`` never need.
"""
from __future__ import annotations

import importlib

__all__ = ["Cue", "FeaturesNotReady", "Movie", "SearchHit", "cache_bytes", "find_movie", "frame_times",
           "get_movie", "list_movies", "open_features", "open_library", "search_subtitles", "subtitles"]


def __getattr__(name: str):
    if name in __all__:
        return getattr(importlib.import_module("indexer.library"), name)
    raise AttributeError(f"module 'indexer' has no attribute {name!r}")
