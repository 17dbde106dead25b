"""Cutting a clip out of a real film (``llamavid.media.clip``): films written with PyAV whose every
frame shows its own time (the clock picture: a brightness per second and a bar that moves 3 px a
frame), keyframes every 4 s, an AAC tone. A clip starting on a keyframe is copied, one between
keyframes encoded; either way it holds the span asked for (within a frame or two, from the frame
rate), its first picture is the film's picture at the span's start (and not the next frame's: the
negative control), and its audio lasts as long. Bad input is refused with the file and the problem
named, a cancelled cut leaves nothing, and a failed one leaves the old file as it was."""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from llamavid.errors import BadMedia, Cancelled, UserError
from llamavid.media.clip import MAX_CLIP_SECONDS, clip_span, cut
from llamavid.media.synthetic import X264, clock, write_video

FPS = 10
SECONDS = 20
KEYINT = 40  # frames: keyframes at 0, 4, 8, 12 and 16 s


def make_film(path: Path) -> Path:
    return write_video(path, clock(96, 64, FPS), fps=FPS, seconds=SECONDS, audio=True,
                       x264=X264(preset="ultrafast", keyint=KEYINT, fixed_keyint=True, bframes=2))


@pytest.fixture(scope="module", params=[".mp4", ".mkv"])
def film(request, tmp_path_factory) -> Path:
    """The same film in MP4 and in Matroska (whose demuxer leaves the first packets of a GOP undated)."""
    return make_film(tmp_path_factory.mktemp("film") / f"Harbor{request.param}")


def frames(path: Path) -> list[tuple[float, np.ndarray]]:
    """(time, RGB picture) of every frame of a file's video."""
    with av.open(str(path)) as container:
        return [(float(f.time), f.to_ndarray(format="rgb24")) for f in container.decode(video=0)]


def audio_seconds(path: Path) -> float:
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        return sum(f.samples for f in container.decode(stream)) / stream.codec_context.sample_rate


def reading(picture: np.ndarray) -> tuple[float, int]:
    """What a clock picture shows: its brightness (which second) and its bar's column (which frame),
    read from the bottom half (the red corner is at the top)."""
    grey = picture[picture.shape[0] // 2:].astype(np.float32).mean(axis=2)
    columns = grey.mean(axis=0)
    return float(np.median(grey)), int(np.argmax(columns))


def same_picture(a: np.ndarray, b: np.ndarray) -> bool:
    """Same second (brightness within 3 levels, a second is 10) and same frame (bar within 1 px, a frame is 3)."""
    (level_a, bar_a), (level_b, bar_b) = reading(a), reading(b)
    return abs(level_a - level_b) <= 3 and abs(bar_a - bar_b) <= 1


def film_frame_at(film_frames: list[tuple[float, np.ndarray]], t: float) -> int:
    """The index of the first film frame shown at or after ``t``."""
    return next(i for i, (time, _) in enumerate(film_frames) if time >= t - 1e-3)


def check_clip(clip_path: Path, film_path: Path, start: float, end: float) -> None:
    film_frames, clip_frames = frames(film_path), frames(clip_path)
    step = 1 / FPS
    shown = len(clip_frames) * step
    assert abs(shown - (end - start)) <= 2 * step + 1e-6, (shown, end - start)
    assert clip_frames[0][0] <= step + 1e-6  # the clip's time starts at its first picture
    first = film_frame_at(film_frames, start)
    assert same_picture(clip_frames[0][1], film_frames[first][1])
    # negative controls: the film's next frame, and the same frame a second later, are other pictures
    assert not same_picture(clip_frames[0][1], film_frames[first + 1][1])
    assert not same_picture(clip_frames[0][1], film_frames[first + FPS][1])
    # the last picture too: the clip ends where the span does (a copy may show the reference frame
    # the last B-frames before the end were predicted from: one or two frames more)
    last = film_frame_at(film_frames, end) - 1
    assert any(same_picture(clip_frames[-1][1], film_frames[i][1]) for i in (last, last + 1, last + 2))
    assert not same_picture(clip_frames[-1][1], film_frames[last + 3][1])
    assert abs(audio_seconds(clip_path) - (end - start)) <= 0.1


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_a_clip_starting_on_a_keyframe_is_copied_with_the_span(film, tmp_path, suffix) -> None:
    clip = cut(film, tmp_path / f"clip{suffix}", 4.0, 9.5)
    assert clip.method == "copy" and (clip.start, clip.end) == (4.0, 9.5)
    check_clip(clip.path, film, 4.0, 9.5)


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_a_clip_between_keyframes_is_encoded_with_the_span(film, tmp_path, suffix) -> None:
    clip = cut(film, tmp_path / f"clip{suffix}", 9.3, 14.8)
    assert clip.method == "encode" and clip.video_codec in ("libx264", "mpeg4")
    assert (clip.start, clip.end) == (9.3, 14.8)
    check_clip(clip.path, film, 9.3, 14.8)


def test_snap_back_starts_on_the_keyframe_before_when_allowed(film, tmp_path) -> None:
    assert cut(film, tmp_path / "near.mp4", 8.6, 10.0, snap_back=0.5).method == "encode"  # 0.6 s back: too far
    clip = cut(film, tmp_path / "snapped.mp4", 8.6, 10.0, snap_back=1.0)
    assert clip.method == "copy" and clip.start == pytest.approx(8.0)
    check_clip(clip.path, film, 8.0, 10.0)


def test_a_span_past_the_end_is_cut_at_the_end(film, tmp_path) -> None:
    clip = cut(film, tmp_path / "end.mp4", 17.0, 30.0)
    assert clip.end == pytest.approx(frames(film)[-1][0] + 1 / FPS, abs=0.1)
    assert len(frames(clip.path)) == pytest.approx((clip.end - 17.0) * FPS, abs=2)


def test_clip_span_adds_the_margin_inside_the_film() -> None:
    assert clip_span(6.0, 7.5, 20.0) == (4.0, 9.5)
    assert clip_span(1.0, 2.0, 20.0) == (0.0, 4.0)       # not before the film
    assert clip_span(18.5, 19.9, 20.0) == (16.5, 20.0)   # nor after it
    assert clip_span(3.0, 4.0, None, margin=0.5) == (2.5, 4.5)
    with pytest.raises(UserError, match="outside the film"):
        clip_span(21.0, 22.0, 20.0)


def test_bad_spans_are_refused_with_what_to_change(film, tmp_path) -> None:
    dst = tmp_path / "clip.mp4"
    with pytest.raises(UserError, match="at most 5 minutes"):
        cut(film, dst, 0.0, MAX_CLIP_SECONDS + 1)
    with pytest.raises(UserError, match="must end after it starts"):
        cut(film, dst, 5.0, 5.0)
    with pytest.raises(UserError, match=r"outside Harbor\..*, which is 20\.\d+ s long"):
        cut(film, dst, 25.0, 27.0)
    with pytest.raises(UserError, match="before the film"):
        cut(film, dst, -1.0, 2.0)
    with pytest.raises(UserError, match=r"clip\.avi: .*\.mkv.*\.mp4"):
        cut(film, tmp_path / "clip.avi", 1.0, 2.0)
    assert not dst.exists()


def test_missing_and_broken_films_are_named(tmp_path) -> None:
    with pytest.raises(UserError, match=r"Gone\.mp4: the film's file is not there"):
        cut(tmp_path / "Gone.mp4", tmp_path / "clip.mp4", 1.0, 2.0)
    broken = make_film(tmp_path / "Broken.mp4")
    broken.write_bytes(broken.read_bytes()[: broken.stat().st_size // 3])  # no index: not a readable MP4
    with pytest.raises(BadMedia, match=r"Broken\.mp4: not a readable video file"):
        cut(broken, tmp_path / "clip.mp4", 1.0, 2.0)
    assert not (tmp_path / "clip.mp4").exists()


def test_a_cancelled_cut_leaves_the_old_file_and_no_temporary_one(film, tmp_path) -> None:
    dst = tmp_path / "clip.mp4"
    dst.write_bytes(b"the clip saved before")
    asked = []
    with pytest.raises(Cancelled):
        cut(film, dst, 9.3, 14.8, stop=lambda: asked.append(1) or len(asked) > 3)  # stops in the middle
    assert dst.read_bytes() == b"the clip saved before"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


def test_progress_rises_to_one(film, tmp_path) -> None:
    seen: list[float] = []
    cut(film, tmp_path / "clip.mp4", 9.3, 14.8, progress=seen.append)
    assert seen == sorted(seen) and seen[-1] == 1.0 and len(seen) > 10
