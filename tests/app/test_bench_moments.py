"""``llamavid bench moments --quick``: one generated film with subtitles and scripted scenes, indexed by
the real indexer (scene vectors of a tiny random CLIP included), asked about by the chat service on a
tiny model; every quote's first moment is its line, and the scene questions are counted."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cli.bench.moments import MODES, QUICK
from indexer.store import LibraryStore

pytestmark = pytest.mark.slow


def test_the_quick_set_finds_every_quoted_line_first(tmp_path) -> None:
    cmd = [sys.executable, "-m", "cli", "bench", "moments", "--quick", "--work", str(tmp_path), "--misses"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)  # ~30 s; minutes under load
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    figures = {(r["mode"], r["kind"]): r for r in rows if r.get("bench") == "moments"}
    assert set(figures) == {(mode, kind) for mode in MODES for kind in ("quote", "paraphrase", "scene")}
    lines, scenes = len(QUICK[0].lines), len(QUICK[0].scenes)
    for (mode, kind), figure in figures.items():
        assert figure["questions"] == (scenes if kind == "scene" else lines), (mode, kind)
        assert figure["hit@5"] >= figure["hit@1"], (mode, kind)
        if kind == "quote":
            assert figure["hit@1"] == 100.0, [r for r in rows if r.get("miss") == mode]
    (listing,) = [r for r in rows if r.get("bench") == "moment-list"]  # one moment list per answer, timed
    size = min(4, max(1, lines // 2))  # a follow-up conversation opens with one more question per group
    openers = -(-lines // size) + -(-scenes // 2) if "follow-up" in MODES else 0
    assert listing["answers"] == sum(f["questions"] for f in figures.values()) + openers
    assert 0 < listing["median_ms"] <= listing["p95_ms"] <= listing["max_ms"]
    with LibraryStore.open(tmp_path / "data" / "library.db") as store:  # the film has its scene vectors
        assert [(r["scenes_state"], r["scenes_done"]) for r in store.movie_views()] == [("done", 60)]
