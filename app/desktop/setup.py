"""The settings dialog, opened by itself on the first run: the chat model and how it runs.

Pick a downloaded (or registered) model, or download one from the catalogue with progress and
Cancel; choose the backend, quantization and device, which start from what fits this computer
(:func:`app.hardware.recommend`: the hardware and the memory free now, for the chosen model's
size) until you change them; the language of the subtitles a film prompt prefers; how hard the
background indexer may work. Everything is saved in ``<data>/settings.json`` (:mod:`app.settings`).
Where the model runs on llama.cpp (no GPU that holds it in fp16) and its q4_K_M conversion is not
made yet, the dialog offers it (:func:`app.model_convert.conversion_offer`): the disk space first,
then progress and Cancel, in a child process of the window (:class:`~app.desktop.download.ModelConvert`).
Looking at the models folder, the hardware, a model's size and its conversion runs off the GUI thread.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app import hardware
from app import status as st
from app.desktop.common import Tasks, describe_error, hbox
from app.desktop.download import ModelConvert, ModelDownload
from app.family_advice import advise
from app.model_convert import Offer, conversion_offer
from app.settings import BACKENDS, Settings, save_settings
from llamavid.hub.catalog import chat_models
from llamavid.hub.installed import InstalledEntry, add_model, list_models
from llamavid.paths import DataDir
from llamavid.runtime.kv_size import KV_TYPE_LABELS
from llamavid.runtime.options import LoadOptions
from llamavid.storage import human_size

__all__ = ["SetupDialog"]

BITS = ((None, "none (full precision)"), (8, "8 bit"), (4, "4 bit"))


class SetupDialog(QDialog):
    """See the module docstring; ``saved`` carries the settings once written."""

    saved = Signal(object)

    def __init__(self, data: DataDir, settings: Settings, download: ModelDownload, parent: QWidget | None = None,
                 convert: ModelConvert | None = None):
        super().__init__(parent)
        self.setWindowTitle(f"{st.TITLE} - settings")
        self.setObjectName("setupDialog")
        self.data, self.settings, self.download = data, settings, download
        self.convert = convert if convert is not None else ModelConvert(data, self)
        self.offer: Offer | None = None  # the conversion the chosen model and settings need
        self.first_run = settings.model is None
        self.tasks = Tasks(1, self)
        self.hw: hardware.Hardware | None = None
        self.models: list[InstalledEntry] = []
        self.recommendation: hardware.Recommendation | None = None
        self.touched = False  # the person changed backend, bits or device themselves
        self._applying = False
        self.resize(760, 680)

        intro = QLabel("Welcome! Pick the model to chat with, or download one. The settings below start from "
                       "what fits this computer." if self.first_run else
                       "The chat model and how it runs. Changes apply to the next question.")
        intro.setWordWrap(True)
        self.hardware_label = QLabel("Looking at this computer…")
        self.hardware_label.setObjectName("hardware")
        self.hardware_label.setWordWrap(True)
        self.family_advice = QLabel()  # which family and size fits (app.family_advice), once the machine is read
        self.family_advice.setObjectName("familyAdvice")
        self.family_advice.setWordWrap(True)
        self.family_advice.hide()
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addWidget(self.hardware_label)
        layout.addWidget(self.family_advice)
        layout.addWidget(self._build_installed(), 2)
        layout.addWidget(self._build_download())
        layout.addWidget(self._build_runs())
        layout.addWidget(self._build_convert())
        self._build_buttons(layout)
        self._show_download_state()
        self._show_convert_state()
        self.refresh()
        self.tasks.run(hardware.detect, self._detected, self._failed)

    def _build_installed(self) -> QGroupBox:
        """The installed chat models (or how to get one), Refresh and Use a folder…."""
        self.installed = QListWidget()
        self.installed.setObjectName("installedModels")
        self.installed.currentItemChanged.connect(self._model_chosen)
        self.instructions = QLabel()
        self.instructions.setObjectName("instructions")
        self.instructions.setTextFormat(Qt.TextFormat.MarkdownText)
        self.instructions.setWordWrap(True)
        self.instructions.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.instructions.hide()
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.clicked.connect(self.refresh)
        self.add_button = QPushButton("Use a folder…")
        self.add_button.setToolTip("Register a checkpoint folder you already have (nothing is copied)")
        self.add_button.clicked.connect(self.add_folder)
        box = QGroupBox("Chat model")
        column = QVBoxLayout(box)
        column.addWidget(self.installed, 1)
        column.addWidget(self.instructions)
        column.addLayout(hbox(self.refresh_button, self.add_button, None))
        return box

    def _build_download(self) -> QGroupBox:
        """A catalogue model to download, with its progress and Cancel."""
        self.catalogue = QComboBox()
        self.catalogue.setObjectName("catalogue")
        for entry in st.CHAT_MODELS:
            size = f", about {human_size(entry.approx_size)}" if entry.approx_size else ""
            self.catalogue.addItem(f"{entry.name} ({entry.purpose}{size})", entry.name)
        self.download_button = QPushButton("Download")
        self.download_button.clicked.connect(self.start_download)
        self.cancel_button = QPushButton("Cancel download")
        self.cancel_button.clicked.connect(self.download.cancel)
        self.download_bar = QProgressBar()
        self.download_bar.setObjectName("downloadProgress")
        self.download_label = QLabel()
        self.download_label.setObjectName("downloadStatus")
        self.download_label.setWordWrap(True)
        self.download.progress.connect(self._download_progress)
        self.download.finished.connect(self._download_finished)
        box = QGroupBox("Download a model (resumable; the shared vision weights come with it)")
        column = QVBoxLayout(box)
        column.addLayout(hbox((self.catalogue, 1), self.download_button, self.cancel_button))
        column.addWidget(self.download_bar)
        column.addWidget(self.download_label)
        return box

    def _build_runs(self) -> QGroupBox:
        """How it runs: backend, quantization, device (with the suggestion), subtitle language, indexing rest."""
        settings = self.settings
        self.backend = QComboBox()
        self.backend.setObjectName("backend")
        for b in BACKENDS:
            self.backend.addItem({"auto": "auto (llama.cpp for a GGUF folder or where no GPU holds the model in "
                                          "fp16, else transformers)"}.get(b, b), b)
        self.bits = QComboBox()
        self.bits.setObjectName("bits")
        for value, text in BITS:
            self.bits.addItem(text, value)
        self.device = QComboBox()
        self.device.setObjectName("device")
        self._fill_devices()
        self.kv_type = QComboBox()
        self.kv_type.setObjectName("kvType")
        for value, text in KV_TYPE_LABELS.items():
            self.kv_type.addItem(text, value)
        self.kv_type.setToolTip("The type of llama.cpp's KV cache, which holds the film while you talk about it: "
                                "most of a film chat's memory and of a prepared film's disk space")
        self.language = QLineEdit(settings.language or "")
        self.language.setPlaceholderText("the system's language")
        self.language.setMaxLength(8)
        self.idle = QDoubleSpinBox()
        self.idle.setRange(0.0, 60.0)
        self.idle.setSingleStep(0.5)
        self.idle.setSuffix(" s")
        self.idle.setValue(settings.index_idle)
        self.idle.setToolTip("Seconds the indexer rests between chunks of frames: a lighter load while you work")
        self.reason = QLabel()
        self.reason.setObjectName("recommendation")
        self.reason.setWordWrap(True)
        box = QGroupBox("How it runs")
        form = QFormLayout(box)
        form.addRow("Backend:", self.backend)
        form.addRow("Quantization:", self.bits)
        form.addRow("Device:", self.device)
        form.addRow("", self.reason)
        form.addRow("Film memory (KV cache):", self.kv_type)
        form.addRow("Subtitle language:", self.language)
        form.addRow("Indexing rest between chunks:", self.idle)
        self._select(self.backend, settings.backend)
        self._select(self.bits, settings.bits)
        self._select(self.device, settings.device)
        self._select(self.kv_type, settings.kv_type)
        for combo in (self.backend, self.bits, self.device):
            combo.activated.connect(self._touched)
        return box

    def _build_convert(self) -> QGroupBox:
        """The llama.cpp conversion the chosen model needs here: what and why with its disk space,
        Convert, Cancel and the progress (hidden while none is needed)."""
        self.convert_label = QLabel()
        self.convert_label.setObjectName("conversionStatus")
        self.convert_label.setTextFormat(Qt.TextFormat.MarkdownText)
        self.convert_label.setWordWrap(True)
        self.convert_button = QPushButton("Convert for llama.cpp")
        self.convert_button.setObjectName("convert")
        self.convert_button.clicked.connect(self.start_convert)
        self.cancel_convert_button = QPushButton("Cancel conversion")
        self.cancel_convert_button.setObjectName("cancelConvert")
        self.cancel_convert_button.clicked.connect(self.convert.cancel)
        self.convert_bar = QProgressBar()
        self.convert_bar.setObjectName("conversionProgress")
        self.convert.progress.connect(self._convert_progress)
        self.convert.finished.connect(self._convert_finished)
        self.convert_box = QGroupBox("llama.cpp conversion (once; Cancel keeps what is done)")
        self.convert_box.setObjectName("conversion")
        column = QVBoxLayout(self.convert_box)
        column.addWidget(self.convert_label)
        column.addLayout(hbox(self.convert_button, self.cancel_convert_button, None))
        column.addWidget(self.convert_bar)
        return self.convert_box

    def _build_buttons(self, layout: QVBoxLayout) -> None:
        """The error line, Close and Save."""
        self.error_label = QLabel()
        self.error_label.setObjectName("setupError")
        self.error_label.setWordWrap(True)
        self.error_label.setStyleSheet("color: #a40000;")
        self.error_label.hide()
        self.save_button = QPushButton("Save")
        self.save_button.setObjectName("save")
        self.save_button.setDefault(True)
        self.save_button.clicked.connect(self.save)
        close = QPushButton("Close")
        close.clicked.connect(self.reject)
        layout.addWidget(self.error_label)
        layout.addLayout(hbox(None, close, self.save_button))

    # -- reading the machine and the models folder (worker thread) -------------------------------
    def refresh(self) -> None:
        data = self.data
        self.tasks.run(lambda: (list_models(data), st.collect_status(data.root)), self._listed, self._failed)

    def _listed(self, result) -> None:
        models, status = result
        current = self.selected_model() or self.settings.model
        self.models = chat_models(models)
        self.installed.blockSignals(True)
        self.installed.clear()
        for m in self.models:
            text = f"{m.name}    {m.kind}    {m.size_human}" + ("" if m.status == "complete" else f"    ({m.status}: "
                                                                                              f"{m.detail})")
            item = QListWidgetItem(text)
            item.setData(Qt.ItemDataRole.UserRole, m.name)
            item.setToolTip(str(m.path))
            if m.status != "complete":
                item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEnabled & ~Qt.ItemFlag.ItemIsSelectable)
            self.installed.addItem(item)
        self.installed.blockSignals(False)
        usable = [m for m in self.models if m.status == "complete"]
        self.instructions.setText(st.instructions_markdown(status))
        self.instructions.setVisible(not usable)
        self.installed.setVisible(bool(self.models))
        pick = current if any(m.name == current for m in usable) else (usable[0].name if usable else None)
        if pick is not None:
            self.select_model(pick)
        self._show_download_state()

    def _detected(self, hw: hardware.Hardware) -> None:
        self.hw = hw
        self.hardware_label.setText(f"This computer: {hw.describe()}")
        self.family_advice.setText(advise(hw).text())
        self.family_advice.show()
        self._fill_devices()
        self._select(self.device, self.settings.device)
        self._recommend()

    def _failed(self, exc: BaseException) -> None:
        self.error_label.setText(describe_error(exc))
        self.error_label.show()

    # -- the model -------------------------------------------------------------------------------
    def selected_model(self) -> str | None:
        item = self.installed.currentItem()
        return item.data(Qt.ItemDataRole.UserRole) if item is not None else None

    def select_model(self, name: str) -> None:
        for i in range(self.installed.count()):
            if self.installed.item(i).data(Qt.ItemDataRole.UserRole) == name:
                self.installed.setCurrentRow(i)
                return

    @Slot(QListWidgetItem, QListWidgetItem)
    def _model_chosen(self, current: QListWidgetItem | None, previous: QListWidgetItem | None) -> None:
        self._recommend()

    def _recommend(self) -> None:
        """Work out what fits the chosen model here, then show it (and apply it, unless changed by hand)."""
        hw, name = self.hw, self.selected_model()
        if hw is None:
            return
        entry = next((m for m in self.models if m.name == name), None)
        path = entry.path if entry is not None else None

        def work() -> tuple[str | None, hardware.Recommendation]:
            size, gguf = hardware.model_size(path)
            return name, hardware.recommend(hw, size, gguf)

        self.tasks.run(work, self._recommended, self._failed)

    def _recommended(self, result) -> None:
        name, rec = result
        if name != self.selected_model():
            return
        self.recommendation = rec
        bits = "no quantization" if rec.bits is None else f"{rec.bits}-bit quantization"
        self.reason.setText(f"Suggested for this computer: {rec.device}, {bits}, backend {rec.backend} — "
                            f"{rec.reason}.")
        if self.first_run and not self.touched:
            self.apply_recommendation()
        self.look_for_conversion()

    def apply_recommendation(self) -> None:
        rec = self.recommendation
        if rec is None:
            return
        self._applying = True
        self._select(self.backend, rec.backend)
        self._select(self.bits, rec.bits)
        self._select(self.device, rec.device)
        self._applying = False

    def _touched(self, *_: object) -> None:
        if not self._applying:
            self.touched = True
            self.look_for_conversion()

    def _fill_devices(self) -> None:
        current = self.device.currentData()
        names = ["auto", "cpu"]
        if self.hw is not None:
            names += ["cuda"] if len(self.hw.gpus) == 1 else [f"cuda:{g.index}" for g in self.hw.gpus]
            names += ["mps"] if self.hw.mps else []
        self.device.blockSignals(True)
        self.device.clear()
        for n in names:
            self.device.addItem(n, n)
        self.device.blockSignals(False)
        if current is not None:
            self._select(self.device, current)

    @staticmethod
    def _select(combo: QComboBox, value) -> None:
        index = combo.findData(value)
        if index < 0 and isinstance(value, str) and value:
            combo.addItem(value, value)
            index = combo.count() - 1
        if index >= 0:
            combo.setCurrentIndex(index)

    def add_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "A checkpoint folder (with config.json)")
        if not folder:
            return
        data, name = self.data, Path(folder).name

        def register() -> str:
            add_model(data, name, folder)
            return name

        def added(name: str) -> None:
            self.settings = replace(self.settings, model=name)
            self.refresh()

        self.tasks.run(register, added, self._failed)

    # -- downloads ---------------------------------------------------------------------------------
    def start_download(self) -> None:
        name = self.catalogue.currentData()
        if name and self.download.start(name):
            self.error_label.hide()
        self._show_download_state()

    @Slot(int, int, str)
    def _download_progress(self, done: int, total: int, label: str) -> None:
        if total > 0:
            self.download_bar.setRange(0, 1000)
            self.download_bar.setValue(int(1000 * min(done, total) / total))
            text = f"{human_size(done)} of {human_size(total)}"
        else:
            self.download_bar.setRange(0, 0)
            text = ""
        self.download_label.setText(f"Downloading {self.download.name}: {text}  {label}".strip())
        self._show_download_state()

    @Slot(str, str, str)
    def _download_finished(self, name: str, outcome: str, message: str) -> None:
        self.download_label.setText(message[0].upper() + message[1:] if message else outcome)
        if outcome == "done":
            self.download_bar.setRange(0, 1000)
            self.download_bar.setValue(1000)
            self.settings = replace(self.settings, model=name)
        self._show_download_state()
        self.refresh()

    def _show_download_state(self) -> None:
        running = self.download.running()
        self.download_button.setEnabled(not running)
        self.catalogue.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        self.download_bar.setVisible(running or self.download_bar.value() > 0)

    # -- the llama.cpp conversion -------------------------------------------------------------------
    def look_for_conversion(self) -> None:
        """Whether the chosen model, loaded as the dialog shows it, needs its conversion (worker thread)."""
        data, name = self.data, self.selected_model()
        options = LoadOptions(backend=self.backend.currentData() or "auto", bits=self.bits.currentData(),
                              device=self.device.currentData() or "auto")
        self.tasks.run(lambda: (name, conversion_offer(data, name, options)), self._offered, self._failed)

    def _offered(self, result: tuple[str | None, Offer | None]) -> None:
        name, offer = result
        if name != self.selected_model():
            return
        self.offer = offer
        if offer is not None and not self.convert.running():
            self.convert_label.setText(offer.describe())
            self.convert_button.setText(offer.button())
        self._show_convert_state()

    def start_convert(self) -> None:
        if self.offer is not None and self.convert.start(self.offer.name):
            self.error_label.hide()
        self._show_convert_state()

    @Slot(int, int, str)
    def _convert_progress(self, done: int, total: int, label: str) -> None:
        if total > 0:
            self.convert_bar.setRange(0, 1000)
            self.convert_bar.setValue(int(1000 * min(done, total) / total))
            text = f"{human_size(done)} of about {human_size(total)}"
        else:
            self.convert_bar.setRange(0, 0)
            text = ""
        self.convert_label.setText(f"Converting {self.convert.name} for llama.cpp: {text}  {label}".strip())
        self._show_convert_state()

    @Slot(str, str, str)
    def _convert_finished(self, name: str, outcome: str, message: str) -> None:
        self.convert_label.setText(message[0].upper() + message[1:] if message else outcome)
        if outcome == "done":
            self.convert_bar.setRange(0, 1000)
            self.convert_bar.setValue(1000)
        self.offer = None if outcome == "done" else self.offer
        self._show_convert_state()
        self.look_for_conversion()

    def _show_convert_state(self) -> None:
        running = self.convert.running()
        self.convert_button.setEnabled(not running and self.offer is not None and self.offer.fits)
        self.cancel_convert_button.setEnabled(running)
        self.convert_button.setVisible(running or self.offer is not None)
        self.cancel_convert_button.setVisible(running or self.offer is not None)
        self.convert_bar.setVisible(running or self.convert_bar.value() > 0)
        self.convert_box.setVisible(running or self.offer is not None or self.convert_bar.value() > 0)

    # -- saving ------------------------------------------------------------------------------------
    def chosen(self) -> Settings:
        """The settings as the dialog shows them."""
        language = self.language.text().strip().lower() or None
        return replace(self.settings, model=self.selected_model() or self.settings.model,
                       backend=self.backend.currentData(), bits=self.bits.currentData(),
                       device=self.device.currentData() or "auto", kv_type=self.kv_type.currentData() or "auto",
                       language=language,
                       index_idle=float(self.idle.value()))

    def save(self) -> None:
        settings = self.chosen()
        if settings.model is None:
            self.error_label.setText("Choose a model first (or download one): questions need one.")
            self.error_label.show()
            return
        try:
            save_settings(self.data, settings)
        except OSError as exc:
            self._failed(exc)
            return
        self.settings = settings
        self.saved.emit(settings)
        self.accept()

    def done(self, result: int) -> None:  # noqa: D102 - QDialog's
        self.tasks.close(10_000)
        super().done(result)
