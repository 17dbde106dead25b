"""The scene model: one image-text embedding per sampled frame, and the same model's text side for a
question or a description, so "the scene on the beach at night" can be compared with every frame.

The model is CLIP ViT-B/32 at 224 px (``clip-vit-b-32`` in :mod:`llamavid.hub.catalog`, run with
transformers' CLIP classes). Why this one rather than a SigLIP: its image side is the cheapest of the
family (50 tokens of width 768, about 2 % of what EVA-ViT-g costs a frame), its input is CLIP's own
preprocessing, which is exactly what the indexer already gives EVA (:func:`llamavid.media.decode.prepare_frame`),
its vectors are 512 wide (1 KB a frame in fp16: 3.7 MB per film hour), and its text side is causal: a
ten-word question is read as ten tokens (SigLIP pads every text to 64), which keeps a question's scene
evidence within milliseconds on a CPU.

Each half is built from the checkpoint's config and loads only its own weights (``vision_model.*`` and
``visual_projection``, or ``text_model.*`` and ``text_projection``): the indexer never holds the text
side, the chat never the image side. Vectors are L2-normalised, so a dot product is the cosine.

Nothing here downloads: a model that is not installed is a :class:`~llamavid.errors.UserError` saying
what to pull (``llamavid models pull clip-vit-b-32``), as for the speech models.
"""
from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from transformers import (
    CLIPConfig,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    CLIPVisionModelWithProjection,
)

from llamavid.errors import UserError
from llamavid.files import CONFIG, SINGLE_FILES
from llamavid.fingerprint import fingerprint
from llamavid.hub.installed import missing_scene_files, resolve_model
from llamavid.media.preprocess import CLIP_MEAN, CLIP_STD
from llamavid.runtime.device import pick_device, pick_dtype

DEFAULT_SCENE_MODEL = "clip-vit-b-32"
PREPROCESSOR = "preprocessor_config.json"
_PULL = f"`llamavid models pull {DEFAULT_SCENE_MODEL}`"


def scene_model_folder(name: str | Path, data_root: Path) -> Path:
    """The folder of a scene model: an installed or registered name, or a folder path. Raises
    UserError (what to pull) when it is not there or not usable; never downloads."""
    try:
        folder = resolve_model(str(name), data_root)
    except UserError as exc:
        raise UserError(f"scene model {str(name)!r}: {exc}") from exc
    missing = missing_scene_files(folder)
    if missing:
        raise UserError(f"scene model {folder} is not a CLIP model folder (no {', '.join(missing)}); "
                        f"install one with {_PULL}")
    return folder


def installed_scene_model(data_root: Path, name: str | Path = DEFAULT_SCENE_MODEL) -> Path | None:
    """The scene model's folder if it is installed and usable, else None (nothing is said: the
    scene stage and the scene evidence are optional)."""
    try:
        return scene_model_folder(name, data_root)
    except UserError:
        return None


def _weights_file(folder: Path) -> Path:
    return next(folder / f for f in SINGLE_FILES if (folder / f).is_file())


def scene_model_id(folder: Path) -> str:
    """Which model made a film's vectors: its weights' fingerprint (a copy or a new name of the same
    weights is the same model). Vectors of another model are not comparable with this one's texts:
    the film's are made again."""
    return f"clip:{fingerprint(_weights_file(Path(folder)))}"


def _config(folder: Path) -> CLIPConfig:
    try:
        return CLIPConfig.from_pretrained(folder)
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(f"scene model {folder}: its {CONFIG} is not a CLIP config ({exc}); "
                        f"install one with {_PULL}") from exc


def _load_half(model: torch.nn.Module, folder: Path, prefixes: tuple[str, ...]) -> None:
    """Load the checkpoint's tensors under ``prefixes`` into ``model`` (the other half is never read
    into memory: safetensors reads by name, a .bin is memory-mapped)."""
    path = _weights_file(folder)
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            state = {k: fh.get_tensor(k) for k in fh.keys() if k.startswith(prefixes)}  # noqa: SIM118
    else:
        try:
            full = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
        except RuntimeError:  # an old, non-zip checkpoint cannot be mapped: read whole (605 MB once)
            full = torch.load(path, map_location="cpu", weights_only=True)
        state = {k: v for k, v in full.items() if k.startswith(prefixes)}
    missing, _unexpected = model.load_state_dict(state, strict=False)  # unexpected: old position_ids buffers
    if missing:
        raise UserError(f"scene model {folder}: {path.name} lacks {len(missing)} weights (one: {missing[0]}); "
                        f"pull it again with {_PULL}")


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


class SceneImages:
    """The image side: (B, 3, S, S) pixels, preprocessed as for EVA, into (B, D) unit fp16 vectors."""

    def __init__(self, folder: Path, device: str | None = "auto", dtype: str | None = "auto"):
        self.folder = Path(folder)
        config = _config(self.folder)
        vision = config.vision_config
        vision.projection_dim = config.projection_dim
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        model = CLIPVisionModelWithProjection(vision)
        _load_half(model, self.folder, ("vision_model.", "visual_projection."))
        self.model = model.to(self.device, self.dtype).eval()
        self.image_size = int(vision.image_size)
        self.dim = int(config.projection_dim)
        self.id = scene_model_id(self.folder)
        self._renormalise = _renormalisation(self.folder)

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32))
        if self._renormalise is not None:
            scale, shift = self._renormalise
            x = x * scale + shift
        with torch.inference_mode():
            out = self.model(pixel_values=x.to(self.device, self.dtype)).image_embeds
        return _normalise(out.float()).to(torch.float16).cpu().numpy()


def _renormalisation(folder: Path) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The per-channel (scale, shift) turning CLIP-normalised pixels into what this model's
    preprocessor asks for; None when it asks for CLIP's mean and std (the released CLIP models)."""
    try:
        pre = json.loads((folder / PREPROCESSOR).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    mean = np.asarray(pre.get("image_mean", CLIP_MEAN), np.float64)
    std = np.asarray(pre.get("image_std", CLIP_STD), np.float64)
    if np.allclose(mean, CLIP_MEAN) and np.allclose(std, CLIP_STD):
        return None
    clip_mean, clip_std = np.asarray(CLIP_MEAN), np.asarray(CLIP_STD)
    scale, shift = clip_std / std, (clip_mean - mean) / std
    as_tensor = lambda v: torch.tensor(v, dtype=torch.float32).view(1, 3, 1, 1)  # noqa: E731
    return as_tensor(scale), as_tensor(shift)


class SceneTexts:
    """The text side: texts into (N, D) unit float32 vectors (truncated to the model's 77 tokens).

    A question is a dozen tokens through a 12-layer, 512-wide encoder: too little work to share
    between threads. On this project's 2-core machine, beside a busy LLM, one thread took 33 ms a
    question and two 70 to 160 ms, so the thread count is measured once, at load, on this machine
    (:func:`fastest_threads`), and used for every question."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        config = _config(self.folder)
        text = config.text_config
        text.projection_dim = config.projection_dim
        model = CLIPTextModelWithProjection(text)
        _load_half(model, self.folder, ("text_model.", "text_projection."))
        self.model = model.float().eval()
        self.tokenizer = CLIPTokenizer.from_pretrained(self.folder)
        self.max_tokens = int(text.max_position_embeddings)
        self.dim = int(config.projection_dim)
        self.id = scene_model_id(self.folder)
        self.threads = fastest_threads(lambda: self._encode(["a short question about a scene in the film"]))

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        with torch_threads(self.threads):
            return self._encode(texts)

    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        batch = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_tokens,
                               return_tensors="pt")
        with torch.inference_mode():
            out = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).text_embeds
        return _normalise(out.float()).numpy()


@contextlib.contextmanager
def torch_threads(count: int):
    """torch's intra-op threads set to ``count`` for a block, then put back."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def fastest_threads(work, rounds: int = 3) -> int:
    """One thread or all of torch's, whichever ran ``work`` faster here (the best of ``rounds`` each,
    after one warm-up): a small model can lose more to threads waiting on each other than it gains."""
    choices = sorted({1, torch.get_num_threads()})
    best: dict[int, float] = {}
    for count in choices:
        with torch_threads(count):
            work()
            times = []
            for _ in range(rounds):
                start = time.perf_counter()
                work()
                times.append(time.perf_counter() - start)
        best[count] = min(times)
    return min(choices, key=lambda c: (best[c], c))


_texts: dict[tuple[str, str], SceneTexts] = {}
_texts_lock = threading.Lock()


def text_encoder(folder: Path) -> SceneTexts:
    """The text side of the model in ``folder``, loaded once per process and weights (the chat asks
    every question through it; about a second to load, then milliseconds a question)."""
    key = (str(Path(folder).resolve()), scene_model_id(Path(folder)))
    with _texts_lock:
        if key not in _texts:
            _texts[key] = SceneTexts(Path(folder))
        return _texts[key]


def write_tiny_scene_model(folder: Path, width: int = 32, dim: int = 16, seed: int = 0,
                           full_size: bool = False) -> Path:
    """A tiny CLIP with random weights in the released layout (config.json, model.safetensors, the
    tokenizer and preprocessor files), written here: for tests and benchmarks, nothing downloaded.
    Its vectors are noise; what they exercise is the storage, the search and the plumbing.
    ``full_size``: the shapes of CLIP ViT-B/32 instead (transformers' CLIPConfig defaults: image side
    12 blocks of 768, patch 32; text side 12 blocks of 512; vectors of 512), for timing the real cost."""
    from tokenizers import pre_tokenizers
    from transformers import CLIPImageProcessorPil, CLIPModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):  # one token per byte, within and ending a word
        vocab.setdefault(ch, len(vocab))
        vocab.setdefault(ch + "</w>", len(vocab))
    CLIPTokenizer(vocab=vocab, merges=[]).save_pretrained(folder)
    text = {"vocab_size": len(vocab), "max_position_embeddings": 77, "bos_token_id": 0, "eos_token_id": 1,
            "pad_token_id": 1}
    if full_size:
        config = CLIPConfig(text_config={**text, "vocab_size": 49408, "projection_dim": 512},
                            vision_config={"projection_dim": 512}, projection_dim=512)
    else:
        config = CLIPConfig(
            text_config={**text, "hidden_size": width, "intermediate_size": 2 * width, "num_hidden_layers": 2,
                         "num_attention_heads": 2, "projection_dim": dim},
            vision_config={"hidden_size": width, "intermediate_size": 2 * width, "num_hidden_layers": 2,
                           "num_attention_heads": 2, "image_size": 224, "patch_size": 32, "projection_dim": dim},
            projection_dim=dim)
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(folder)
    CLIPImageProcessorPil(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}).save_pretrained(folder)
    return folder
