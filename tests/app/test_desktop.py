"""The desktop window, offscreen (QT_QPA_PLATFORM=offscreen is set by tests/conftest.py)."""

from __future__ import annotations

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
