"""Shared pieces of the desktop app tests (tests/app/test_desktop_*.py): real films written with PyAV,
the tiny checkpoint (the session fixture ``tiny_checkpoint``) registered as ``TINY``, the window opened
for qtbot, and a look at /proc for processes left behind."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from app.desktop import MainWindow
from app.settings import Settings, save_settings
from llamavid.hub.installed import add_model
from llamavid.media.synthetic import film, srt_text, write_video

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts"
TINY = "llama-vid-tiny-224-long-video"
EN = [(5.0, 8.0, "Hello captain, the wind is rising."),
      (40.0, 44.0, "The treasure is buried under the old lighthouse."),
      (52.0, 55.0, "We sail at night.")]


def make_films(folder: Path, seconds: float = 60) -> dict[str, Path]:
    """Harbor.mkv with an English subtitle file beside it, and Forest.mp4 with an embedded track."""
    folder.mkdir(parents=True, exist_ok=True)
    harbor = write_video(folder / "Harbor.mkv", film(320, 180, 5, seed=1), fps=5, seconds=seconds)
    (folder / "Harbor.en.srt").write_text(srt_text(EN), encoding="utf-8")
    forest = write_video(folder / "Forest.mp4", film(320, 180, 5, seed=2), fps=5, seconds=seconds * 2 / 3,
                         subtitles=[(3.0, 6.0, "Listen to the birds.")], sub_language="eng")
    return {"Harbor.mkv": harbor, "Forest.mp4": forest}


def install_tiny(data: Path, checkpoint: Path) -> None:
    """Register the tiny checkpoint as a model of the data folder (its eva_vit_g.pth serves the indexer)."""
    add_model(data, TINY, checkpoint)


def save_test_settings(data: Path, **values) -> Settings:
    settings = Settings(**{"model": TINY, "device": "cpu", "language": "en", "temperature": 0.0,
                           "max_new_tokens": 8, **values})
    save_settings(data, settings)
    return settings


def open_window(qtbot, data: Path, **kwargs) -> MainWindow:
    window = MainWindow(data, **kwargs)
    qtbot.addWidget(window)
    window.show()
    qtbot.waitExposed(window)
    return window


def wait_for_films(qtbot, window: MainWindow, names: set[str], timeout: int = 60_000) -> None:
    qtbot.waitUntil(lambda: window.snapshot is not None and {Path(m.rel_path).name for m in window.snapshot.movies}
                    >= names, timeout=timeout)


def click(qtbot, widget) -> None:
    assert widget.isEnabled() and widget.isVisible(), widget
    qtbot.mouseClick(widget, Qt.MouseButton.LeftButton)


def click_film(qtbot, window: MainWindow, name: str) -> None:
    """Click the film's row in the library list, as a person would."""
    films = window.library.films
    for i in range(films.count()):
        item = films.item(i)
        if Path(window.library.rows[item.data(Qt.ItemDataRole.UserRole)].movie.rel_path).name == name:
            films.scrollToItem(item)
            qtbot.mouseClick(films.viewport(), Qt.MouseButton.LeftButton, pos=films.visualItemRect(item).center())
            qtbot.waitUntil(lambda: window.movie is not None and Path(window.movie.rel_path).name == name)
            return
    pytest.fail(f"{name} is not in the library list")


def processes_using(path: Path) -> list[tuple[int, str]]:
    """(pid, command line) of every process but this one whose command line names ``path``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().split(") ", 1)[1][:1]
        except OSError:
            continue
        if state == "Z":
            continue
        line = " ".join(a.decode(errors="replace") for a in argv if a)
        if str(path) in line:
            found.append((int(entry.name), line))
    return found


def alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().split(") ", 1)[1][:1]
    except OSError:
        return False
    return state != "Z"
