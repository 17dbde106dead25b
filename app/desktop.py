"""The PySide6 desktop window of the app shell.

This module imports Qt at the top, so only import it once a window is really
wanted (``llamavid.cli.app`` does so inside ``run``). What the window shows comes from
:mod:`app.status`, shared with the web UI.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, QUrl
from PySide6.QtGui import QDesktopServices, QFont, QIcon
from PySide6.QtWidgets import (
    QApplication,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app import status as st
from assets import asset_path
from llamavid.paths import DataDir

__all__ = ["MainWindow", "run_desktop"]


def _icon() -> QIcon:
    """The window icon; a broken install only loses the icon, not the window."""
    try:
        return QIcon(str(asset_path("icons", "llamavid.svg")))
    except FileNotFoundError:
        return QIcon()


class MainWindow(QMainWindow):
    """Project name, data folder, installed models, or how to get models when none are installed."""

    def __init__(self, data_dir: Path) -> None:
        super().__init__()
        self.data_dir = Path(data_dir)
        self.setWindowTitle(f"{st.TITLE} - movie assistant")
        self.setWindowIcon(_icon())
        self.resize(820, 620)

        title = QLabel(st.TITLE)
        font = QFont(title.font())
        font.setPointSize(font.pointSize() * 2)
        font.setBold(True)
        title.setFont(font)

        self.summary = QLabel()
        self.summary.setObjectName("summary")
        self.summary.setWordWrap(True)
        self.summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        self.models_heading = QLabel()
        self.models_list = QListWidget()
        self.models_list.setObjectName("models")

        # Markdown so the instructions read exactly as in the web UI.
        self.instructions = QLabel()
        self.instructions.setObjectName("instructions")
        self.instructions.setTextFormat(Qt.TextFormat.MarkdownText)
        self.instructions.setWordWrap(True)
        self.instructions.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.instructions.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)

        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.clicked.connect(self.refresh)
        open_button = QPushButton("Open data folder")
        open_button.clicked.connect(self.open_data_folder)

        buttons = QHBoxLayout()
        buttons.addWidget(self.refresh_button)
        buttons.addWidget(open_button)
        buttons.addStretch(1)

        layout = QVBoxLayout()
        layout.addWidget(title)
        layout.addWidget(self.summary)
        layout.addWidget(self.models_heading)
        layout.addWidget(self.models_list, 1)
        layout.addWidget(self.instructions, 1)
        layout.addLayout(buttons)
        central = QWidget()
        central.setLayout(layout)
        self.setCentralWidget(central)
        self.refresh()

    def refresh(self) -> None:
        """Re-read the data folder: a model copied in while the app runs shows up."""
        status = st.collect_status(self.data_dir)
        self.summary.setText(f"{st.TAGLINE} Version {status.version}.\n{st.NOT_YET}\n\nData folder: {status.data_dir}")
        self.models_list.clear()
        for m in status.models:
            item = QListWidgetItem(f"{m.name}    {m.size_human}    {m.path}")
            item.setToolTip(str(m.path))
            self.models_list.addItem(item)
        self.models_heading.setText(f"Installed models ({len(status.models)})")
        self.models_heading.setVisible(status.has_models)
        self.models_list.setVisible(status.has_models)
        self.instructions.setText(st.instructions_markdown(status))
        self.instructions.setVisible(not status.has_models)

    def open_data_folder(self) -> None:
        """Open the data folder in the file manager (created first, so there is something to open)."""
        root = DataDir(self.data_dir).create().root
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(root)))


def run_desktop(data_dir: Path) -> int:
    """Show the window and run Qt's event loop until it is closed; returns Qt's exit code."""
    app = QApplication.instance() or QApplication([st.TITLE])
    app.setApplicationName(st.TITLE)
    window = MainWindow(data_dir)
    window.show()
    return int(app.exec())
