"""CLIP preprocessing: golden pixel parity, an independent arithmetic cross-check, bad input."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from llamavid.media.preprocess import (
    CLIP_MEAN,
    CLIP_STD,
    PAD_COLOR,
    expand_to_square,
    preprocess_frame,
    preprocess_images,
    resize_shortest_side,
)
from tests.support.golden import case_dirs as golden_case_dirs
from tests.support.golden import read_runs


def pixel_runs() -> list[tuple[Path, str]]:
    out = []
    for case in golden_case_dirs():
        runs = read_runs(case)["runs"]
        out += [(case, name) for name, run in runs.items()
                if run.get("mode") in ("image", "video") and isinstance(run.get("input"), str)]
    return out


def _load_expected(case: Path, name: str, run: dict, runs: dict) -> torch.Tensor | None:
    """The run's pixel_values, or those of a run with the same input and preprocessing (the
    golden format stores a tensor once when several runs share it)."""
    from safetensors import safe_open

    same = [name] + [n for n, r in runs.items() if n != name and all(
        r.get(k) == run.get(k) for k in ("input", "preprocess", "image_size"))]
    with safe_open(str(case / "outputs.safetensors"), framework="pt") as f:
        keys = set(f.keys())
        for n in same:
            if f"{n}.pixel_values" in keys:
                return f.get_tensor(f"{n}.pixel_values")
    return None


def test_golden_cases_found():
    assert any(c.name == "tiny-224-video" for c in golden_case_dirs())
    assert len(pixel_runs()) >= 5


@pytest.mark.parametrize("case,name", pixel_runs(), ids=lambda v: v.name if isinstance(v, Path) else v)
def test_golden_pixel_parity(case: Path, name: str):
    meta = read_runs(case)
    run = meta["runs"][name]
    expected = _load_expected(case, name, run, meta["runs"])
    if expected is None:
        pytest.skip(f"{case.name}/{name}: no pixel_values stored for this input")
    with np.load(case / "inputs.npz", allow_pickle=False) as npz:
        raw = npz[run["input"]]
    images = raw if run["mode"] == "video" else [raw]
    got = preprocess_images(images, image_size=run["image_size"], mode=run["preprocess"])
    assert got.dtype == torch.float32 and got.shape == expected.shape
    tol = meta.get("tolerance", {}).get("pixel_values", 1e-6)
    assert (got - expected).abs().max().item() <= tol


def _reference_arithmetic(image: np.ndarray, size: int) -> np.ndarray:
    """Straight transcription of 4.31's resize / center_crop / rescale / normalize (no lookup table)."""
    h, w = image.shape[:2]
    short, long = (w, h) if w <= h else (h, w)
    if short != size:
        new_long = int(size * long / short)
        new_h, new_w = (new_long, size) if w <= h else (size, new_long)
        image = np.array(Image.fromarray(image).resize((new_w, new_h), resample=Image.BICUBIC))
    h, w = image.shape[:2]
    top, left = (h - size) // 2, (w - size) // 2
    image = image[top:top + size, left:left + size]
    scaled = (image * (1 / 255)).astype(np.float32)
    mean, std = np.array(CLIP_MEAN, dtype=np.float32), np.array(CLIP_STD, dtype=np.float32)
    return ((scaled - mean) / std).transpose(2, 0, 1)


@pytest.mark.parametrize("shape,size", [((200, 300, 3), 224), ((301, 199, 3), 224), ((100, 150, 3), 224),
                                        ((224, 500, 3), 224), ((1080, 1920, 3), 224), ((480, 640, 3), 336),
                                        ((7, 9, 3), 5)])
def test_bit_identical_to_plain_arithmetic(shape, size):
    image = np.random.default_rng(sum(shape) + size).integers(0, 256, shape, dtype=np.uint8)
    got = preprocess_images([image], image_size=size)[0].numpy()
    assert np.array_equal(got, _reference_arithmetic(image, size))


def test_resize_shortest_side_rounding():
    assert resize_shortest_side(200, 300, 224) == (224, 336)
    assert resize_shortest_side(360, 640, 224) == (224, 398)  # 398.22 floors
    assert resize_shortest_side(640, 360, 224) == (398, 224)
    assert resize_shortest_side(224, 500, 224) == (224, 500)  # short side already S: untouched
    assert resize_shortest_side(300, 300, 224) == (224, 224)


def test_expand_to_square_layout():
    wide = np.full((2, 6, 3), 7, dtype=np.uint8)
    sq = expand_to_square(wide)
    assert sq.shape == (6, 6, 3) and PAD_COLOR == (122, 116, 104)
    assert (sq[2:4] == 7).all() and (sq[:2] == PAD_COLOR).all() and (sq[4:] == PAD_COLOR).all()
    tall = np.full((5, 2, 3), 9, dtype=np.uint8)
    sq = expand_to_square(tall)  # offset (5 - 2) // 2 = 1
    assert sq.shape == (5, 5, 3) and (sq[:, 1:3] == 9).all()
    assert (sq[:, :1] == PAD_COLOR).all() and (sq[:, 3:] == PAD_COLOR).all()
    square = np.zeros((4, 4, 3), dtype=np.uint8)
    assert expand_to_square(square) is square
    pil = expand_to_square(Image.fromarray(wide))
    assert isinstance(pil, Image.Image) and pil.size == (6, 6)
    assert np.array_equal(np.asarray(pil), expand_to_square(wide))


def test_pad_mode_equals_manual_pad_then_crop():
    image = np.random.default_rng(0).integers(0, 256, (120, 250, 3), dtype=np.uint8)
    padded = preprocess_images([image], mode="pad")
    assert torch.equal(padded, preprocess_images([expand_to_square(image)], mode="crop"))
    assert not torch.equal(padded, preprocess_images([image], mode="crop"))


def test_input_forms_agree():
    video = np.random.default_rng(1).integers(0, 256, (3, 60, 80, 3), dtype=np.uint8)
    batch = preprocess_images(video, image_size=32)
    assert batch.shape == (3, 3, 32, 32) and batch.dtype == torch.float32
    assert torch.equal(batch, preprocess_images(list(video), image_size=32))
    assert torch.equal(batch, preprocess_images([Image.fromarray(f) for f in video], image_size=32))
    assert torch.equal(batch[1:2], preprocess_images(video[1], image_size=32))
    out = torch.empty(3, 32, 32)
    assert preprocess_frame(video[2], 32, out=out) is out and torch.equal(out, batch[2])
    assert preprocess_images([], image_size=32).shape == (0, 3, 32, 32)


def test_pil_modes_are_converted_to_rgb():
    rgb = np.random.default_rng(2).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    rgba = Image.fromarray(rgb).convert("RGBA")
    gray = Image.fromarray(rgb).convert("L")
    assert torch.equal(preprocess_images([rgba], 32), preprocess_images([rgb], 32))
    assert torch.equal(preprocess_images([gray], 32), preprocess_images([np.asarray(gray.convert("RGB"))], 32))


@pytest.mark.parametrize("bad,match", [
    (np.zeros((10, 10, 3), dtype=np.float32), "uint8"),
    (np.zeros((10, 10, 4), dtype=np.uint8), "HxWx3"),
    (np.zeros((10, 10), dtype=np.uint8), "HxWx3"),
    (np.zeros((0, 10, 3), dtype=np.uint8), "non-empty"),
])
def test_bad_images_raise(bad, match):
    with pytest.raises(ValueError, match=match):
        preprocess_images([bad])


def test_bad_arguments_raise():
    img = np.zeros((10, 10, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="'squash'.*crop"):
        preprocess_images([img], mode="squash")
    with pytest.raises(ValueError, match="image_size"):
        preprocess_images([img], image_size=0)
    with pytest.raises(ValueError, match="TxHxWx3"):
        preprocess_images(np.zeros((1, 2, 10, 10, 3), dtype=np.uint8))
    with pytest.raises(TypeError, match="torch.Tensor"):
        preprocess_images(torch.zeros(10, 10, 3, dtype=torch.uint8))
    with pytest.raises(TypeError, match="PIL"):
        preprocess_images(["not an image"])
    with pytest.raises(ValueError, match="shape"):
        preprocess_frame(img, 8, out=torch.empty(3, 9, 9))


def clip_processor():
    """Today's transformers CLIPImageProcessor (PIL backend) at 224 px; skips the test if it cannot be built."""
    try:
        from transformers import CLIPImageProcessor
        return CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224},
                                  resample=3, image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD))
    except Exception as exc:  # pragma: no cover - depends on the installed extras
        pytest.skip(f"CLIPImageProcessor unavailable: {exc}")


def test_matches_transformers_clip_processor():
    """Cross-check against today's transformers (PIL backend); skipped if it cannot be built."""
    proc = clip_processor()
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, s, dtype=np.uint8) for s in [(200, 300, 3), (333, 251, 3), (90, 120, 3)]]
    for image in images:
        theirs = torch.as_tensor(np.asarray(proc(images=image, return_tensors="np")["pixel_values"]))
        assert (preprocess_images([image]) - theirs).abs().max().item() <= 1e-6


def test_1080p_frame_into_a_preallocated_row_matches_transformers():
    """The indexer's path (one full-HD frame into a row of a preallocated batch). Its speed is a
    ``llamavid bench`` figure (stage ``preprocess``), not a test: timings depend on the machine's load."""
    frame = np.random.default_rng(4).integers(0, 256, (1080, 1920, 3), dtype=np.uint8)
    rows = torch.full((2, 3, 224, 224), float("nan"))
    preprocess_frame(frame, out=rows[1])
    theirs = torch.as_tensor(np.asarray(clip_processor()(images=frame, return_tensors="np")["pixel_values"]))[0]
    assert (rows[1] - theirs).abs().max().item() <= 1e-6
    assert rows[0].isnan().all()  # the other row is untouched


def test_a_frame_kept_as_its_crop_preprocesses_to_exactly_the_same_pixels():
    """Clips keep each frame's uint8 crop until they are preprocessed together (a quarter of the memory)."""
    from llamavid.media.preprocess import crop_frame, preprocess_frame, preprocess_images

    frame = (np.random.default_rng(3).random((240, 320, 3)) * 255).astype(np.uint8)
    crop = crop_frame(frame, 224)
    assert crop.shape == (224, 224, 3) and crop.flags["C_CONTIGUOUS"] and not np.shares_memory(crop, frame)
    torch.testing.assert_close(preprocess_images([crop], 224, mode="crop")[0], preprocess_frame(frame, 224),
                               rtol=0, atol=0)
