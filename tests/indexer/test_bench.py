"""The decoding benchmark runs end to end on a tiny clip and reports consistent numbers."""
from __future__ import annotations

import pytest

from cli.bench.decode import benchmark, make_clip, repeat_clip
from llamavid.media.probe import probe


def test_repeat_clip_makes_a_longer_valid_file(tmp_path):
    clip = make_clip(tmp_path / "a.mp4", 2, 160, 96)
    longer = repeat_clip(clip, tmp_path / "b.mp4", 3)
    assert probe(longer).duration == 6.0 and probe(clip).duration == 2.0


@pytest.mark.slow
def test_benchmark_smoke(tmp_path):
    lines = []
    report = benchmark(seconds=2, repeat=2, width=160, height=96, workers=2, seek_seconds=2, long_factor=2,
                       strategies=["every-frame", "nonref", "seek", "llamavid", "llamavid-workers"], workdir=tmp_path,
                       rounds=2, gop_seconds=1, log=lines.append)
    results = {r["strategy"]: r for r in report["results"]}
    assert list(results) == ["every-frame", "nonref", "seek", "llamavid", "llamavid-workers"]
    assert [results[s]["sampled"] for s in ("every-frame", "nonref", "llamavid", "llamavid-workers")] == [4] * 4
    assert "median of 2 runs" in results["nonref"]["note"]
    assert results["seek"]["sampled"] == 2 and "extrapolated" in results["seek"]["note"]
    assert all(r["seconds_per_hour"] > 0 and r["cpu_seconds_per_hour"] > 0 and r["peak_rss_mb"] > 0
               for r in results.values())
    assert results["llamavid-workers"]["worker_peak_rss_mb"] > 0 and results["llamavid"]["worker_peak_rss_mb"] == 0
    assert report["long"]["sampled"] == 8 and report["long"]["clip_seconds"] == 8
    assert len(lines) == 8 and lines[1].startswith("clip: 4 s 160x96") and "GOP 1 s" in lines[1]
    assert lines[-1].startswith("memory vs length")


@pytest.mark.slow
def test_the_queue_benchmark_compares_the_order_of_work(tmp_path, capsys):
    """``llamavid bench queue``: before, the opened film waits for every film found before it and is
    answered from its frames; after, it goes first (and is askable from its dialogue, or from its frames
    when they are read before the first look)."""
    import json

    import cli

    assert cli.main(["bench", "queue", "--films", "3", "--seconds", "6", "--work", str(tmp_path)]) == 0
    before, after = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert (before["mode"], after["mode"]) == ("before", "after") and before["films"] == 3
    assert before["went_by"] == "frames" and after["went_by"] in ("dialogue", "frames")
    assert (before["indexed_before_it"], after["indexed_before_it"]) == (2, 0)  # waited for all, for none
    assert after["first_word_s"] >= after["askable_s"] > 0
