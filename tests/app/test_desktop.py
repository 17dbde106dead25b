"""The desktop window, offscreen (QT_QPA_PLATFORM=offscreen is set by tests/conftest.py) and under a
private X server: ``llamavid app`` end to end, and the chat and library tests of
test_desktop_chat.py and test_desktop_library.py run again there."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("PySide6.QtWidgets", reason="PySide6 is part of the install; doctor says why it fails")

from PySide6.QtGui import QImage  # noqa: E402

from app import status as st  # noqa: E402
from tests.support.desktop import ROOT, open_window, processes_using  # noqa: E402


def _distinct_colours(image: QImage, step: int = 3) -> int:
    colours = {image.pixel(x, y) for x in range(0, image.width(), step) for y in range(0, image.height(), step)}
    return len(colours)


def test_a_new_data_folder_opens_the_window_and_the_first_run_settings(qtbot, data_dir: Path,
                                                                      tmp_path: Path) -> None:
    window = open_window(qtbot, data_dir, watch_folders=False)
    assert st.TITLE in window.windowTitle()
    qtbot.waitUntil(lambda: window.snapshot is not None)
    assert window.library.empty.isVisible() and window.library.films.count() == 0
    assert window.library.status.text() == "No films in the library yet"
    assert window.chat.notice.text() == "Choose a film in the library to chat about it."
    assert not window.chat.ask_button.isEnabled()
    assert window.player.view.placeholder == "Choose a film in the library"
    assert str(data_dir) in window.statusBar().currentMessage()
    qtbot.waitUntil(lambda: window.setup_dialog is not None and window.setup_dialog.isVisible())
    shot = window.grab().toImage()
    shot.save(str(tmp_path / "desktop-first-run.png"))
    assert shot.width() > 1000 and shot.height() > 600
    assert _distinct_colours(shot) > 10, "the screenshot is blank"


_SCREEN_PROBE = """
from PySide6.QtWidgets import QApplication
app = QApplication([])
img = app.primaryScreen().grabWindow(0).toImage()
img.save(OUT)
print(len({img.pixel(x, y) for x in range(0, img.width(), 4) for y in range(0, img.height(), 4)}))
"""


@pytest.fixture
def xvfb_display() -> Iterator[str]:
    """A private X server (Debian's xvfb, installed by ./run.sh test); yields its DISPLAY."""
    if not shutil.which("Xvfb"):
        pytest.skip("Xvfb is absent: install Debian's xvfb (./run.sh test does it)")
    read_fd, write_fd = os.pipe()
    server = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write_fd), "-screen", "0", "1024x768x24", "-nolisten", "tcp"],
        pass_fds=(write_fd,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write_fd)
    with os.fdopen(read_fd) as fh:
        number = fh.readline().strip()
    try:
        assert number.isdigit(), "Xvfb did not report its display number"
        yield f":{number}"
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_llamavid_app_opens_the_desktop_window(
    xvfb_display: str, llamavid_cmd: list[str], data_dir: Path, tmp_path: Path
) -> None:
    """End to end: with a display, `llamavid app` shows a window (seen on the X screen), not the web UI,
    and SIGTERM closes it like its close button: it exits and leaves no process behind."""
    env = {k: v for k, v in os.environ.items() if k not in ("QT_QPA_PLATFORM", "WAYLAND_DISPLAY")}
    env["DISPLAY"] = xvfb_display
    log = tmp_path / "app.log"
    with log.open("wb") as fh:
        app = subprocess.Popen(
            [*llamavid_cmd, "--data-dir", str(data_dir), "app", "--port", "0"],
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    shot = tmp_path / "xvfb-screen.png"
    probe_env = {**env, "OUT": str(shot)}
    colours = 0
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and colours <= 10:
            assert app.poll() is None, f"llamavid app exited: {log.read_text(errors='replace')}"
            time.sleep(1)
            probe = subprocess.run(
                [sys.executable, "-c", f"OUT = {str(shot)!r}\n{_SCREEN_PROBE}"],
                env=probe_env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert probe.returncode == 0, probe.stderr
            colours = int(probe.stdout.strip().splitlines()[-1])
    finally:
        app.send_signal(signal.SIGTERM)
        try:
            code = app.wait(timeout=60)
        except subprocess.TimeoutExpired:
            app.kill()
            code = app.wait()
    output = log.read_text(errors="replace")
    assert colours > 10, f"nothing drawn on the X screen (see {shot}); app output: {output}"
    assert "web UI" not in output, output
    assert code == 0, output
    assert processes_using(data_dir) == []


@pytest.mark.slow
def test_the_chat_and_library_tests_pass_under_xvfb(xvfb_display: str, tmp_path: Path) -> None:
    """The same pytest-qt tests as offscreen, on a real X server through Qt's xcb platform."""
    tests = ["tests/app/test_desktop_chat.py::test_clicking_a_moment_seeks_the_player_and_shows_that_subtitle",
             "tests/app/test_desktop_library.py::test_adding_a_folder_indexes_its_films_in_the_background_with_progress"]
    env = {k: v for k, v in os.environ.items() if k not in ("WAYLAND_DISPLAY",)}
    env.update(DISPLAY=xvfb_display, QT_QPA_PLATFORM="xcb")
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--basetemp={tmp_path / 'x'}", *tests]
    run = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    assert "2 passed" in run.stdout, run.stdout[-3000:]
