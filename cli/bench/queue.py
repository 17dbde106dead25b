"""``llamavid bench queue``: how long a person waits for a first answer about the film they just
opened, in a library where many films wait to be indexed, before and after the order of work of
issue 27 (:mod:`indexer.estimate`, ``LibraryStore.bring_forward``, dialogue first).

``--films`` films of ``--seconds`` each (H.264 with an English subtitle file, made with PyAV) are
added to a fresh library, and the indexer starts (in this process, one thread, as ``index run``
works). The person opens the *last* film found at once and asks about it as soon as the library
lets them:

* **before**: the queue in the order films were found, every film indexed whole in turn, and a
  film askable once its frames are read;
* **after**: the opened film goes first (the film under way yields at its next chunk), every other
  film's dialogue before any film's frames.

One JSON line per mode: seconds until the film could be asked about, until the first word of the
answer, what the answer went by (its frames, or its dialogue alone), and how many other films had
their frames read before it could be asked about. The tiny model of the tests
(``--model`` for an installed one) answers; EVA is its vision tower, so the figures say how the
order of work changes the wait, not how fast a real EVA is (``llamavid bench skip`` and
``llamavid bench film`` measure that).

    llamavid bench queue                      # 12 one-minute films
    llamavid bench queue --films 30 --seconds 120
"""
from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

from app.chat_service import ChatService
from indexer import controls, library
from indexer.pipeline import IndexOptions
from indexer.runner import run_queue
from indexer.store import LibraryStore
from llamavid.media.synthetic import X264, clock, srt_text, write_video
from llamavid.model.tiny import write_tiny_checkpoint
from llamavid.paths import DataDir
from llamavid.runtime.generate import SamplingOptions
from llamavid.runtime.options import LoadOptions

TINY = "llama-vid-tiny-224-long-video"
QUESTION = "What does the captain say?"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--films", type=int, default=12, help="films waiting in the library (default 12)")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each film (default 60)")
    parser.add_argument("--model", default=None, help="an installed chat model (default: the tests' tiny one)")
    parser.add_argument("--work", type=Path, default=None, help="folder for the films and data (default: temporary)")


def run(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="llamavid-bench-queue-") as scratch:
        work = args.work or Path(scratch)
        films = _films(work / "films", args.films, args.seconds)
        for mode in ("before", "after"):
            print(json.dumps(_measure(work / mode, films, mode, args.model)), flush=True)
    return 0


def _films(folder: Path, count: int, seconds: float) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"Film{i:03d}.mp4"
        if not path.exists():
            write_video(path, clock(96, 64, 5), fps=5, seconds=seconds, x264=X264(preset="ultrafast", keyint=10))
            path.with_suffix(".en.srt").write_text(srt_text([(1.0, 3.0, f"The captain of film {i} says hello.")]))
        paths.append(path)
    return paths


def _measure(root: Path, films: list[Path], mode: str, model: str | None) -> dict:
    data = DataDir(root / "data").create()
    name = model or TINY
    if model is None:
        write_tiny_checkpoint(data.models / TINY)
    eva = data.models / name / "eva_vit_g.pth"
    with LibraryStore.open(data.database) as store:
        controls.add_folders(store, [films[0].parent])
    with LibraryStore.open(data.database) as store:
        target = library.find_movie(store, films[-1].name).id
    options = IndexOptions(vision=str(eva) if eva.is_file() else None, speech="never", dialogue_first=mode == "after")
    started = time.monotonic()
    if mode == "after":
        with LibraryStore.open(data.database) as store:
            controls.open_film(store, target)  # the person opens it
    worker = threading.Thread(target=run_queue, args=(data, options), daemon=True)
    worker.start()
    try:
        ready = _wait_askable(data, target, frames_needed=mode == "before")
        askable_s = time.monotonic() - started
        service = ChatService(data.root, name, language="en", load=LoadOptions(device="cpu", dtype="fp32"))
        try:
            first_word, notes = _first_word(service, target)
        finally:
            service.close()
    finally:
        with LibraryStore.open(data.database) as store:
            store.pause_queue(True)  # the indexer stops after its chunk: the next mode has the machine
        worker.join()
    with LibraryStore.open(data.database) as store:
        ahead = _finished_before(store, target)
    return {"bench": "queue", "mode": mode, "films": len(films), "film_seconds": ready.duration,
            "indexed_before_it": ahead,
            "askable_s": round(askable_s, 2), "first_word_s": round(first_word - started, 2),
            "went_by": "dialogue" if any("dialogue alone" in n for n in notes) else "frames"}


def _wait_askable(data: DataDir, movie_id: int, frames_needed: bool) -> library.Movie:
    while True:
        with LibraryStore.open(data.database) as store:
            movie = library.get_movie(store, movie_id)
        if movie.features_complete or (not frames_needed and library.askable(movie)):
            return movie
        time.sleep(0.2)


def _first_word(service: ChatService, movie_id: int) -> tuple[float, list[str]]:
    first, notes = None, []
    for event in service.ask_film(movie_id, QUESTION, options=SamplingOptions(temperature=0, max_new_tokens=8)):
        if event.type == "text" and first is None:
            first = time.monotonic()
        if event.type == "done":
            notes = list(event.notes)
        if event.type == "error":
            raise RuntimeError(event.text)
    return (first or time.monotonic()), notes


def _finished_before(store: LibraryStore, movie_id: int) -> int:
    """Other films whose indexing (frames included) ended before this film's did."""
    return store.db.execute(
        "SELECT COUNT(*) FROM jobs WHERE state = 'done' AND movie_id != ? AND finished_at <"
        " (SELECT finished_at FROM jobs WHERE movie_id = ?)", [movie_id, movie_id]).fetchone()[0]
