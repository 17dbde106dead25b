"""The one writer of synthetic videos: what it writes probes and decodes as asked."""
from __future__ import annotations

import av
import numpy as np
import pytest

from llamavid.errors import BadMedia
from llamavid.media.decode import DecodeStats, decode_segment, video_spec
from llamavid.media.probe import probe
from llamavid.media.synthetic import (
    X264,
    Tone,
    clock,
    film,
    grey_ramp,
    moving_bar,
    repeat_clip,
    write_audio,
    write_video,
)

FAST = X264(preset="ultrafast")


def video_frames(path) -> list[tuple[float, bool]]:
    """(time, is a keyframe) of every decoded frame, in display order."""
    with av.open(str(path)) as container:
        return [(float(f.time), f.key_frame) for f in container.decode(video=0)]


def sampled(path, fps: float = 1.0) -> list[tuple[float, np.ndarray]]:
    return list(decode_segment(video_spec(path, probe(path)), fps, 0, None, DecodeStats()))


def test_clip_has_the_asked_size_duration_rate_and_pictures(tmp_path):
    path = write_video(tmp_path / "deep" / "a.mp4", clock(96, 64, 25), fps=25, seconds=3, x264=FAST)
    info = probe(path)
    assert (info.width, info.height, info.frame_rate) == (96, 64, 25.0)
    assert info.duration == pytest.approx(3.0, abs=0.05)
    assert not info.variable_frame_rate and not info.has_audio
    assert [s.type for s in info.streams] == ["video"] and info.video_codec == "h264"
    assert len(video_frames(path)) == 75
    samples = sampled(path)
    assert [round(t, 3) for t, _ in samples] == [0.0, 1.0, 2.0]
    for second, (_, image) in enumerate(samples):  # clock pictures: brightness 10 x the second, red corner
        assert abs(int(np.median(image[40:, 10:40])) - 10 * second) <= 3
        assert image[:8, :12, 0].mean() > 200 and image[:8, :12, 1].mean() < 60


def test_keyframe_interval_and_defaults(tmp_path):
    fixed = write_video(tmp_path / "fixed.mkv", grey_ramp(64, 48), fps=10, seconds=3,
                        x264=X264(preset="ultrafast", keyint=10, fixed_keyint=True, bframes=2))
    assert [t for t, key in video_frames(fixed) if key] == pytest.approx([0.0, 1.0, 2.0])
    default = write_video(tmp_path / "default.mkv", grey_ramp(64, 48), fps=10, seconds=3, x264=FAST)
    assert [t for t, key in video_frames(default) if key] == [0.0]  # libx264's keyint 250


def test_x264_options_spell_the_benchmark_settings():
    options = X264(preset="veryfast", crf=23, keyint=240, fixed_keyint=True, bframes=2, maxrate_kbps=8000).options()
    assert options == {"preset": "veryfast", "crf": "23", "x264-params":
                       "keyint=240:min-keyint=240:scenecut=0:bframes=2:vbv-maxrate=8000:vbv-bufsize=16000"}
    assert X264().options() == {}
    assert X264(keyint=50, bframes=2).options() == {"x264-params": "keyint=50:bframes=2"}


@pytest.mark.parametrize("name,codec,expected", [
    ("a.mkv", None, "subrip"), ("a.mp4", None, "mov_text"), ("a.mkv", "ass", "ass"), ("a.mkv", "webvtt", "webvtt"),
])
def test_subtitles_and_audio_when_asked(tmp_path, name, codec, expected):
    cues = [(0.5, 1.5, "Hello"), (2.0, 3.0, "World")]
    path = write_video(tmp_path / name, clock(64, 48, 10), fps=10, seconds=3, x264=FAST, audio=True,
                       subtitles=cues, sub_codec=codec, sub_language="fre")
    info = probe(path)
    assert [s.type for s in info.streams] == ["video", "audio", "subtitle"] and info.has_audio
    subs = info.streams[2]
    assert subs.codec == expected and subs.language == "fre"
    with av.open(str(path)) as container:
        packets = [p for p in container.demux(container.streams.subtitles[0]) if p.size > 2]  # mov_text fills gaps
        assert [round(float(p.pts * p.time_base), 3) for p in packets] == [0.5, 2.0]
        assert [b"Hello" in bytes(p) for p in packets] == [True, False]
    with av.open(str(path)) as container:
        audio = container.streams.audio[0]
        assert audio.codec_context.name == "aac" and audio.sample_rate == 16000
        samples = sum(f.samples for f in container.decode(audio))
    assert samples / 16000 == pytest.approx(3.0, abs=0.15)  # as long as the video


def test_no_tracks_unless_asked_and_no_default_codec_for_odd_containers(tmp_path):
    info = probe(write_video(tmp_path / "a.mkv", clock(64, 48, 10), fps=10, seconds=1, x264=FAST, subtitles=[]))
    assert [s.type for s in info.streams] == ["video"]
    with pytest.raises(ValueError, match="pass sub_codec"):
        write_video(tmp_path / "a.avi", clock(64, 48, 10), fps=10, seconds=1, subtitles=[(0, 1, "x")])


def test_variable_frame_rate_file_has_the_asked_frame_times(tmp_path):
    times = [0.0, 0.1, 0.2, 4.0, 4.1]
    path = write_video(tmp_path / "vfr.mkv", clock(64, 48, 10), fps=10, frame_times=times, x264=FAST)
    assert [t for t, _ in video_frames(path)] == pytest.approx(times, abs=1e-6)
    assert probe(path).variable_frame_rate
    samples = sampled(path)
    assert [t for t, _ in samples] == pytest.approx([0.0, 4.0])
    assert abs(int(np.median(samples[1][1][30:, 20:])) - 40) <= 3  # the picture of second 4


def test_frames_from_an_iterable_and_bad_input(tmp_path):
    frames = [np.full((48, 64, 3), v, np.uint8) for v in (0, 100, 200, 250)]
    path = write_video(tmp_path / "list.mp4", frames, fps=2, x264=FAST)
    info = probe(path)
    assert (info.width, info.height) == (64, 48) and info.duration == pytest.approx(2.0, abs=0.05)
    assert len(video_frames(path)) == 4
    with pytest.raises(ValueError, match="seconds or frame_times"):
        write_video(tmp_path / "x.mp4", grey_ramp(64, 48))
    with pytest.raises(ValueError, match="64x48 for a 96x64"):
        write_video(tmp_path / "x.mp4", frames, size=(96, 64))
    with pytest.raises(ValueError, match="frame 1 is 32x32"):
        write_video(tmp_path / "x.mp4", [frames[0], np.zeros((32, 32, 3), np.uint8)])


def test_audio_only_file_holds_the_tone(tmp_path):
    path = write_audio(tmp_path / "tone.mka", 2.0, Tone(hz=1000))
    with pytest.raises(BadMedia, match="no video stream"):
        probe(path)
    with av.open(str(path)) as container:
        assert [s.type for s in container.streams] == ["audio"]
        samples = np.concatenate([f.to_ndarray()[0] for f in container.decode(audio=0)])
    assert len(samples) == pytest.approx(32000, abs=2048)
    middle = samples[4000:20000]
    peak = np.argmax(np.abs(np.fft.rfft(middle))) * 16000 / len(middle)
    assert peak == pytest.approx(1000, abs=5) and 0.1 < np.abs(middle).max() < 0.3
    silent = write_audio(tmp_path / "silent.mka", 1.0, Tone(amplitude=0))
    with av.open(str(silent)) as container:
        assert max(np.abs(f.to_ndarray()).max() for f in container.decode(audio=0)) < 1e-3


def test_repeat_clip_copies_the_video_back_to_back(tmp_path):
    clip = write_video(tmp_path / "a.mp4", film(64, 48, 10), fps=10, seconds=2,
                       x264=X264(preset="veryfast", keyint=10, fixed_keyint=True, bframes=2, maxrate_kbps=500))
    longer = repeat_clip(clip, tmp_path / "b.mp4", 3)
    assert probe(longer).duration == pytest.approx(6.0, abs=0.05)
    times = [t for t, _ in video_frames(longer)]
    assert len(times) == 60 and times == sorted(times) and times[-1] == pytest.approx(5.9)


def test_picture_functions():
    a, b = film(32, 16, 10), film(32, 16, 10)
    first = a(0, 0.0)
    assert first.shape == (16, 32, 3) and first.dtype == np.uint8
    assert np.array_equal(first, b(0, 0.0)) and not np.array_equal(first, film(32, 16, 10, seed=1)(0, 0.0))
    assert not np.array_equal(a(1, 0.1), first)  # fresh grain every frame
    bar = moving_bar(64, 48, (220, 30, 30))(2, 0.4)
    assert (bar[:, 8:16] == 0).all() and (bar[:, :8] == (220, 30, 30)).all() and (bar[:, 16:] == (220, 30, 30)).all()
    assert grey_ramp(8, 4)(3, 0.3).max() == 24 and grey_ramp(8, 4)(32, 3.2).min() == 1
    picture = clock(40, 20, 25)
    assert picture(0, 2.0)[-1, -1, 0] == 20 and picture(0, 0.04)[-1, 3:7].min() == 255  # frame 1: bar at x 3
