"""Library films as plain objects, for tests of what front ends say about a film without a library."""
from __future__ import annotations

from indexer.library import Movie


def movie(**values) -> Movie:
    """An indexed 1:30:25 film, Harbor.mkv; ``values`` change any field (``state="queued"``...)."""
    base = dict(id=1, path="/films/Harbor.mkv", rel_path="Harbor.mkv", library="/films", state="done",
                error=None, warning=None, stage=None, progress=(0, None), eta_seconds=None, duration=5425.0,
                width=640, height=360, rotation=0, fps=1.0, frames=0, features_complete=True, feature_path=None,
                feature_shape=None, vision_id=None, cache_bytes=0, cue_count=0, subtitle_sources=[])
    return Movie(**{**base, **values})
