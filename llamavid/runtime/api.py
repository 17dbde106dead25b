"""The public Python API: one object that the CLI, the indexer, the apps and the tests share.

    from llamavid import LlamaVid
    lv = LlamaVid.load("path/to/llama-vid-7b-full-224-video-fps-1")
    print(lv.ask("What happens in this clip?", video=frames))          # frames: (T, H, W, 3) uint8
    for piece in lv.stream("Describe it.", images=[image]):             # streamed text
        print(piece, end="")

The steps are public too, for callers that cache between them (the indexer stores EVA features;
a chat keeps visual tokens): ``preprocess`` -> ``encode`` -> ``visual_tokens`` -> ``tokenize``
-> ``embed`` -> ``generate``.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import AutoTokenizer

from llamavid.errors import CheckpointError
from llamavid.files import EVA_FILE, TOKENIZER_FILES, find_part
from llamavid.media.load import load_image, load_video
from llamavid.media.preprocess import crop_frame, preprocess_images
from llamavid.model.eva import EvaVisionTower
from llamavid.model.layout import drop_cls
from llamavid.model.loading import LoadReport, load_llamavid, place
from llamavid.model.modeling import LlamaVidForCausalLM, VisualTokens
from llamavid.model.qformer import load_qformer_tokenizer, tokenize_prompts
from llamavid.model.quantize_llm import quantize_llm
from llamavid.prompt.builders import tokenizer_image_token
from llamavid.prompt.templates import default_template_for
from llamavid.runtime.backend import TransformersBackend
from llamavid.runtime.chat import Chat, ordinal, plan_video_stride
from llamavid.runtime.control import Rates
from llamavid.runtime.device import pick_device, pick_dtype
from llamavid.runtime.generate import SamplingOptions, Step
from llamavid.runtime.inputs import Visual
from llamavid.runtime.llamacpp import LlamaCppBackend, find_gguf
from llamavid.runtime.vision_engines import VisionEngines, ready_eva, ready_qformer


@dataclass
class Prepared:
    """A prompt ready for an LLM backend: ids with -200 placeholders and the rows for them."""

    text: str
    input_ids: list[int]
    slots: list[torch.Tensor]
    model: LlamaVidForCausalLM

    @property
    def embeds(self) -> torch.Tensor:
        """(1, L', H) spliced embeddings, for the transformers LLM."""
        with torch.inference_mode():
            return self.model.embed_inputs(self.input_ids, self.slots)


class LlamaVid:
    """A loaded model with its tokenizers, preprocessing and LLM backend."""

    def __init__(self, model: LlamaVidForCausalLM, tokenizer: Any, qformer_tokenizer: Any, report: LoadReport,
                 backend: Any = None, vision_engines: VisionEngines | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.qformer_tokenizer = qformer_tokenizer
        self.report = report
        self.template = default_template_for(model.config)
        self.backend = backend or TransformersBackend(model)
        self.rates = Rates()  # Q-Former frames/s and prefill tokens/s measured here, for estimates
        self.vision_engines = vision_engines  # None: EVA and the Q-Former run as loaded (float32 on a CPU)
        self.search_dirs: list[Path] = []  # shared folders the parts were looked for in (attach_vision)

    @classmethod
    def load(cls, model: str | Path, *, device: str | torch.device | None = "auto", dtype: Any = "auto",
             vision: str | Path | None = None, vocab: str | Path | None = None,
             search_dirs: Iterable[Path] = (), load_vision: bool = True,
             attn_implementation: str = "sdpa", bits: int | None = None, backend: str = "transformers",
             gguf_type: str | None = None, kv_type: str = "f16", n_ctx: int | None = None,
             threads: int | None = None, base: str | Path | None = None,
             vision_engine: str | VisionEngines | None = None) -> LlamaVid:
        """Load a checkpoint folder in the released layout (see :func:`llamavid.model.loading.load_llamavid`).

        ``bits`` 4 or 8 quantizes the LLM's decoder layers with bitsandbytes; the weights are
        read on the CPU and each layer moves to the device already quantized.
        ``base`` is the Vicuna folder a stage-1 ``*-pretrain-*`` projector checkpoint builds on.
        ``backend="llama.cpp"`` takes a folder written by ``llamavid models convert-gguf``: the
        LLM runs from its GGUF file (``gguf_type`` picks f16/q8_0/q4_K_M, ``kv_type`` the cache
        type) and only the vision side is loaded in torch.
        ``vision_engine`` picks how EVA and the Q-Former run on a CPU (:mod:`llamavid.runtime.vision_engines`):
        a setting such as ``"auto"`` or ``"int8"``, or a :class:`VisionEngines`; None runs them as loaded.
        """
        if backend not in ("transformers", "llama.cpp"):
            raise ValueError(f"backend must be 'transformers' or 'llama.cpp', got {backend!r}")
        dev = pick_device(device)
        dt = pick_dtype(dtype, dev)
        cpp = backend == "llama.cpp"
        net, report = load_llamavid(model, device="cpu" if bits else dev, dtype=dt, eva_file=vision,
                                    vocab_file=vocab, search_dirs=search_dirs, load_vision=load_vision,
                                    attn_implementation=attn_implementation, llm=not cpp, base=base)
        if bits and not cpp:
            quantize_llm(net, bits, compute_dtype=dt, device=dev)
            net = place(net, dev)
        if report.vocab_file is None:
            raise CheckpointError(f"{model}: no Q-Former vocabulary: put bert_vocab.txt (bert-base-uncased "
                                  "vocab.txt) in the folder or a shared models folder, or pass vocab=PATH")
        engine = None
        if cpp:
            engine = LlamaCppBackend(find_gguf(Path(model), gguf_type), n_ctx=n_ctx, kv_type=kv_type, threads=threads)
        tokenizer = load_llm_tokenizer(Path(model)) or (load_llm_tokenizer(Path(base)) if base else None)
        engines = VisionEngines(vision_engine) if isinstance(vision_engine, str) else vision_engine
        lv = cls(net, tokenizer, load_qformer_tokenizer(report.vocab_file), report, engine, engines)
        lv.search_dirs = [Path(d) for d in search_dirs]
        return lv

    @property
    def config(self):
        return self.model.config

    @property
    def device(self) -> torch.device:
        return self.model.model.vlm_att_query.device

    @property
    def image_size(self) -> int:
        return self.config.image_size

    def preprocess(self, images: Any, mode: str | None = None) -> torch.Tensor:
        """Pixels for EVA (in :attr:`image_mode` unless told)."""
        mode = mode or self.image_mode
        return preprocess_images(images, self.image_size, mode=mode)

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        ready_eva(self, pixels)
        return self.model.encode_images(pixels.to(self.device))

    def visual_tokens(self, features: Any, prompts: Sequence[str], keep_parts: bool = False,
                      on_block: Callable[[int, int], None] | None = None) -> VisualTokens:
        """Q-Former tokens for each prompt; ``on_block(done, total)`` follows every block of frames."""
        ids, mask = tokenize_prompts(self.qformer_tokenizer, list(prompts))
        ready_qformer(self, features, ids, mask)
        with torch.inference_mode():
            return self.model.visual_tokens(features, ids, mask, keep_parts=keep_parts, on_block=on_block)

    def tokenize(self, text: str) -> list[int]:
        if self.tokenizer is None:
            raise CheckpointError(f"{self.report.folder}: no LLaMA tokenizer (tokenizer.model) in the "
                                  "checkpoint folder")
        return tokenizer_image_token(text, self.tokenizer)

    def sampling(self, options: SamplingOptions | None = None) -> SamplingOptions:
        """Options with this tokenizer's end-of-sequence id as the stop token."""
        opts = options or SamplingOptions()
        if self.tokenizer is not None and self.tokenizer.eos_token_id is not None and opts.stop_ids == (2,):
            opts.stop_ids = (self.tokenizer.eos_token_id,)
        return opts

    def generate(self, prepared: Prepared, options: SamplingOptions | None = None,
                 state: Any = None) -> Iterator[Step]:
        """Tokens for a prepared prompt from the LLM backend (a fresh conversation if no state)."""
        state = state if state is not None else self.backend.new_state()
        return self.backend.generate(state, prepared.input_ids, prepared.slots, self.sampling(options))

    def decode(self, steps: Iterable[Step]) -> Iterator[str]:
        """Text pieces as tokens arrive (decoding the whole answer each time keeps spaces right)."""
        ids: list[int] = []
        shown = text = ""
        stops = {self.tokenizer.eos_token_id} if self.tokenizer is not None else set()
        for step in steps:
            if step.token in stops:
                break
            ids.append(step.token)
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            if len(text) > len(shown) and not text.endswith("\ufffd"):  # wait for a whole character
                yield text[len(shown):]
                shown = text
        if len(text) > len(shown):
            yield text[len(shown):]

    def visual(self, *, images: Sequence[Any] | None = None, video: Any = None, features: Any = None,
               frame_times: Sequence[float] | None = None, subtitles: Sequence[Any] = (), fps: float = 1.0,
               max_frames: int | None = 180, answer_tokens: int = 512,
               check: Callable[[], None] | None = None) -> Visual:
        """Encode one kind of visual input (or none) once; a chat reuses it every turn.

        ``images`` are RGB arrays, PIL images, or files and encoded pictures, which are decoded one at
        a time straight to a few times the model's size (:func:`llamavid.media.load.load_image`).
        ``check`` is called between pictures and decoded frames: it raises to stop the work.
        ``video`` is a file (sampled at ``fps``, at most ``max_frames`` spread evenly), (T, H, W, 3)
        uint8 frames or preprocessed pixels. When its tokens would not leave ``answer_tokens`` of
        the context free, every k-th frame is kept and ``Visual.notes`` says so. Film ``features``
        are fitted by the chat itself, which measures the subtitles too.
        """
        if sum(x is not None for x in (images, video, features)) > 1:
            raise ValueError("give images, a video or film features, not several at once")
        if features is not None:
            times = list(frame_times) if frame_times is not None else [float(i) for i in range(len(features))]
            if len(times) != len(features):
                raise ValueError(f"{len(times)} frame times for {len(features)} frames of features")
            return Visual("film", drop_cls(features), times, list(subtitles))
        if video is not None:
            return self._video(video, frame_times, fps, max_frames, answer_tokens, check)
        if images is not None:
            return Visual("image", self.encode(self.preprocess([self._picture(i, check) for i in images])))
        return Visual("none")

    def _picture(self, image: Any, check: Callable[[], None] | None) -> Any:
        if check is not None:
            check()
        if isinstance(image, (np.ndarray, Image.Image)):
            return image
        return load_image(image, self.image_size, self.image_mode)

    @property
    def image_mode(self) -> str:
        """Pictures are padded to square when the checkpoint was trained so; frames never are."""
        return "pad" if self.config.image_aspect_ratio == "pad" else "crop"

    def _video(self, video: Any, frame_times: Sequence[float] | None, fps: float, max_frames: int | None,
               answer_tokens: int, check: Callable[[], None] | None = None) -> Visual:
        if isinstance(video, (str, Path)):
            crops, times = load_video(video, fps, max_frames, check=check,
                                      transform=lambda f: crop_frame(f, self.image_size))
            video = preprocess_images(crops, self.image_size, mode="crop")  # exact: the crops are S x S
            del crops
        else:
            video = video if torch.is_tensor(video) else np.asarray(video)
            times = list(frame_times) if frame_times is not None else [float(i) / fps for i in range(len(video))]
        notes = []
        stride = plan_video_stride(self, len(video), max_new_tokens=answer_tokens)
        if stride > 1:
            notes.append(f"{len(video)} frames do not fit the context; using every {ordinal(stride)}")
            video, times = video[::stride], times[::stride]
        pixels = video if torch.is_tensor(video) else self.preprocess(video, mode="crop")
        return Visual("video", self.encode(pixels), times, notes=notes)

    def attach_vision(self) -> None:
        """Give a model loaded without EVA (``load_vision=False``: films come with cached features)
        its vision tower, for a question about an image or a clip. The weights are found as loading
        finds them (the checkpoint folder, then the shared folders it was loaded with); the tower
        runs where the model runs, in its dtype. Does nothing when the tower is there already."""
        inner = self.model.model
        if inner.vision_tower is not None:
            return
        path = find_part(EVA_FILE, self.report.folder, None, self.search_dirs)
        if path is None:
            fetch = f"`llamavid models pull` fetches them into {self.search_dirs[0]}, or " if self.search_dirs else ""
            raise CheckpointError(f"no vision weights ({EVA_FILE}) for images and videos: {fetch}put the file in "
                                  f"{self.report.folder}")
        anchor = inner.vlm_att_query
        inner.vision_tower = EvaVisionTower.from_file(path, image_size=self.image_size, device=anchor.device,
                                                      dtype=anchor.dtype)
        self.config.mm_vision_tower = EVA_FILE

    def chat(self, **inputs: Any) -> Chat:
        """A multi-turn conversation about ``images``, a ``video`` or film ``features``."""
        return Chat(self, self.visual(**inputs))

    def prepare(self, question: str, **inputs: Any) -> Prepared:
        """The first-turn prompt for a question, without running the LLM."""
        text, slots, _ = Chat(self, self.visual(**inputs)).turn_text(question)
        return Prepared(text, self.tokenize(text), slots, self.model)

    def stream(self, question: str, options: SamplingOptions | None = None, **inputs: Any) -> Iterator[str]:
        """Answer one question, text piece by piece."""
        return self.chat(**inputs).ask(question, options)

    def ask(self, question: str, options: SamplingOptions | None = None, **inputs: Any) -> str:
        return "".join(self.stream(question, options, **inputs))


def load_llm_tokenizer(folder: Path):
    """The checkpoint's LLaMA tokenizer, from its own files only (never a hub)."""
    if not any((folder / n).is_file() for n in TOKENIZER_FILES[:2]):  # tokenizer.model / .json
        return None
    try:
        with warnings.catch_warnings():  # released configs use the old rope_scaling spelling
            warnings.simplefilter("ignore", FutureWarning)
            return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as exc:  # protobuf/sentencepiece missing or a broken file
        raise CheckpointError(f"{folder}: cannot load the LLaMA tokenizer ({exc}); "
                              "check tokenizer.model and that sentencepiece and protobuf are installed") from exc
