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

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch

from . import prompts as P
from .conversation import default_template_for
from .device import pick_device, pick_dtype
from .generate import SamplingOptions, Session, Step, stream
from .loading import CheckpointError, LoadReport, load_llamavid
from .modeling import LlamaVidForCausalLM, VisualTokens, split_slots
from .preprocess import preprocess_images
from .qformer import load_qformer_tokenizer, tokenize_prompts


@dataclass
class Prepared:
    """A prompt ready for the LLM: ids (with -200 placeholders) and spliced embeddings."""

    text: str
    input_ids: list[int]
    embeds: torch.Tensor  # (1, L', H)


class LlamaVid:
    """A loaded model with its tokenizers and preprocessing."""

    def __init__(self, model: LlamaVidForCausalLM, tokenizer: Any, qformer_tokenizer: Any, report: LoadReport):
        self.model = model
        self.tokenizer = tokenizer
        self.qformer_tokenizer = qformer_tokenizer
        self.report = report
        self.template = default_template_for(model.config)

    # ------------------------------------------------------------------------------------ loading
    @classmethod
    def load(cls, model: str | Path, *, device: str | torch.device | None = "auto", dtype: Any = "auto",
             vision: str | Path | None = None, vocab: str | Path | None = None,
             search_dirs: Iterable[Path] = (), load_vision: bool = True,
             attn_implementation: str = "sdpa", bits: int | None = None) -> "LlamaVid":
        """Load a checkpoint folder in the released layout (see :func:`llamavid.loading.load_llamavid`).

        ``bits`` 4 or 8 quantizes the LLM's decoder layers with bitsandbytes; the weights are
        read on the CPU and each layer moves to the device already quantized.
        """
        dev = pick_device(device)
        dt = pick_dtype(dtype, dev)
        net, report = load_llamavid(model, device="cpu" if bits else dev, dtype=dt, eva_file=vision,
                                    vocab_file=vocab, search_dirs=search_dirs, load_vision=load_vision,
                                    attn_implementation=attn_implementation)
        if bits:
            from .bnb import quantize_llm
            from .loading import place

            quantize_llm(net, bits, compute_dtype=dt, device=dev)
            net = place(net, dev)
        if report.vocab_file is None:
            raise CheckpointError(f"{model}: no Q-Former vocabulary: put bert_vocab.txt (bert-base-uncased "
                                  "vocab.txt) in the folder or a shared models folder, or pass vocab=PATH")
        return cls(net, load_llm_tokenizer(Path(model)), load_qformer_tokenizer(report.vocab_file), report)

    @property
    def config(self):
        return self.model.config

    @property
    def device(self) -> torch.device:
        return self.model.lm_head.weight.device

    @property
    def image_size(self) -> int:
        return self.config.image_size

    # ------------------------------------------------------------------------------------- steps
    def preprocess(self, images: Any, mode: str | None = None) -> torch.Tensor:
        """Pixels for EVA. Images are padded to square when the checkpoint was trained so; frames never are."""
        mode = mode or ("pad" if self.config.image_aspect_ratio == "pad" else "crop")
        return preprocess_images(images, self.image_size, mode=mode)

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_images(pixels.to(self.device))

    def visual_tokens(self, features: Any, prompts: Sequence[str], keep_parts: bool = False) -> VisualTokens:
        ids, mask = tokenize_prompts(self.qformer_tokenizer, list(prompts))
        with torch.inference_mode():
            return self.model.visual_tokens(features, ids, mask, keep_parts=keep_parts)

    def tokenize(self, text: str) -> list[int]:
        if self.tokenizer is None:
            raise CheckpointError(f"{self.report.folder}: no LLaMA tokenizer (tokenizer.model) in the checkpoint folder")
        return P.tokenizer_image_token(text, self.tokenizer)

    def embed(self, input_ids: Sequence[int], visuals: Sequence[VisualTokens]) -> torch.Tensor:
        """Splice visual tokens into the text at the ``<image>`` placeholders, in order."""
        placeholders = sum(1 for i in input_ids if i == P.IMAGE_TOKEN_INDEX)
        if len(visuals) == 1:
            slots = split_slots(visuals[0].tokens, placeholders)
        else:  # several inputs: one slot per prompt of each, in order
            slots = [row for v in visuals for row in v.tokens]
        with torch.inference_mode():
            return self.model.embed_inputs(list(input_ids), slots)

    def generate(self, embeds: torch.Tensor, options: SamplingOptions | None = None,
                 session: Session | None = None, prompt_ids: Sequence[int] = ()) -> Iterator[Step]:
        opts = options or SamplingOptions()
        if self.tokenizer is not None and self.tokenizer.eos_token_id is not None and opts.stop_ids == (2,):
            opts.stop_ids = (self.tokenizer.eos_token_id,)
        return stream(self.model, embeds, opts, session, prompt_ids)

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

    # ------------------------------------------------------------------------------ one question
    def prepare(self, question: str, *, images: Sequence[Any] | None = None, video: Any = None,
                features: Any = None, frame_times: Sequence[float] | None = None,
                subtitles: Sequence[Any] = (), history: Sequence[tuple[str, str]] = ()) -> Prepared:
        """Build the prompt for exactly one kind of visual input (or none) and embed it."""
        given = [x is not None for x in (images, video, features)]
        if sum(given) > 1:
            raise ValueError("give images, a video or film features, not several at once")
        if features is not None:
            return self._prepare_movie(question, features, frame_times, subtitles)
        if images is None and video is None:
            text = P.image_prompt(question, self.template, history, image_in="none")
            ids = self.tokenize(text)
            return Prepared(text, ids, self.embed(ids, []))
        if video is not None:
            feats = self.encode(self.preprocess(np.asarray(video), mode="crop"))
            visuals = [self.visual_tokens(feats, [question])]
        else:
            feats = self.encode(self.preprocess(list(images)))
            visuals = [self.visual_tokens(feats[i:i + 1], [question]) for i in range(len(feats))]
        text = P.image_prompt(question, self.template, history, image_in="latest")
        marker = P.DEFAULT_IMAGE_TOKEN + "\n"
        text = text.replace(marker, marker * len(visuals), 1)  # several images: one <image> each
        ids = self.tokenize(text)
        return Prepared(text, ids, self.embed(ids, visuals))

    def _prepare_movie(self, question: str, features: Any, frame_times: Sequence[float] | None,
                       subtitles: Sequence[Any]) -> Prepared:
        """Film features (T, 256 or 257, C), one ``<image><image>`` per frame followed by its subtitles."""
        count = len(features)
        times = list(frame_times) if frame_times is not None else [float(i) for i in range(count)]
        if len(times) != count:
            raise ValueError(f"{len(times)} frame times for {count} frames of features")
        per_frame = P.interleave_subtitles(times, list(subtitles))
        text = P.movie_prompt(per_frame, question, template=self.template)
        ids = self.tokenize(text)
        visual = self.visual_tokens(features, [question])
        return Prepared(text, ids, self.embed(ids, [visual]))

    def stream(self, question: str, options: SamplingOptions | None = None, **inputs: Any) -> Iterator[str]:
        """Answer one question, text piece by piece."""
        prepared = self.prepare(question, **inputs)
        return self.decode(self.generate(prepared.embeds, options, prompt_ids=prepared.input_ids))

    def ask(self, question: str, options: SamplingOptions | None = None, **inputs: Any) -> str:
        return "".join(self.stream(question, options, **inputs))


def load_llm_tokenizer(folder: Path):
    """The checkpoint's LLaMA tokenizer, from its own files only (never a hub)."""
    if not any((folder / n).is_file() for n in ("tokenizer.model", "tokenizer.json")):
        return None
    from transformers import AutoTokenizer

    import warnings

    try:
        with warnings.catch_warnings():  # released configs use the old rope_scaling spelling
            warnings.simplefilter("ignore", FutureWarning)
            return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as exc:  # protobuf/sentencepiece missing or a broken file
        raise CheckpointError(f"{folder}: cannot load the LLaMA tokenizer ({exc}); "
                              "check tokenizer.model and that sentencepiece and protobuf are installed") from exc
