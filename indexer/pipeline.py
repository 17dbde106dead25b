"""The per-movie pipeline: probe -> subtitles -> speech -> features -> scenes (scene vectors, where
the scene model is installed) -> prepare (a "fast answers" state, only for films that asked for one),
each stage resumable.

Every stage records its completion in the movie row, so a job that is interrupted (kill -9,
pause, full disk) starts again at the first unfinished stage, and the feature stage at the last
committed chunk. Between chunks the pipeline checks that the file is still the one it started
with and whether the user paused or cancelled the job.
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from indexer import jobs, movies, sharing
from indexer.encoder import Encoder, features_reusable, find_vision_weights
from indexer.errors import FileChanged
from indexer.features import FeatureWriter
from indexer.library import get_movie
from indexer.prepare import chat_load_options, film_chat, is_current, make_prepared, prepared_key
from indexer.scenes import SceneOptions, SceneStage
from indexer.similar import DEFAULT_THRESHOLD, Anchor, FrameSkipper, encode_chunk, thumbnail
from indexer.store import LibraryStore
from indexer.subtitle_sources import Track, embedded_tracks, read_sidecar, sidecar_files, sidecar_signature
from indexer.whisper import SpeechOptions, audio_windows, load_speech_model, transcribe_window
from llamavid.errors import BadMedia, UserError
from llamavid.media.decode import (
    EPS,
    DecodeStats,
    SampleStream,
    VideoSpec,
    decode_segment,
    next_target,
    prepare_frame,
    video_spec,
)
from llamavid.media.probe import ProbeInfo, StreamInfo, probe
from llamavid.runtime.control import Control
from llamavid.runtime.load import load_model
from llamavid.runtime.vision_engines import SAMPLE_FRAMES, VisionEngines

log = logging.getLogger(__name__)
ProgressFn = Callable[[dict, str, int, "int | None"], None]
SPEECH_FAILED = "speech recognition failed"
PREPARE_FAILED = "not prepared for fast answers"
WAITING = "waiting"  # the job's stage while a question is answered on this machine (indexer.sharing)


@dataclass
class IndexOptions:
    """How movies are indexed; the CLI fills it from its flags."""

    fps: float = 1.0
    batch_size: int | None = None       # frames per EVA batch = per committed chunk; None: 32 GPU, 4 CPU
    vision: str | None = None           # eva_vit_g.pth-format file; None: the installed one
    device: str = "auto"
    dtype: str = "auto"
    vision_engine: str | None = None    # auto, int8, openvino...; None: settings.json's, else auto
    speech: str = "auto"                # auto: only where no text subtitles exist
    whisper: SpeechOptions = field(default_factory=SpeechOptions)
    decode_workers: int = 0             # 0: 1 on CPU (EVA dominates), up to 4 processes on a GPU
    idle: float = 0.0                   # seconds to sleep between chunks, to leave the CPU to others
    max_attempts: int = 3
    dialogue_first: bool = True         # every film's subtitles (and speech) before any film's frames
    skip_similar: bool = True           # a frame of a static shot reuses the last encoded one's features
    similar_threshold: float = DEFAULT_THRESHOLD  # indexer.similar.difference, grey levels
    yield_to_chat: bool = True          # wait between chunks while a question is answered (indexer.sharing)
    yield_max_wait: float = sharing.MAX_WAIT_S
    scenes: SceneOptions = field(default_factory=SceneOptions)  # scene vectors (indexer.scenes)


class Pipeline:
    """Runs the stages of one movie after another; heavy models are loaded once per run."""

    def __init__(self, store: LibraryStore, data, options: IndexOptions,
                 on_progress: ProgressFn | None = None):
        self.store, self.data, self.options = store, data, options
        self.on_progress = on_progress or (lambda movie, stage, done, total: None)
        self._encoder: Encoder | None = None
        self._vision_engines: VisionEngines | None = None
        self._whisper = None
        self._whisper_error: str | None = None
        self._chat_model: tuple[tuple[str, str], object] | None = None
        self.waited = 0.0  # seconds spent stepping aside for the chat
        self.scenes = SceneStage(store, data, options.scenes, options.fps, options.device, options.dtype,
                                 self.on_progress)

    def vision_engines(self) -> VisionEngines:
        if self._vision_engines is None:
            self._vision_engines = VisionEngines.for_data(self.data.root, self.options.vision_engine)
        return self._vision_engines

    def encoder(self) -> Encoder:
        if self._encoder is None:
            weights = find_vision_weights(self.data, self.options.vision)
            try:
                self._encoder = Encoder(weights, self.options.device, self.options.dtype,
                                        engines=self.vision_engines())
            except (ValueError, FileNotFoundError) as exc:  # bad --device/--dtype, unusable weights
                raise UserError(str(exc)) from exc
        return self._encoder

    def check_file(self, movie: dict) -> None:
        """The file must still be the one the job started with."""
        try:
            st = os.stat(movie["path"])
        except FileNotFoundError:
            raise FileChanged("the file was removed during indexing") from None
        if st.st_size != movie["size"] or st.st_mtime != movie["mtime"]:
            raise FileChanged("the file was replaced or modified during indexing")

    def _between_chunks(self, job: dict, movie: dict) -> None:
        self.check_file(movie)
        jobs.check_control(self.store, job["id"])
        if self.options.idle:
            time.sleep(self.options.idle)
        self._step_aside(job, movie)

    def _step_aside(self, job: dict, movie: dict) -> None:
        """While a question is being answered on this machine, wait (bounded; pause and cancel still
        work): the chat gets the CPU. The job's stage reads ``waiting`` meanwhile."""
        if not self.options.yield_to_chat or not sharing.answering_now(self.data.root):
            return
        row = self.store.job(job["id"])
        self.store.job_progress(job["id"], WAITING, row["done"], row["total"])
        log.info("a question is being answered on this machine: indexing waits")

        def check() -> None:
            self.check_file(movie)
            jobs.check_control(self.store, job["id"])

        try:
            self.waited += sharing.wait_while_answering(self.data.root, check, max_wait=self.options.yield_max_wait)
        finally:
            self.store.job_progress(job["id"], row["stage"], row["done"], row["total"])

    def run(self, job: dict, first_pass: bool = False) -> None:
        """The stages of one film that are not done yet; ``first_pass``: only the cheap ones (probe,
        subtitles, speech where chosen), so that every film's dialogue is there before any frames."""
        movie = self.store.movie(job["movie_id"])
        self.check_file(movie)
        if not movie["probed"]:
            self.probe_stage(job, movie)
            movie = self.store.movie(movie["id"])
        info = probe_info(movie)
        if not movie["subtitles_done"]:
            self.subtitle_stage(job, movie, info)
        movie = self.store.movie(movie["id"])
        if movie["speech_state"] is None or movie["speech_state"].startswith("error"):
            self.speech_stage(job, movie, info)
        if first_pass:
            return
        movie = self.store.movie(movie["id"])
        self.feature_stage(job, movie, info)
        movie = self.store.movie(movie["id"])
        self.scenes.run(job, movie, info, lambda: self._between_chunks(job, movie))
        self.prepare_stage(job, self.store.movie(movie["id"]))

    def probe_stage(self, job: dict, movie: dict) -> None:
        self.store.job_progress(job["id"], "probe", 0, 1)
        info = probe(movie["path"])
        notes = []
        if info.variable_frame_rate:
            notes.append("variable frame rate: frames are sampled by timestamp")
        if info.rotation:
            notes.append(f"rotated {info.rotation} degrees: frames are turned upright")
        self.store.update_movie(movie["id"], {
            "probed": 1, "duration": info.duration, "width": info.width, "height": info.height,
            "video_codec": info.video_codec, "frame_rate": info.frame_rate, "rotation": info.rotation,
            "variable_frame_rate": int(info.variable_frame_rate), "has_audio": int(info.has_audio),
            "probe": json.dumps(info.to_dict()), "warning": "; ".join(notes) or None})

    def subtitle_stage(self, job: dict, movie: dict, info: ProbeInfo) -> None:
        self.store.job_progress(job["id"], "subtitles", 0, 1)
        path = Path(movie["path"])
        tracks = embedded_tracks(path, info)
        tracks += [read_sidecar(path, p, info.frame_rate) for p in sidecar_files(path)]
        self.store.replace_subtitle_tracks(movie["id"], tracks, sidecar_signature(path))

    def speech_stage(self, job: dict, movie: dict, info: ProbeInfo) -> None:
        self._drop_warning(movie, SPEECH_FAILED)  # an earlier try's; this one reports its own
        reason = self._speech_skip_reason(movie, info)
        if reason:
            self.store.update_movie(movie["id"], {"speech_state": f"skipped: {reason}"})
            return
        model = self._whisper_model()
        if model is None:
            self._note(movie, speech_state=f"error: {self._whisper_error}",
                       warning=f"{SPEECH_FAILED}: {self._whisper_error} (then `llamavid index retry`)")
            return
        self._transcribe(job, movie, info, model)

    def _speech_skip_reason(self, movie: dict, info: ProbeInfo) -> str | None:
        mode = self.options.speech
        if mode == "never":
            return "speech recognition off (--speech never)"
        if not info.has_audio:
            return "no audio track"
        if mode == "auto" and self.store.has_text_subtitles(movie["id"]):
            return "text subtitles present"
        return None

    def _whisper_model(self):
        if self._whisper is None and self._whisper_error is None:
            try:
                self._whisper = load_speech_model(self.options.whisper.model, self.data.root)
            except UserError as exc:
                self._whisper_error = str(exc)
        return self._whisper

    def _transcribe(self, job: dict, movie: dict, info: ProbeInfo, model) -> None:
        opts = self.options.whisper
        track_id = self.store.asr_track(movie["id"], Track(source="asr", ref=opts.model))
        language = movie["speech_language"]
        total = int((info.duration or 0) // opts.window_seconds) + 1
        start = movie["speech_windows_done"]
        for window, audio in audio_windows(movie["path"], info.start_time, opts.window_seconds, start):
            language, cues = transcribe_window(model, audio, window * opts.window_seconds, opts, language)
            track = Track(source="asr", ref=opts.model, language=language, cues=cues)
            self.store.add_speech_window(job["id"], movie["id"], track_id, track, window, total)
            self.on_progress(movie, "speech", window + 1, total)
            self._between_chunks(job, movie)
        self._note(movie, speech_state="done")

    def _drop_warning(self, movie: dict, prefix: str) -> None:
        current = self.store.movie(movie["id"])["warning"] or ""
        kept = "; ".join(w for w in current.split("; ") if w and not w.startswith(prefix))
        if kept != current:
            self.store.update_movie(movie["id"], {"warning": kept or None})

    def _note(self, movie: dict, warning: str | None = None, **values) -> None:
        if warning:
            current = self.store.movie(movie["id"])["warning"]
            values["warning"] = "; ".join(w for w in (current, warning) if w)
        self.store.update_movie(movie["id"], values)

    def prepare_stage(self, job: dict, movie: dict) -> None:
        """A prepared state ("fast answers") for a film that asked for one, with the chosen chat model."""
        self._drop_warning(movie, PREPARE_FAILED)
        if not self.store.prepare_wanted(movie["id"]):
            return
        model_name = self.store.setting("chat_model")
        if not model_name:
            self._note(movie, f"{PREPARE_FAILED}: no chat model chosen; run `llamavid index prepare --model NAME`")
            return
        if sharing.holders(self.data.root, model_name):  # an app holds it: no second copy here
            log.info("%s: not prepared here: an app on this machine holds %s and prepares with it",
                     movie["rel_path"], model_name)
            return
        film = get_movie(self.store, movie["id"])
        chat, track = film_chat(self.chat_model(model_name), self.store, film, self.store.setting("language"))
        key = prepared_key(chat, film, track)
        if is_current(self.store, film.id, key):
            return

        def progress(p) -> None:
            jobs.check_control(self.store, job["id"])
            self.store.job_progress(job["id"], "prepare", p.done, p.total)
            self._step_aside(job, movie)

        make_prepared(chat, self.store, self.data, film, key, Control(on_progress=progress))

    def chat_model(self, name: str):
        """The LLM that prepares films, loaded once per run (without EVA: features are cached) as the
        chat service loads it (:func:`chat_load_options`), so that its states match the service's."""
        options = chat_load_options(self.store).replace(load_vision=False)
        wanted = (name, options)
        if self._chat_model is None or self._chat_model[0] != wanted:
            self._chat_model = (wanted, load_model(name, self.data.root, options))
        return self._chat_model[1]

    def feature_stage(self, job: dict, movie: dict, info: ProbeInfo) -> None:
        fps = self.options.fps
        if self._encoder is None and movie["features_complete"] and movie["fps"] == fps and features_reusable(
                movie["vision_id"], find_vision_weights(self.data, self.options.vision), self.vision_engines()):
            return  # kept without loading EVA (4 GB): a film queued again only to be prepared, say
        encoder = self.encoder()
        encoder.resolve(lambda: sample_pixels(movie, info, encoder.image_size))  # calibrates once if needed
        if movie["features_complete"] and encoder.reusable(movie["vision_id"]) and movie["fps"] == fps:
            return  # made by these weights with an engine still turned on
        if movie["vision_id"] not in (None, encoder.id) or movie["fps"] not in (None, fps):
            # other weights, a turned-off engine, another rate, or a partial run of another engine: start over
            movies.clear_features(self.store, movie["id"])
            movie = self.store.movie(movie["id"])
        writer, done, batch = self._open_writer(movie, info, encoder)
        skipper = self._skipper(movie, info, writer, done, encoder.image_size)
        last = self.store.frame_time(movie["id"], done - 1)
        start = next_target(last, fps) if last is not None else 0
        # Decoding runs in a worker while EVA runs; it reads ahead one chunk at most, so the frames in
        # memory are the chunk being encoded plus the next one.
        stream = SampleStream(video_spec(movie["path"], info), fps, start, encoder.image_size,
                              self._decode_workers(encoder), prefetch=batch)
        total = info.expected_samples(fps) - 1
        started, first_done, waited = time.monotonic(), done, self.waited
        pending: list = []
        try:
            for sample in stream:
                pending.append(sample)
                if len(pending) == batch:
                    working = max(1e-9, time.monotonic() - started - (self.waited - waited))
                    done = self._commit(job, movie, writer, encoder, pending, done,
                                        (done + batch - first_done) / working, total, skipper)
                    pending = []
                    self._between_chunks(job, movie)
            if pending:
                done = self._commit(job, movie, writer, encoder, pending, done, None, total, skipper)
        finally:
            writer.close()
        if skipper is not None:
            log.info("%s: %d frames encoded, %d reused from a near-identical frame before (this run)",
                     movie["rel_path"], skipper.encoded, skipper.reused)
        self._finish_features(job, movie, info, writer, done, stream.stats)

    def _skipper(self, movie: dict, info: ProbeInfo, writer: FeatureWriter, done: int,
                 image_size: int) -> FrameSkipper | None:
        """What decides which frames EVA skips (None: skipping is off). A resumed film gets its anchor
        back, the last frame encoded before the resume point, decoded again, with its stored features:
        the rest of the film then makes the decisions, and the EVA batches, of an uninterrupted run."""
        if not self.options.skip_similar:
            return None
        skipper = FrameSkipper(self.options.similar_threshold)
        last = self.store.last_encoded_frame(movie["id"], done) if done else None
        if last is not None:
            idx, time_ = last
            pixels = frame_pixels(video_spec(movie["path"], info), self.options.fps, time_, image_size)
            if pixels is None:  # the next frame is then encoded, whatever it looks like
                log.warning("%s: frame %d (%.2f s) could not be decoded again; resuming without it",
                            movie["rel_path"], idx, time_)
            else:
                skipper.anchor = Anchor(thumbnail(pixels), np.array(writer.array[idx]))
        return skipper

    def _decode_workers(self, encoder: Encoder) -> int:
        if self.options.decode_workers:
            return self.options.decode_workers
        return 1 if encoder.device.type == "cpu" else max(1, min(4, (os.cpu_count() or 2) - 1))

    def _open_writer(self, movie: dict, info: ProbeInfo, encoder: Encoder) -> tuple[FeatureWriter, int, int]:
        """(writer, frames done, chunk size): resume the partial file if the database and the file
        agree, else start a new one. A resumed movie keeps its chunk size, so its batches line up
        with those of an uninterrupted run and the features come out bit-identical."""
        final = self.data.features / f"{movie['id']}-{movie['fingerprint'][:16]}.npy"
        writer = FeatureWriter(final, encoder.row_shape)
        done = movie["frames_done"]
        if done and movie["feature_path"] == str(final) and writer.resume() and writer.capacity >= done:
            return writer, done, movie["chunk_frames"]
        batch = self.options.batch_size or (4 if encoder.device.type == "cpu" else 32)
        capacity = info.expected_samples(self.options.fps)
        writer.create(capacity)
        self.store.start_features(movie["id"], {
            "feature_path": str(final), "fps": self.options.fps, "vision_id": encoder.id,
            "frames_capacity": capacity, "chunk_frames": batch, "frames_done": 0, "features_complete": 0,
            "feature_shape": json.dumps([0, *encoder.row_shape])})
        return writer, 0, batch

    def _commit(self, job: dict, movie: dict, writer: FeatureWriter, encoder: Encoder, samples: list,
                done: int, rate: float | None, total: int, skipper: FrameSkipper | None = None) -> int:
        """Encode one chunk (EVA skipping the frames ``skipper`` finds near-identical to the one it last
        encoded), make it durable, then record it: the order that makes resume safe."""
        rows, reused = encode_chunk(encoder, np.stack([s.pixels for s in samples]), skipper)
        writer.write(done, rows)
        writer.flush()
        end = done + len(samples)
        self.store.add_frames(job["id"], movie["id"], done, [s.time for s in samples], writer.capacity,
                              max(total, end), rate, reused.tolist())
        self.on_progress(movie, "features", end, max(total, end))
        return end

    def _finish_features(self, job: dict, movie: dict, info: ProbeInfo, writer: FeatureWriter, done: int,
                         stats) -> None:
        if done == 0:
            writer.discard()
            raise BadMedia("no video frame could be decoded" +
                           (f" ({stats.first_error})" if stats.first_error else "") +
                           "; the file is damaged or truncated")
        self.check_file(movie)
        path = writer.finalize(done)
        notes = []
        slack = max(2.0, 2 / self.options.fps)
        if info.duration and stats.last_time is not None and stats.last_time < info.duration - slack:
            notes.append(f"decoding stopped at {stats.last_time:.0f} s of {info.duration:.0f} s "
                         "(truncated or damaged file); indexed what was readable")
        if stats.corrupt_packets:
            notes.append(f"skipped {stats.corrupt_packets} damaged video packets")
        self.store.job_progress(job["id"], "features", done, done)
        values = {"features_complete": 1, "feature_path": str(path), "frames_done": done,
                  "feature_shape": json.dumps([done, *writer.row_shape]), "cache_bytes": path.stat().st_size}
        self._note(movie, "; ".join(notes) or None, **values)


def sample_pixels(movie: dict, info: ProbeInfo, image_size: int,
                  count: int = SAMPLE_FRAMES["eva"]) -> np.ndarray | None:
    """A few preprocessed frames spread over the film, for calibrating the vision engines on real
    pictures (None if none decodes: the calibration then uses synthetic ones)."""
    duration = info.duration or 0.0
    spec, rows = video_spec(movie["path"], info), []
    for i in range(count):
        k = int(duration * (i + 1) / (count + 1))  # a 1-fps grid point inside the film, not the opening
        try:
            for _, image in decode_segment(spec, 1.0, k, k + 1, DecodeStats()):
                rows.append(prepare_frame(image, image_size))
                break
        except Exception as exc:  # noqa: BLE001 - a sample is a nicety; the feature stage reports bad media
            log.debug("no calibration frame at %d s of %s: %s", k, movie["path"], exc)
    return np.stack(rows) if rows else None


def frame_pixels(spec: VideoSpec, fps: float, time_: float, image_size: int) -> np.ndarray | None:
    """The preprocessed pixels of the frame the sampling rule kept at ``time_`` (decoded again from
    the keyframe before it: bit-identical to the first decode), or None if it does not come back."""
    try:
        for t, image in decode_segment(spec, fps, math.floor(time_ * fps + EPS), None, DecodeStats()):
            return prepare_frame(image, image_size) if abs(t - time_) < 1e-6 else None
    except Exception as exc:  # noqa: BLE001 - the film decoded a moment ago; a failure here only costs a frame
        log.debug("frame at %.3f s of %s: %s", time_, spec.path, exc)
    return None


def probe_info(movie: dict) -> ProbeInfo:
    data = json.loads(movie["probe"])
    data["streams"] = [StreamInfo(**s) for s in data.get("streams", [])]
    return ProbeInfo(**data)

