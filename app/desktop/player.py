"""The film player: QMediaPlayer with play/pause, a seek bar, the time, and the library's subtitles.

Frames arrive through a ``QVideoSink`` and are painted by :class:`VideoView` itself (no native
video surface), so the picture shows the same offscreen, under Xvfb and on a desktop, and lands in
a window screenshot. The subtitles are the cues the indexer stored for the chosen track (the
track a new conversation's prompt carries too), drawn over the picture at the player's position.
"""
from __future__ import annotations

import bisect
from pathlib import Path

from PySide6.QtCore import QRect, QSize, Qt, QUrl, Signal, Slot
from PySide6.QtGui import QColor, QFont, QImage, QPainter, QPen
from PySide6.QtMultimedia import QAudioOutput, QMediaPlayer, QVideoFrame, QVideoSink
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QSlider,
    QStyle,
    QVBoxLayout,
    QWidget,
)

from app.desktop.common import heading
from app.film_words import clock
from indexer.library import Movie
from llamavid.prompt.subtitles import Cue

__all__ = ["PlayerPane", "VideoView", "track_label"]


def track_label(track: dict) -> str:
    """"en, sidecar (forced)" for a subtitle track of the library."""
    flags = [f for f, on in (("forced", track.get("forced")), ("SDH", track.get("sdh"))) if on]
    text = f"{track.get('language') or 'unknown language'}, {track.get('source')}"
    return text + (f" ({', '.join(flags)})" if flags else "")


class VideoView(QWidget):
    """The latest frame, scaled to fit, with the current subtitle drawn over its lower part."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMinimumSize(320, 180)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.image = QImage()
        self.subtitle = ""
        self.placeholder = "Choose a film in the library"
        self.frames = 0  # frames shown since the film was loaded

    def sizeHint(self) -> QSize:
        return QSize(640, 360)

    @Slot(QVideoFrame)
    def show_frame(self, frame: QVideoFrame) -> None:
        if not frame.isValid():
            return
        image = frame.toImage()
        if image.isNull():
            return
        self.image = image
        self.frames += 1
        self.update()

    def clear(self, placeholder: str = "") -> None:
        self.image, self.frames, self.subtitle = QImage(), 0, ""
        self.placeholder = placeholder
        self.update()

    def set_subtitle(self, text: str) -> None:
        if text != self.subtitle:
            self.subtitle = text
            self.update()

    def picture_rect(self) -> QRect:
        if self.image.isNull():
            return self.rect()
        size = self.image.size().scaled(self.size(), Qt.AspectRatioMode.KeepAspectRatio)
        return QRect((self.width() - size.width()) // 2, (self.height() - size.height()) // 2,
                     size.width(), size.height())

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt's name
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor("black"))
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        if self.image.isNull():
            painter.setPen(QColor("#bbbbbb"))
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, self.placeholder)
        else:
            painter.drawImage(self.picture_rect(), self.image)
        if self.subtitle:
            self._draw_subtitle(painter)
        painter.end()

    def _draw_subtitle(self, painter: QPainter) -> None:
        area = self.picture_rect()
        font = QFont(self.font())
        font.setPixelSize(max(14, min(32, area.height() // 14)))
        font.setBold(True)
        painter.setFont(font)
        box = area.adjusted(12, 0, -12, -max(8, area.height() // 20))
        flags = int(Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignBottom | Qt.TextFlag.TextWordWrap)
        bounds = painter.boundingRect(box, flags, self.subtitle)
        painter.fillRect(bounds.adjusted(-8, -4, 8, 4), QColor(0, 0, 0, 160))
        painter.setPen(QPen(QColor("white")))
        painter.drawText(box, flags, self.subtitle)


class PlayerPane(QWidget):
    """One film at a time: picture, controls, subtitle track."""

    track_changed = Signal(object)  # the chosen subtitle track id (None: no subtitles)
    media_error = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.movie: Movie | None = None
        self.cues: list[Cue] = []
        self._starts: list[float] = []
        self.player = QMediaPlayer(self)
        self.audio = QAudioOutput(self)
        self.player.setAudioOutput(self.audio)
        self.sink = QVideoSink(self)
        self.player.setVideoSink(self.sink)
        self.view = VideoView()
        self.sink.videoFrameChanged.connect(self.view.show_frame)

        self.title = heading("No film open")
        self.title.setObjectName("playerTitle")
        self.play_button = QPushButton("Play")
        self.play_button.setIcon(self.style().standardIcon(QStyle.StandardPixmap.SP_MediaPlay))
        self.play_button.clicked.connect(self.toggle)
        self.seek_bar = QSlider(Qt.Orientation.Horizontal)
        self.seek_bar.setObjectName("seekBar")
        self.seek_bar.setRange(0, 0)
        self.seek_bar.sliderMoved.connect(self._slider_moved)
        self.seek_bar.sliderReleased.connect(lambda: self.player.setPosition(self.seek_bar.value()))
        self.seek_bar.actionTriggered.connect(self._slider_action)
        self.time_label = QLabel(f"{clock(0)} / {clock(None)}")
        self.tracks = QComboBox()
        self.tracks.setToolTip("Subtitles shown here, and given to a new conversation about the film")
        self.tracks.currentIndexChanged.connect(self._track_chosen)

        controls = QHBoxLayout()
        controls.addWidget(self.play_button)
        controls.addWidget(self.seek_bar, 1)
        controls.addWidget(self.time_label)
        subtitles = QHBoxLayout()
        subtitles.addWidget(QLabel("Subtitles:"))
        subtitles.addWidget(self.tracks, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.title)
        layout.addWidget(self.view, 1)
        layout.addLayout(controls)
        layout.addLayout(subtitles)

        self.player.positionChanged.connect(self._position_changed)
        self.player.durationChanged.connect(self._duration_changed)
        self.player.playbackStateChanged.connect(self._state_changed)
        self.player.mediaStatusChanged.connect(self._status_changed)
        self.player.errorOccurred.connect(self._error)
        self._loading_preview = False
        self._pending_seek: float | None = None  # a seek asked for while the film opens
        self._set_enabled(False)

    # -- the film -----------------------------------------------------------------------------------
    def load(self, movie: Movie, track_id: int | None) -> None:
        """Open a film (paused at its start) and list its subtitle tracks, ``track_id`` chosen."""
        same = self.movie is not None and self.movie.path == movie.path
        self.movie = movie
        self.title.setText(Path(movie.rel_path).name)
        self.set_tracks(movie, track_id)
        if same:
            return
        self.player.stop()
        self.cues, self._starts = [], []
        self.view.clear("Opening the film…")
        self._loading_preview, self._pending_seek = True, None
        self.player.setSource(QUrl.fromLocalFile(movie.path))
        self._set_enabled(True)

    def set_tracks(self, movie: Movie, track_id: int | None) -> None:
        self.tracks.blockSignals(True)
        self.tracks.clear()
        self.tracks.addItem("Off", None)
        for track in movie.subtitle_tracks:
            if track.get("status") == "ok" and track.get("cue_count"):
                self.tracks.addItem(track_label(track), track["id"])
        index = max(0, self.tracks.findData(track_id)) if track_id is not None else 0
        self.tracks.setCurrentIndex(index)
        self.tracks.blockSignals(False)

    def track_id(self) -> int | None:
        return self.tracks.currentData()

    def set_cues(self, cues: list[Cue]) -> None:
        self.cues = sorted(cues, key=lambda c: (c.start_time, c.end_time))
        self._starts = [c.start_time for c in self.cues]
        self._show_subtitle(self.player.position())

    def unload(self, placeholder: str = "Choose a film in the library") -> None:
        self.player.stop()
        self.player.setSource(QUrl())
        self.movie, self.cues, self._starts = None, [], []
        self.title.setText("No film open")
        self.tracks.clear()
        self.view.clear(placeholder)
        self._set_enabled(False)

    # -- controls -----------------------------------------------------------------------------------
    def toggle(self) -> None:
        if self.player.playbackState() == QMediaPlayer.PlaybackState.PlayingState:
            self.player.pause()
        else:
            self.player.play()

    def seek(self, seconds: float) -> None:
        """Go to ``seconds`` into the film (playing on if it was playing; a paused film shows the frame)."""
        if self.movie is None:
            return
        if self._loading_preview:  # the film is still opening: it opens there
            self._pending_seek = seconds
            return
        self.player.setPosition(max(0, int(seconds * 1000)))

    def position(self) -> float:
        return self.player.position() / 1000.0

    def subtitle_text(self) -> str:
        return self.view.subtitle

    def _set_enabled(self, on: bool) -> None:
        for w in (self.play_button, self.seek_bar, self.tracks):
            w.setEnabled(on)

    @Slot(int)
    def _slider_moved(self, value: int) -> None:
        self.player.setPosition(value)

    @Slot(int)
    def _slider_action(self, action: int) -> None:
        if action != QSlider.SliderAction.SliderMove.value:  # page steps and clicks on the groove
            self.player.setPosition(self.seek_bar.sliderPosition())

    @Slot(int)
    def _position_changed(self, ms: int) -> None:
        if not self.seek_bar.isSliderDown():
            self.seek_bar.blockSignals(True)
            self.seek_bar.setValue(ms)
            self.seek_bar.blockSignals(False)
        duration = self.player.duration()
        self.time_label.setText(f"{clock(ms / 1000)} / {clock(duration / 1000 if duration > 0 else None)}")
        self._show_subtitle(ms)

    def _show_subtitle(self, ms: int) -> None:
        """The cue at this position: the latest one started that has not ended (cues may overlap)."""
        t = ms / 1000.0
        last = bisect.bisect_right(self._starts, t) - 1
        text = next((self.cues[i].text for i in range(last, max(-1, last - 20), -1) if self.cues[i].end_time > t), "")
        self.view.set_subtitle(text)

    @Slot(int)
    def _duration_changed(self, ms: int) -> None:
        self.seek_bar.setRange(0, max(0, ms))
        self.seek_bar.setPageStep(max(1000, ms // 20))
        self._position_changed(self.player.position())

    @Slot(QMediaPlayer.PlaybackState)
    def _state_changed(self, state: QMediaPlayer.PlaybackState) -> None:
        playing = state == QMediaPlayer.PlaybackState.PlayingState
        self.play_button.setText("Pause" if playing else "Play")
        self.play_button.setIcon(self.style().standardIcon(
            QStyle.StandardPixmap.SP_MediaPause if playing else QStyle.StandardPixmap.SP_MediaPlay))

    @Slot(QMediaPlayer.MediaStatus)
    def _status_changed(self, status: QMediaPlayer.MediaStatus) -> None:
        if status == QMediaPlayer.MediaStatus.LoadedMedia and self._loading_preview:
            self._loading_preview = False
            if self.player.playbackState() == QMediaPlayer.PlaybackState.StoppedState:
                self.player.pause()  # paused at the start, showing the first frame
            if self._pending_seek is not None:
                self.player.setPosition(max(0, int(self._pending_seek * 1000)))
                self._pending_seek = None

    @Slot(QMediaPlayer.Error, str)
    def _error(self, error: QMediaPlayer.Error, message: str) -> None:
        if error == QMediaPlayer.Error.NoError:
            return
        name = Path(self.movie.path).name if self.movie else "the film"
        self.view.clear(f"Cannot play {name}")
        self.media_error.emit(f"cannot play {name}: {message or error.name}")

    def _track_chosen(self, index: int) -> None:
        self.track_changed.emit(self.tracks.currentData())

    def stop(self) -> None:
        self.player.stop()
