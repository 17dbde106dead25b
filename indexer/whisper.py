"""Speech recognition with faster-whisper for movies that have no text subtitles.

The audio is decoded with PyAV to 16 kHz mono and transcribed in windows (10 minutes by default):
memory stays bounded for a film of any length, and each finished window is committed, so a killed
run resumes at the next window. The language is detected on the first window with speech and then
kept for the rest of the film (a film switching language per window would be worse). VAD is on by
default: it skips music and silence, which is where Whisper invents text.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import ctranslate2
import numpy as np
from faster_whisper import WhisperModel

from llamavid.errors import UserError
from llamavid.hub import catalog
from llamavid.hub.installed import missing_speech_files, resolve_model
from llamavid.prompt.subtitles import Cue

SAMPLE_RATE = 16000


@dataclass
class SpeechOptions:
    model: str = "small"               # an installed speech model (small = whisper-small) or a folder
    vad: bool = True
    language: str | None = None        # None: detect
    window_seconds: float = 600.0
    beam_size: int = 5


def speech_model_folder(name: str | Path, data_dir: Path) -> Path:
    """The folder of a faster-whisper model: an installed name (``small`` means the catalogue's
    ``whisper-small``), a name registered with ``llamavid models add``, or a folder path.

    Indexing never downloads: a model that is not installed is an error saying what to pull, so a
    library scan cannot start a multi-gigabyte transfer the user did not ask for.
    """
    text = str(name)
    if catalog.get(f"whisper-{text}") is not None:
        text = f"whisper-{text}"
    try:
        folder = resolve_model(text, data_dir)
    except UserError as exc:
        raise UserError(f"speech model {str(name)!r}: {exc}; {_CHOICES}") from exc
    missing = missing_speech_files(folder)
    if missing:
        raise UserError(f"speech model {folder} is not a faster-whisper model folder (no {', '.join(missing)}); "
                        f"{_CHOICES}")
    return folder


_CHOICES = ("pass --whisper-model with an installed speech model (`llamavid models pull whisper-small`; "
            "`llamavid models list --available` shows the sizes) or a faster-whisper model folder, "
            "or --speech never")


def load_speech_model(name: str | Path, data_dir: Path):
    """A WhisperModel on CUDA (float16) when ctranslate2 sees a GPU, else CPU (int8)."""
    folder = speech_model_folder(name, data_dir)
    cuda = ctranslate2.get_cuda_device_count() > 0
    try:
        return WhisperModel(str(folder), device="cuda" if cuda else "cpu",
                            compute_type="float16" if cuda else "int8", local_files_only=True)
    except Exception as exc:  # ctranslate2 / tokenizer errors come in many types
        raise UserError(f"speech model {folder} could not be loaded ({exc.__class__.__name__}: {exc}); "
                        f"{_CHOICES}") from exc


def _audio_stream(container):
    streams = list(container.streams.audio)
    default = [s for s in streams if s.disposition & s.disposition.__class__.default]
    return (default or streams or [None])[0]


def audio_windows(path: str | Path, origin: float, window_seconds: float,
                  start_window: int = 0) -> Iterator[tuple[int, np.ndarray]]:
    """(window index, float32 mono 16 kHz samples) from window ``start_window`` on."""
    window = int(window_seconds * SAMPLE_RATE)
    start = start_window * window_seconds
    with av.open(str(path), metadata_errors="ignore") as container:
        stream = _audio_stream(container)
        if stream is None:
            return
        if start > 0:
            container.seek(int((origin + start) / stream.time_base), stream=stream, backward=True)
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        chunks, held, index, skip = [], 0, start_window, None
        for frame in _frames(container, stream):
            if skip is None:  # samples decoded before the window start (the seek lands earlier)
                t0 = (frame.time - origin) if frame.time is not None else start
                skip = max(0, int(round((start - t0) * SAMPLE_RATE)))
            for out in resampler.resample(frame):
                samples = out.to_ndarray().reshape(-1)
                if skip:
                    cut = min(skip, len(samples))
                    samples, skip = samples[cut:], skip - cut
                chunks.append(samples)
                held += len(samples)
                while held >= window:
                    audio = np.concatenate(chunks)
                    yield index, audio[:window]
                    chunks, held, index = [audio[window:]], held - window, index + 1
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray().reshape(-1))
        if chunks and sum(len(c) for c in chunks):
            yield index, np.concatenate(chunks)


def _frames(container, stream):
    """Decoded audio frames; damaged packets are skipped."""
    for packet in container.demux(stream):
        try:
            yield from stream.decode(packet)
        except av.error.InvalidDataError:
            continue


def transcribe_window(model, audio: np.ndarray, offset: float, options: SpeechOptions,
                      language: str | None) -> tuple[str | None, list[Cue]]:
    """Cues of one window, times shifted by ``offset``; returns the language used or detected."""
    segments, info = model.transcribe(audio, language=language or options.language,
                                      vad_filter=options.vad, beam_size=options.beam_size,
                                      condition_on_previous_text=False)
    length = len(audio) / SAMPLE_RATE  # Whisper can emit timestamps past the end of its input
    cues = [Cue(offset + s.start, offset + min(max(s.end, s.start), length), s.text.strip())
            for s in segments if s.text.strip() and s.start < length]
    detected = language or options.language
    if detected is None and info.duration_after_vad and info.duration_after_vad > 0:
        detected = info.language
    return detected, cues
