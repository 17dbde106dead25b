"""CLIP image preprocessing exactly as the LLaMA-VID reference feeds its vision tower.

The reference runs transformers-4.31 ``CLIPImageProcessor`` (spec 2.4): shortest side to S with PIL
bicubic on the uint8 image, centre crop S x S, ``x * (1/255)`` in float64 rounded to float32, then
``(x - mean) / std`` in float32. Pixel parity (1e-6) depends on every one of those details, so none
is "simplified" here; in particular no ``Image.reduce``/``draft`` shortcut is taken, because they
change the bicubic result.

Speed comes from two exact tricks instead: the rescale+normalise step depends only on the uint8
value and the channel, so it is a 3 x 256 lookup table (bit-identical to doing the arithmetic), and
results are written straight into one preallocated batch tensor.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
from PIL import Image

CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
# expand2square's canvas colour: int(m * 255) per channel, i.e. (122, 116, 104).
PAD_COLOR: tuple[int, int, int] = tuple(int(m * 255) for m in CLIP_MEAN)  # type: ignore[assignment]
MODES = ("crop", "pad")

ImageLike = np.ndarray | Image.Image

_BICUBIC = getattr(Image, "Resampling", Image).BICUBIC


def _build_lut() -> np.ndarray:
    """(3, 256) float32 table of the reference's rescale+normalise for every uint8 value."""
    values = np.arange(256, dtype=np.uint8)
    scaled = (values * (1 / 255)).astype(np.float32)  # float64 product, then float32: as 4.31
    mean = np.asarray(CLIP_MEAN, dtype=np.float32)[:, None]
    std = np.asarray(CLIP_STD, dtype=np.float32)[:, None]
    return ((scaled[None, :] - mean) / std).astype(np.float32)


_LUT = _build_lut()


def _as_rgb_array(image: ImageLike) -> np.ndarray:
    """uint8 HxWx3 view of ``image``; PIL images of any mode are converted to RGB like the reference."""
    if isinstance(image, Image.Image):
        if image.mode != "RGB":
            image = image.convert("RGB")
        return np.asarray(image)
    if not isinstance(image, np.ndarray):
        raise TypeError(f"expected a numpy uint8 HxWx3 array or a PIL image, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 RGB image (HxWx3, values 0..255), got dtype {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB image of shape HxWx3, got shape {tuple(image.shape)}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"expected a non-empty image, got shape {tuple(image.shape)}")
    return image


def expand_to_square(image: ImageLike, color: Sequence[int] = PAD_COLOR) -> ImageLike:
    """LLaVA ``expand2square``: centre the image on a square canvas of side max(w, h).

    Returns the same kind it was given (PIL in, PIL out; array in, array out), and the input itself
    when it is already square, as the reference does.
    """
    if isinstance(image, Image.Image):
        if image.width == image.height:
            return image
        return Image.fromarray(expand_to_square(_as_rgb_array(image), color))
    array = _as_rgb_array(image)
    h, w = array.shape[:2]
    if h == w:
        return array
    side = max(h, w)
    canvas = np.empty((side, side, 3), dtype=np.uint8)
    canvas[...] = np.asarray(tuple(color), dtype=np.uint8)
    top, left = ((w - h) // 2, 0) if w > h else (0, (h - w) // 2)
    canvas[top:top + h, left:left + w] = array
    return canvas


def resize_shortest_side(height: int, width: int, size: int) -> tuple[int, int]:
    """Output (h, w) of 4.31's ``get_resize_output_image_size(default_to_square=False)``.

    The long side is ``int(size * long / short)`` evaluated in Python floats: the same expression
    as the reference, so the rare float-rounding edge cases land on the same integer.
    """
    short, long = (width, height) if width <= height else (height, width)
    if short == size:
        return height, width
    new_long = int(size * long / short)
    return (new_long, size) if width <= height else (size, new_long)


def _resize_crop(array: np.ndarray, size: int) -> np.ndarray:
    """Bicubic shortest-side resize (skipped when already at size) and centre crop; uint8 HxWx3 view."""
    h, w = array.shape[:2]
    new_h, new_w = resize_shortest_side(h, w, size)
    if (new_h, new_w) != (h, w):
        resized = Image.fromarray(array).resize((new_w, new_h), resample=_BICUBIC)
        array = np.asarray(resized)
        h, w = new_h, new_w
    if h < size or w < size:  # only reachable for size changes the reference never makes
        raise ValueError(f"image {h}x{w} is smaller than the {size}x{size} crop")
    top, left = (h - size) // 2, (w - size) // 2
    return array[top:top + size, left:left + size]


def crop_frame(frame: ImageLike, image_size: int = 224) -> np.ndarray:
    """The S x S uint8 centre crop a frame is read from ("crop" mode), as a copy of its own: a clip's
    kept frames cost S*S*3 bytes each until they are preprocessed together (a quarter of the float
    pixels), and preprocessing a crop gives exactly the pixels of preprocessing the frame."""
    _check_args(image_size, "crop")
    return np.ascontiguousarray(_resize_crop(_as_rgb_array(frame), image_size))


def _preprocess_into(image: ImageLike, out: np.ndarray, size: int, mode: str) -> None:
    """Preprocess one image into ``out`` (a float32 (3, S, S) array, typically a batch row)."""
    array = _as_rgb_array(image)
    if mode == "pad":
        array = expand_to_square(array)
    crop = _resize_crop(array, size)
    for c in range(3):
        np.take(_LUT[c], crop[:, :, c], out=out[c], mode="clip")  # uint8 is always in range


def _check_args(image_size: int, mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"unknown preprocessing mode {mode!r}; expected one of {MODES}")
    if not isinstance(image_size, (int, np.integer)) or isinstance(image_size, bool) or image_size <= 0:
        raise ValueError(f"image_size must be a positive int, got {image_size!r}")


def _as_image_list(images: ImageLike | Iterable[ImageLike]) -> list[ImageLike]:
    """Accept a list of images, one TxHxWx3 array, or (for convenience) one image."""
    if isinstance(images, Image.Image):
        return [images]
    if isinstance(images, np.ndarray):
        if images.ndim == 4:
            return list(images)  # views, no copy
        if images.ndim == 3:
            return [images]
        raise ValueError(
            f"expected a TxHxWx3 video array or an HxWx3 image, got shape {tuple(images.shape)}")
    if isinstance(images, torch.Tensor):
        raise TypeError("expected uint8 numpy arrays or PIL images, got a torch.Tensor "
                        "(call .numpy() on an HxWx3 / TxHxWx3 uint8 tensor)")
    return list(images)


def preprocess_images(images: ImageLike | Iterable[ImageLike], image_size: int = 224,
                      mode: str = "crop") -> torch.Tensor:
    """Batch of CLIP-preprocessed images, (N, 3, S, S) float32.

    ``mode="crop"``: shortest-side resize + centre crop (video frames, CLI images);
    ``mode="pad"``: ``expand_to_square`` first (config ``image_aspect_ratio == "pad"`` paths).
    An empty list gives an empty (0, 3, S, S) batch so streaming callers need no special case.
    """
    _check_args(image_size, mode)
    items = _as_image_list(images)
    batch = torch.empty((len(items), 3, image_size, image_size), dtype=torch.float32)
    rows = batch.numpy()
    for i, image in enumerate(items):
        _preprocess_into(image, rows[i], image_size, mode)
    return batch


def preprocess_frame(frame: ImageLike, image_size: int = 224, mode: str = "crop",
                     out: torch.Tensor | None = None) -> torch.Tensor:
    """One image/frame -> (3, S, S) float32; ``out`` lets a streaming indexer fill a preallocated row."""
    _check_args(image_size, mode)
    shape = (3, image_size, image_size)
    if out is None:
        out = torch.empty(shape, dtype=torch.float32)
    elif tuple(out.shape) != shape or out.dtype != torch.float32 or out.device.type != "cpu" \
            or not out.is_contiguous():
        raise ValueError(f"out must be a contiguous CPU float32 tensor of shape {shape}, "
                         f"got {out.dtype} {tuple(out.shape)} on {out.device}")
    _preprocess_into(frame, out.numpy(), image_size, mode)
    return out
