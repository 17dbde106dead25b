"""How `llamavid app` decides between the desktop window and the web UI."""

from __future__ import annotations

import pytest

from cli.app import display_problem, qt_problem


@pytest.mark.parametrize(
    ("env", "platform", "expect"),
    [
        ({}, "linux", "no display found"),
        ({"DISPLAY": ":0"}, "linux", None),
        ({"WAYLAND_DISPLAY": "wayland-0"}, "linux", None),
        ({"DISPLAY": ":0", "QT_QPA_PLATFORM": "offscreen"}, "linux", "QT_QPA_PLATFORM=offscreen"),
        ({}, "darwin", None),
        ({}, "win32", None),
    ],
)
def test_display_problem(env: dict[str, str], platform: str, expect: str | None) -> None:
    problem = display_problem(env, platform)
    if expect is None:
        assert problem is None
    else:
        assert problem is not None and expect in problem


def test_qt_starts_offscreen(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    assert qt_problem() is None


def test_qt_failure_is_reported_not_fatal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QT_QPA_PLATFORM", "no-such-platform-plugin")
    problem = qt_problem()
    assert problem is not None and "Qt" in problem
