"""A small served library for the server's tests and measurements: a tiny model in the released
layout (:func:`llamavid.model.tiny.write_tiny_checkpoint`, installed in the data folder) and one
film with English subtitles, written with PyAV and indexed by the real indexer
(``llamavid index``, in a child process as a person would run it)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from llamavid.media.synthetic import clock, srt_text, write_video
from llamavid.model.tiny import write_tiny_checkpoint

MODEL = "llama-vid-tiny-224-long-video"
FILM = "Harbor.mp4"
SECONDS = 130
CUES = [(5.0, 8.0, "Hello captain, the wind is rising."),
        (40.0, 44.0, "The treasure is buried under the old lighthouse."),
        (90.0, 93.0, "We sail at night.")]


def make_library(root: Path, seconds: int = SECONDS) -> tuple[Path, Path]:
    """``root/data`` (the tiny model installed, the film indexed) and ``root/films``; returns both."""
    data, films = root / "data", root / "films"
    write_tiny_checkpoint(data / "models" / MODEL)
    write_video(films / FILM, clock(64, 48, 5), fps=5, seconds=seconds)  # H.264 in MP4: a browser plays it
    (films / (Path(FILM).stem + ".en.srt")).write_text(srt_text(CUES))
    for args in (["index", "add", str(films)], ["index", "run", "--speech", "never", "--quiet"]):
        proc = subprocess.run([sys.executable, "-m", "cli", "--data-dir", str(data), *args],
                              capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            raise RuntimeError(f"llamavid {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return data, films
