"""Pictures and clips for a chat are decoded bounded by design (llamavid.media.load): a large picture
straight to a few times the model's size, a long clip sampled so only the kept frames are converted,
limits checked from headers before anything is decoded, and Stop honoured between frames."""
from __future__ import annotations

import io
import struct
import weakref
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from llamavid.errors import BadMedia, Cancelled
from llamavid.media import load
from llamavid.media.load import EncodedPicture, check_clip, check_request_pixels, load_image, load_video, picture_size
from tests.support.media import make_video


def _png(path: Path, width: int, height: int) -> Path:
    """A real PNG of a smooth gradient (compresses well, so large pictures stay small files)."""
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None, None]
    array = np.broadcast_to(((x + y) / 2).astype(np.uint8), (height, width, 3))
    Image.fromarray(np.ascontiguousarray(array)).save(path)
    return path


def _png_header_only(width: int, height: int) -> bytes:
    """A 1x1 PNG whose header claims ``width`` x ``height``: what a decompression bomb looks like
    to a reader that trusts headers (it must be refused without decoding)."""
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    at = data.index(b"IHDR")
    data[at + 4:at + 12] = struct.pack(">II", width, height)
    data[at + 17:at + 21] = struct.pack(">I", zlib.crc32(bytes(data[at:at + 17])))
    return bytes(data)


def test_a_large_photo_is_decoded_at_a_few_times_the_models_size(tmp_path):
    path = tmp_path / "photo.jpg"
    Image.fromarray(np.full((3000, 4000, 3), 90, np.uint8)).save(path, quality=85)
    image = load_image(path, 224, "pad")
    assert 4 * 224 <= max(image.shape[:2]) < 2 * 4 * 224  # JPEG's draft: 1/4 scale, 1000 x 750
    assert image.shape == (750, 1000, 3)


def test_a_large_png_is_reduced_by_an_integer_factor(tmp_path):
    image = load_image(_png(tmp_path / "big.png", 6000, 4000), 224, "pad")
    assert image.shape == (667, 1000, 3)  # 6000 // 896 = 6


def test_a_picture_within_four_times_the_models_size_is_decoded_exactly(tmp_path):
    path = _png(tmp_path / "photo.png", 880, 600)
    np.testing.assert_array_equal(load_image(path, 224, "pad"), np.asarray(Image.open(path).convert("RGB")))
    assert load_image(path).shape == (600, 880, 3)  # no model size: the whole picture


def test_an_extreme_strip_never_makes_a_huge_canvas(tmp_path):
    path = _png(tmp_path / "strip.png", 40_000, 20)
    padded = load_image(path, 224, "pad")  # pad: the long side is reduced, the square canvas stays small
    assert max(padded.shape[:2]) < 2 * 4 * 224
    cropped = load_image(path, 224, "crop")  # crop: the middle of the strip, 4:1, what the centre crop sees
    assert cropped.shape == (20, 80, 3)
    middle = np.asarray(Image.open(path).convert("RGB"))[:, 20_000 - 40:20_000 + 40]
    np.testing.assert_array_equal(cropped, middle)


def test_a_picture_larger_than_the_limit_is_refused_from_its_header(tmp_path):
    data = _png_header_only(9000, 9000)  # over this program's limit, under Pillow's own
    with pytest.raises(BadMedia, match=r"upload\.png: the picture is 9000x9000 pixels; .* 64 million pixels"):
        picture_size(data, "upload.png")
    bomb = _png_header_only(20_000, 20_000)  # over Pillow's limit too: the same kind of refusal
    with pytest.raises(BadMedia, match=r"messages\[0\]\.content\[1\]: that is far more than the 64 million"):
        EncodedPicture.read(bomb, "messages[0].content[1]")
    assert picture_size(_png_header_only(4000, 3000)) == (4000, 3000)  # the header alone is read


def test_the_pictures_of_one_question_are_limited_together():
    check_request_pixels([(8000, 8000)])  # one picture at the per-picture limit is fine
    with pytest.raises(BadMedia, match="million pixels together"):
        check_request_pixels([(8000, 8000)] * 3)


def test_a_damaged_picture_names_itself(tmp_path):
    good = io.BytesIO()
    Image.fromarray(np.full((64, 64, 3), 7, np.uint8)).save(good, format="PNG")
    damaged = EncodedPicture.read(good.getvalue()[:60], "messages[0].content[2]")  # the header is intact
    with pytest.raises(BadMedia, match=r"messages\[0\]\.content\[2\]: cannot read the image"):
        load_image(damaged, 224)
    with pytest.raises(BadMedia, match="not an image format"):
        load_image(b"GIF89a but not really", 224)


def test_a_long_clip_is_refused_before_decoding_and_sent_to_the_library(tmp_path, monkeypatch):
    clip = make_video(tmp_path / "clip.mp4", seconds=6, fps=5)
    assert check_clip(clip).duration == pytest.approx(6, abs=0.3)
    monkeypatch.setattr(load, "MAX_CLIP_SECONDS", 4)
    with pytest.raises(BadMedia, match="clip.mp4 is 0 min long; .*add it to the library instead"):
        check_clip(clip)
    with pytest.raises(BadMedia, match="add it to the library"):
        load_video(clip, max_frames=10)


def test_a_clip_is_sampled_so_only_the_kept_frames_are_converted(tmp_path):
    clip = make_video(tmp_path / "clip.mp4", seconds=20, fps=10)
    converted = []
    frames, times = load_video(clip, max_frames=5, transform=lambda f: converted.append(f) or f.shape)
    assert len(frames) == 5 and len(converted) <= 6  # sampling at 1/s would convert 20
    assert times[0] < 1 and times[-1] > 14  # still spread over the whole clip
    assert all(b - a > 3 for a, b in zip(times, times[1:], strict=False))


def test_a_misreported_length_still_keeps_memory_bounded():
    alive: weakref.WeakSet = weakref.WeakSet()

    class Frame:
        pass

    def samples():
        for i in range(1000):
            assert len(alive) <= 2 * 10 + 1  # never more than twice the limit kept at once
            yield float(i), i

    def keep(_):
        frame = Frame()
        alive.add(frame)
        return frame

    frames, times = load._kept(samples(), 10, keep, None)
    assert 10 < len(frames) <= 21
    assert times[0] == 0 and times[-1] >= 900  # the end of the clip is still covered


def test_stop_ends_decoding_between_frames(tmp_path):
    clip = make_video(tmp_path / "clip.mp4", seconds=10, fps=10)
    calls = []

    def check():
        calls.append(1)
        if len(calls) > 3:
            raise Cancelled("stopped")

    with pytest.raises(Cancelled):
        load_video(clip, check=check)
    assert len(calls) == 4
