"""``llamavid bench moments --quick``: one generated film with subtitles, indexed by the real indexer,
asked about by the chat service on a tiny model; every quote's first moment is its line."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cli.bench.moments import MODES, QUICK

pytestmark = pytest.mark.slow


def test_the_quick_set_finds_every_quoted_line_first(tmp_path) -> None:
    cmd = [sys.executable, "-m", "cli", "bench", "moments", "--quick", "--work", str(tmp_path), "--misses"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)  # ~30 s; minutes under load
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    figures = {(r["mode"], r["kind"]): r for r in rows if r.get("bench") == "moments"}
    assert set(figures) == {(mode, kind) for mode in MODES for kind in ("quote", "paraphrase")}
    lines = len(QUICK[0].lines)
    for (mode, kind), figure in figures.items():
        assert figure["questions"] == lines and figure["hit@5"] >= figure["hit@1"], (mode, kind)
        if kind == "quote":
            assert figure["hit@1"] == 100.0, [r for r in rows if r.get("miss") == mode]
