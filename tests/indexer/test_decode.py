"""Frame sampling: the rule, variable frame rate, rotation, resume and parallel decoding."""
from __future__ import annotations

import numpy as np
import pytest

from llamavid.errors import BadMedia
from llamavid.media.decode import DecodeStats, SampleStream, decode_segment, video_spec
from llamavid.media.probe import probe
from tests.support.media import make_audio_only, make_undecodable, make_video, rotate_mp4, truncate


def _sample(path, fps=1.0, start_k=0):
    info = probe(path)
    stats = DecodeStats()
    return list(decode_segment(video_spec(path, info), fps, start_k, None, stats)), stats


def test_one_frame_per_second_at_the_grid(tmp_path):
    path = make_video(tmp_path / "a.mkv", seconds=5, fps=25)
    frames, stats = _sample(path)
    assert [round(t, 3) for t, _ in frames] == [0.0, 1.0, 2.0, 3.0, 4.0]
    # the picture's brightness encodes its second: the kept frame is the one at the grid point
    assert [round(int(img[-1, -1, 0]) / 10) for _, img in frames] == [0, 1, 2, 3, 4]
    assert stats.decoded < 125  # non-reference frames were skipped


def test_other_rates(tmp_path):
    path = make_video(tmp_path / "a.mp4", seconds=4, fps=25)
    frames, _ = _sample(path, fps=2.0)
    # one frame per half second, each at most two frames after its grid point (skipped B-frames)
    assert len(frames) == 8
    assert all(k / 2 <= t < k / 2 + 3 / 25 for k, (t, _) in enumerate(frames))
    frames, _ = _sample(path, fps=0.5)
    assert [round(t, 2) for t, _ in frames] == [0, 2]


def test_variable_frame_rate_uses_timestamps(tmp_path):
    # 10 fps for 2 s, then a 3-second still, then 10 fps again
    times = [i / 10 for i in range(20)] + [5.0] + [5 + i / 10 for i in range(1, 20)]
    path = make_video(tmp_path / "vfr.mkv", fps=10, frame_times=times)
    frames, _ = _sample(path)
    kept = [round(t, 2) for t, _ in frames]
    assert kept == [0.0, 1.0, 5.0, 6.0]  # no frame repeated across the gap, real times kept
    assert probe(path).duration == pytest.approx(7.0, abs=0.2)


def test_rotated_video_is_turned_upright(tmp_path):
    path = rotate_mp4(make_video(tmp_path / "phone.mp4", seconds=2, size=(96, 64)), 90)
    info = probe(path)
    assert info.rotation == -90 and (info.width, info.height) == (96, 64)
    frames, _ = _sample(path)
    image = frames[0][1]
    assert image.shape == (96, 64, 3)  # portrait after rotation
    # the red block of the top-left corner is now top-right (rotated 90 degrees clockwise)
    assert image[5, -5, 0] > 200 and image[5, -5, 1] < 80
    assert image[-5, 5, 0] < 200 or image[-5, 5, 1] > 80


def test_resume_from_a_target_equals_the_tail_of_a_full_pass(tmp_path):
    path = make_video(tmp_path / "a.mkv", seconds=8, fps=25, gop=50)
    full, _ = _sample(path)
    tail, _ = _sample(path, start_k=5)
    assert [t for t, _ in tail] == [t for t, _ in full[5:]]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(tail, full[5:], strict=True))


def test_parallel_segments_equal_sequential(tmp_path):
    path = make_video(tmp_path / "a.mp4", seconds=12, fps=25, gop=50)
    spec = video_spec(path, probe(path))
    seq = list(SampleStream(spec, 1.0, image_size=32))
    par_stream = SampleStream(spec, 1.0, image_size=32, workers=2, segment_seconds=3)
    assert len(list(par_stream._segments())) > 2
    par = list(par_stream)
    assert [s.time for s in par] == [s.time for s in seq]
    assert all(np.array_equal(a.pixels, b.pixels) for a, b in zip(par, seq, strict=True))
    assert par[0].pixels.shape == (3, 32, 32)


def _write(data: bytes):
    def make(path):
        path.write_bytes(data)
        return path
    return make


@pytest.mark.parametrize("maker, message", [
    (_write(b""), "empty"),
    (_write(b"this is not a video"), "not a readable video"),
    (lambda p: make_audio_only(p), "no video stream"),
    (lambda p: truncate(make_video(p.with_suffix(".mp4"), seconds=3)), "not a readable video"),
])
def test_bad_files_say_why(tmp_path, maker, message):
    path = maker(tmp_path / "bad.mkv")
    with pytest.raises(BadMedia, match=message):
        probe(path)


def test_unsupported_codec(tmp_path):
    with pytest.raises(BadMedia, match="unsupported video codec"):
        probe(make_undecodable(tmp_path / "avs2.ts"))


def test_packets_before_a_keyframe_at_the_target_are_never_decoded(tmp_path, monkeypatch):
    import llamavid.media.decode as decode

    path = make_video(tmp_path / "a.mp4", seconds=12, fps=25, gop=25)  # a keyframe every second
    fast, fast_stats = _sample(path, fps=0.25)
    monkeypatch.setattr(decode, "_drop_before_keyframe", lambda *args: None)
    slow, slow_stats = _sample(path, fps=0.25)
    assert [t for t, _ in fast] == [t for t, _ in slow] == [0.0, 4.0, 8.0]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(fast, slow, strict=True))
    assert fast_stats.skipped_packets > 150 and fast_stats.decoded < slow_stats.decoded / 4


def test_frames_after_the_last_target_are_never_decoded(tmp_path, monkeypatch):
    import llamavid.media.decode as decode

    path = make_video(tmp_path / "a.mp4", seconds=3.96, fps=25, gop=250)  # targets 0..3, then 0.92 s more
    fast, fast_stats = _sample(path)
    monkeypatch.setattr(decode, "_drop_past_last_target", lambda *args: None)
    slow, slow_stats = _sample(path)
    assert [t for t, _ in fast] == [t for t, _ in slow] and len(fast) == 4 and fast[-1][0] < 3.1
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(fast, slow, strict=True))
    assert fast_stats.decoded <= slow_stats.decoded - 10 and fast_stats.skipped_packets >= 15
