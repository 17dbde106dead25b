"""The desktop window, offscreen (QT_QPA_PLATFORM=offscreen is set by tests/conftest.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("PySide6.QtWidgets", reason="PySide6 is part of the install; doctor says why it fails")

from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtGui import QImage  # noqa: E402

from app import status as st  # noqa: E402
from app.desktop import MainWindow  # noqa: E402


def _distinct_colours(image: QImage, step: int = 3) -> int:
    colours = {image.pixel(x, y) for x in range(0, image.width(), step) for y in range(0, image.height(), step)}
    return len(colours)


def _open(qtbot, data_dir: Path) -> MainWindow:
    window = MainWindow(data_dir)
    qtbot.addWidget(window)
    window.show()
    qtbot.waitExposed(window)
    return window


def test_without_models_the_window_explains_how_to_get_them(qtbot, data_dir: Path, tmp_path: Path) -> None:
    window = _open(qtbot, data_dir)
    assert st.TITLE in window.windowTitle()
    assert str(data_dir) in window.summary.text()
    assert window.instructions.isVisible()
    text = window.instructions.text()
    assert st.GET_MODELS_HEADING in text
    assert "YanweiLi/llama-vid-7b-full-224-video-fps-1" in text
    assert str(data_dir / "models") in text
    assert not window.models_list.isVisible()

    shot = window.grab().toImage()
    shot.save(str(tmp_path / "desktop-no-models.png"))
    assert shot.width() > 300 and shot.height() > 200
    assert _distinct_colours(shot) > 10, "the screenshot is blank"
    # The instructions label itself must have rendered text, not just a background.
    assert _distinct_colours(window.instructions.grab().toImage(), step=1) > 5


def test_installed_model_is_listed(qtbot, data_dir: Path, make_model) -> None:
    make_model(data_dir, "llama-vid-7b-full-224-video-fps-1", size=2_000_000)
    window = _open(qtbot, data_dir)
    assert window.models_list.isVisible()
    assert not window.instructions.isVisible()
    assert window.models_list.count() == 1
    item = window.models_list.item(0).text()
    assert "llama-vid-7b-full-224-video-fps-1" in item and "2.0 MB" in item
    assert "(1)" in window.models_heading.text()
    assert _distinct_colours(window.grab().toImage()) > 10


def test_refresh_picks_up_a_model_added_while_open(qtbot, data_dir: Path, make_model) -> None:
    window = _open(qtbot, data_dir)
    assert window.models_list.count() == 0
    make_model(data_dir, "new-model")
    qtbot.mouseClick(window.refresh_button, Qt.MouseButton.LeftButton)
    assert window.models_list.count() == 1
    assert "new-model" in window.models_list.item(0).text()
    assert window.instructions.isHidden()


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
    """End to end: with a display, `llamavid app` shows a window (seen on the X screen), not the web UI."""
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
        app.terminate()
        app.wait(timeout=20)
    output = log.read_text(errors="replace")
    assert colours > 10, f"nothing drawn on the X screen (see {shot}); app output: {output}"
    assert "web UI" not in output, output
