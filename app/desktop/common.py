"""Pieces every part of the desktop window uses: work off the GUI thread, the message bar, times.

:class:`Tasks` runs a function on a worker thread of its own pool and hands the result (or the
exception) back on the GUI thread, through a signal of a QObject that lives there; nothing slow
(a database query, a scan, a decode, a model call) runs on the GUI thread.
"""
from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QPoint, QRect, QRunnable, QSize, Qt, QThreadPool, Signal, Slot
from PySide6.QtGui import QFont
from PySide6.QtWidgets import QHBoxLayout, QLabel, QLayout, QLayoutItem, QPushButton, QWidget

from llamavid.errors import UserError

log = logging.getLogger(__name__)

__all__ = ["FlowLayout", "MessageBar", "Tasks", "describe_error", "hbox", "heading"]

def hbox(*parts: QWidget | QLayout | tuple[QWidget, int] | None) -> QHBoxLayout:
    """A row, left to right: widgets and layouts; ``(widget, n)`` a widget that takes n shares of
    the room left; ``None`` a stretch (``hbox(ok, cancel, None)``: two buttons on the left)."""
    row = QHBoxLayout()
    for part in parts:
        if part is None:
            row.addStretch(1)
        elif isinstance(part, tuple):
            row.addWidget(*part)
        elif isinstance(part, QLayout):
            row.addLayout(part)
        else:
            row.addWidget(part)
    return row


def heading(text: str = "", scale: float = 1.2) -> QLabel:
    """A bold label ``scale`` times the size of the text under it: the title of a pane or window."""
    label = QLabel(text)
    font = QFont(label.font())
    font.setBold(True)
    font.setPointSizeF(font.pointSizeF() * scale)
    label.setFont(font)
    return label


def describe_error(exc: BaseException) -> str:
    """A sentence for a person: a UserError's own message, else the exception's kind and text."""
    if isinstance(exc, UserError):
        return str(exc)
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    text = str(exc).strip()
    return f"{exc.__class__.__name__}: {text}" if text else exc.__class__.__name__


class _Delivery(QObject):
    """Lives on the GUI thread; its signal, emitted by a worker, runs the callbacks there."""

    delivered = Signal(int, object, object)  # call id, result, exception

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.callbacks: dict[int, tuple[Callable[[Any], None] | None, Callable[[BaseException], None] | None]] = {}
        self.delivered.connect(self._deliver, Qt.ConnectionType.QueuedConnection)

    @Slot(int, object, object)
    def _deliver(self, call_id: int, result: Any, error: BaseException | None) -> None:
        done, failed = self.callbacks.pop(call_id, (None, None))
        if error is not None:
            if failed is not None:
                failed(error)
            else:
                log.error("background work failed: %s", describe_error(error), exc_info=error)
        elif done is not None:
            done(result)


class _Call(QRunnable):
    def __init__(self, call_id: int, fn: Callable[[], Any], delivery: _Delivery) -> None:
        super().__init__()
        self.call_id, self.fn, self.delivery = call_id, fn, delivery
        self.setAutoDelete(True)

    def run(self) -> None:
        try:
            result = self.fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the GUI thread
            self.delivery.delivered.emit(self.call_id, None, exc)
        else:
            self.delivery.delivered.emit(self.call_id, result, None)


class Tasks(QObject):
    """A pool of worker threads; ``run(fn, done, failed)`` calls ``fn()`` there and ``done(result)``
    or ``failed(exception)`` back on the GUI thread. With one thread, calls run in order."""

    _ids = itertools.count(1)

    def __init__(self, threads: int = 1, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.pool = QThreadPool(self)
        self.pool.setMaxThreadCount(threads)
        self.delivery = _Delivery(self)
        self.closed = False

    def run(self, fn: Callable[[], Any], done: Callable[[Any], None] | None = None,
            failed: Callable[[BaseException], None] | None = None) -> bool:
        if self.closed:
            return False
        call_id = next(self._ids)
        self.delivery.callbacks[call_id] = (done, failed)
        self.pool.start(_Call(call_id, fn, self.delivery))
        return True

    @property
    def pending(self) -> int:
        """Calls whose results have not come back yet."""
        return len(self.delivery.callbacks)

    def close(self, timeout_ms: int = 30_000) -> bool:
        """Take no more work and wait for what runs; True when everything finished."""
        self.closed = True
        self.pool.clear()
        return self.pool.waitForDone(timeout_ms)


class MessageBar(QWidget):
    """A dismissible line at the top of the window: what went wrong, or what just happened."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("messageBar")
        self.label = QLabel()
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        close = QPushButton("Dismiss")
        close.setFlat(True)
        close.clicked.connect(self.hide)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(8, 4, 8, 4)
        layout.addWidget(self.label, 1)
        layout.addWidget(close)
        self.kind = ""
        self.hide()

    def show_message(self, text: str, kind: str = "error") -> None:
        """``kind``: error (red) or info (blue)."""
        self.kind = kind
        colour = {"error": "#f8d7da", "info": "#d9ecff"}.get(kind, "#eeeeee")
        self.setStyleSheet(f"#messageBar {{ background: {colour}; border-radius: 4px; }}")
        self.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)
        self.label.setText(text)
        self.show()

    def text(self) -> str:
        return self.label.text() if self.isVisible() else ""


class FlowLayout(QLayout):
    """Widgets left to right, wrapping onto the next line when the width runs out."""

    def __init__(self, parent: QWidget | None = None, spacing: int = 6) -> None:
        super().__init__(parent)
        self._items: list[QLayoutItem] = []
        self._spacing = spacing
        self.setContentsMargins(0, 0, 0, 0)

    def addItem(self, item: QLayoutItem) -> None:  # noqa: N802 - Qt's name
        self._items.append(item)

    def count(self) -> int:
        return len(self._items)

    def itemAt(self, index: int) -> QLayoutItem | None:  # noqa: N802 - Qt's name
        return self._items[index] if 0 <= index < len(self._items) else None

    def takeAt(self, index: int) -> QLayoutItem | None:  # noqa: N802 - Qt's name
        return self._items.pop(index) if 0 <= index < len(self._items) else None

    def expandingDirections(self) -> Qt.Orientation:  # noqa: N802 - Qt's name
        return Qt.Orientation(0)

    def hasHeightForWidth(self) -> bool:  # noqa: N802 - Qt's name
        return True

    def heightForWidth(self, width: int) -> int:  # noqa: N802 - Qt's name
        return self._place(QRect(0, 0, width, 0), move=False)

    def setGeometry(self, rect: QRect) -> None:  # noqa: N802 - Qt's name
        super().setGeometry(rect)
        self._place(rect, move=True)

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        return self.minimumSize()

    def minimumSize(self) -> QSize:  # noqa: N802 - Qt's name
        size = QSize()
        for item in self._items:
            size = size.expandedTo(item.minimumSize())
        return size

    def _place(self, rect: QRect, move: bool) -> int:
        x, y, line = rect.x(), rect.y(), 0
        for item in self._items:
            hint = item.sizeHint()
            if x + hint.width() > rect.right() + 1 and line > 0:
                x, y, line = rect.x(), y + line + self._spacing, 0
            if move:
                item.setGeometry(QRect(QPoint(x, y), hint))
            x += hint.width() + self._spacing
            line = max(line, hint.height())
        return y + line - rect.y()
