"""A film indexed by ``llamavid index`` answers through ``llamavid chat --movie``, end to end."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from .test_chat import write_clip

ROOT = Path(__file__).resolve().parents[2]


def llamavid(data_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "LLAMAVID_DATA_DIR": str(data_dir), "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "cli", *args], env=env, text=True,
                          capture_output=True, timeout=600)


@pytest.mark.slow
def test_indexed_movie_chat_matches_the_api(tiny, tiny_checkpoint, tmp_path):
    from indexer.library import film_visual, find_movie, open_library
    from llamavid.runtime.chat import Chat
    from llamavid.runtime.generate import SamplingOptions

    films, data = tmp_path / "films", tmp_path / "data"
    films.mkdir()
    write_clip(films / "Harbor (2001).mp4", seconds=4)
    (films / "Harbor (2001).srt").write_text(
        "1\n00:00:00,500 --> 00:00:01,400\nHello captain.\n\n2\n00:00:02,100 --> 00:00:03,000\nWe sail at night.\n")
    assert llamavid(data, "index", "add", str(films)).returncode == 0
    run = llamavid(data, "index", "run", "--vision", str(tiny_checkpoint / "eva_vit_g.pth"), "--speech", "never",
                   "--quiet")
    assert run.returncode == 0, run.stderr
    db = open_library(data)
    movie = find_movie(db, "Harbor (2001).mp4")
    visual = film_visual(db, movie)
    assert visual.features.shape == (4, 256, 176) and len(visual.subtitles) == 2
    assert np.allclose(visual.frame_times, [0, 1, 2, 3], atol=0.1)
    expected = "".join(Chat(tiny, visual).ask("Who speaks?", SamplingOptions(max_new_tokens=4, temperature=0)))
    answer = llamavid(data, "chat", "--model", str(tiny_checkpoint), "--movie", "Harbor (2001).mp4", "-p",
                      "Who speaks?", "--temperature", "0", "--max-new-tokens", "4")
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.rstrip("\n") == expected
    missing = llamavid(data, "chat", "--model", str(tiny_checkpoint), "--movie", "Nope.mkv", "-p", "x")
    assert missing.returncode != 0 and "Nope.mkv" in missing.stderr and "Traceback" not in missing.stderr
