"""Model families: which one a folder holds, and a loaded Qwen3-VL as the chat service uses it.

Two families answer questions about the same library. LLaMA-VID keeps its own path untouched
(:class:`~llamavid.runtime.api.LlamaVid` and :class:`~llamavid.runtime.chat.Chat`: cached EVA
features, the Q-Former, its movie prompt). Qwen3-VL (docs/second-family.md) reads pixels: a
film's frames are decoded when it is asked about, and its prompt is a
:class:`~llamavid.prompt.qwen_vl.QwenPrompt`. :class:`QwenVL` is what the service needs of a loaded
Qwen3-VL on either backend (transformers, or a GGUF + mmproj on llama.cpp): read a prompt after
what the cache holds (with progress and cancel), choose tokens with the project's
:class:`~llamavid.runtime.generate.SamplingOptions`, feed kept token ids back, cut a failed turn
out, and save or restore the cache. :class:`~llamavid.runtime.qwen_chat.QwenChat` holds a
conversation on top of it.

The backend rule is the project's (:func:`llamavid.runtime.llm_choice.prefers_llamacpp`): a folder
with a GGUF and its mmproj runs on llama.cpp where no GPU holds the transformers weights (or where
the folder has nothing else); a transformers folder runs on transformers.
"""
from __future__ import annotations

import ctypes
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from llamavid.errors import UserError
from llamavid.model.qwen_vl import QWEN3_VL, VisionGeometry, is_qwen_vl, mrope_positions
from llamavid.prompt.qwen_vl import QwenPrompt, Text
from llamavid.runtime.control import Control, Rates

__all__ = ["LLAMA_VID", "QWEN_VL", "QwenVL", "family_of", "load_qwen", "qwen_gguf_pair"]

LLAMA_VID, QWEN_VL = "llama-vid", "qwen-vl"
#: A film prompt is read in pieces of this many visual groups: progress and a cancel between them.
PREFILL_GROUPS = 16


def qwen_gguf_pair(folder: Path) -> tuple[Path, Path] | None:
    """(LLM GGUF, mmproj GGUF) of a folder holding a Qwen3-VL in llama.cpp's layout (the published
    ``Qwen/Qwen3-VL-*-Instruct-GGUF`` files: ``mmproj-*.gguf`` beside the LLM), else None. Where
    several LLM files lie beside it, q4_K_M first (the CPU default), then the smallest."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    ggufs = sorted(p for p in folder.glob("*.gguf") if p.is_file())
    mmproj = [p for p in ggufs if p.name.lower().startswith("mmproj")]
    llms = [p for p in ggufs if p not in mmproj]
    if not mmproj or not llms:
        return None
    llm = min(llms, key=lambda p: ("q4_k_m" not in p.name.lower(), p.stat().st_size))
    proj = min(mmproj, key=lambda p: ("f16" not in p.name.lower(), p.stat().st_size))
    return llm, proj


def family_of(folder: Path) -> str:
    """The family a checkpoint folder holds: ``qwen-vl`` (a transformers Qwen3-VL, or a GGUF with its
    mmproj) or ``llama-vid`` (everything else, loaded as before)."""
    return QWEN_VL if is_qwen_vl(folder) or qwen_gguf_pair(folder) is not None else LLAMA_VID


@dataclass(frozen=True)
class Mark:
    """Where the cache stood before a turn (to cut a failed one out)."""

    length: int
    position: int


class QwenVL:
    """A loaded Qwen3-VL on one backend, answering one conversation at a time (see the module docstring)."""

    family = QWEN_VL

    def __init__(self, backend, folder: Path, context: int, rates: Rates | None = None):
        """``backend``: a :class:`~llamavid.runtime.qwen_vl.QwenVLTransformers` or a
        :class:`~llamavid.runtime.qwen_vl_llamacpp.QwenVLLlamaCpp`; ``context``: tokens a conversation may hold."""
        self.backend, self.folder, self.context = backend, Path(folder), context
        self.rates = rates if rates is not None else Rates()
        self.geometry: VisionGeometry = getattr(backend, "geometry", QWEN3_VL)
        self.llamacpp = backend.name == "llama.cpp"
        self.stops = self._stops()

    # -- what it is ------------------------------------------------------------------------------
    @property
    def engine_id(self) -> str:
        """The model as a saved state depends on it: the family, the backend and the weights file."""
        weights = self.backend.path if self.llamacpp else self.folder / "model.safetensors"
        try:
            stat = weights.stat()
            stamp = f"{stat.st_size}-{int(stat.st_mtime)}"
        except OSError:
            stamp = "?"
        return f"{self.family}:{self.backend.name}:{getattr(self.backend, 'kv_type', '')}:{weights.name}:{stamp}"

    def _stops(self) -> tuple[int, ...]:
        if not self.llamacpp:
            return tuple(self.backend.tokens.stop)
        ids = set(self.backend.eos)
        for text in ("<|im_end|>", "<|endoftext|>"):
            found = self.tokenize(text)
            if len(found) == 1:
                ids.add(found[0])
        return tuple(sorted(ids))

    def tokenize(self, text: str) -> list[int]:
        """Token ids of plain text (control tokens in it read as such)."""
        if not self.llamacpp:
            return self.backend.text_ids(text)
        from llamavid.runtime.llamacpp import llama_cpp_lib

        lib, raw = llama_cpp_lib(), text.encode("utf-8")
        out = (ctypes.c_int32 * (len(raw) + 8))()
        n = lib.llama_tokenize(self.backend.vocab, raw, len(raw), out, len(out), False, True)
        if n < 0:
            raise RuntimeError(f"llama_tokenize needs {-n} tokens")
        return list(out[:n])

    def decode(self, ids: Sequence[int]) -> str:
        return self.backend.decode([i for i in ids if i not in self.stops])

    # -- the cache -------------------------------------------------------------------------------
    @property
    def length(self) -> int:
        return int(self.backend.length)

    def mark(self) -> Mark:
        return Mark(int(self.backend.length), int(getattr(self.backend, "position", self.backend.length)))

    def reset(self) -> None:
        self.backend.reset()

    def rollback(self, mark: Mark) -> None:
        """Cut what was read after ``mark`` out of the cache (a failed or cancelled turn)."""
        b = self.backend
        if mark.length == 0:
            b.reset()
            return
        if self.llamacpp:
            from llamavid.runtime.llamacpp import llama_cpp_lib

            lib = llama_cpp_lib()
            lib.llama_memory_seq_rm(lib.llama_get_memory(b.ctx), 0, mark.length, -1)
            b.length = mark.length
            return
        if b.cache is not None and b.length > mark.length:
            b.cache.crop(mark.length - b.length)  # transformers 5: a negative count of tokens to remove
        b.length, b.position = mark.length, mark.position

    def read(self, prompt: QwenPrompt, control: Control | None = None) -> torch.Tensor:
        """Read ``prompt`` after what the cache holds, in pieces of :data:`PREFILL_GROUPS` visual groups
        (progress and a cancel between them); the next token's logits."""
        pieces = _pieces(prompt, PREFILL_GROUPS)
        tracker = control.phase("prefill", len(pieces), "parts") if control is not None and len(pieces) > 1 else None
        logits = None
        for i, piece in enumerate(pieces):
            if control is not None:
                control.check()
            logits = self.backend.prefill(piece)
            if tracker is not None:
                tracker.update(i + 1)
        if tracker is not None:
            tracker.finish()
        return _tensor(logits)

    def step(self, token: int) -> torch.Tensor:
        return _tensor(self.backend.step(token))

    def feed_ids(self, ids: Sequence[int]) -> None:
        """Put kept token ids (an earlier answer) into the cache, as when they were chosen."""
        if not ids:
            return
        if not self.llamacpp:
            from llamavid.runtime.qwen_vl import Encoded

            b = self.backend
            positions, nxt = mrope_positions([len(ids)], start=b.position, index=b.length)
            enc = Encoded(input_ids=torch.tensor([list(ids)], device=b.device),
                          mm_token_type_ids=torch.zeros(1, len(ids), dtype=torch.long, device=b.device),
                          position_ids=positions[:, None, :].to(b.device), next_position=nxt)
            b._forward(enc)
            return
        from llamavid.runtime.llamacpp import llama_cpp_lib

        lib, b = llama_cpp_lib(), self.backend
        for start in range(0, len(ids), b.n_batch):
            part = ids[start:start + b.n_batch]
            batch = lib.llama_batch_init(len(part), 0, 1)
            try:
                batch.n_tokens = len(part)
                for i, token in enumerate(part):
                    batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, b.length + i, 1
                    batch.seq_id[i][0], batch.logits[i] = 0, i == len(part) - 1
                if lib.llama_decode(b.ctx, batch) != 0:
                    raise RuntimeError("llama_decode failed while reading the kept answer")
            finally:
                lib.llama_batch_free(batch)
            b.length += len(part)

    def state_bytes(self) -> bytes:
        return self.backend.state_bytes()

    def load_state(self, data: bytes) -> None:
        self.backend.load_state(data)

    def close(self) -> None:
        if self.llamacpp:
            self.backend.close()


def _tensor(logits) -> torch.Tensor:
    return torch.from_numpy(np.asarray(logits, dtype=np.float32)) if isinstance(logits, np.ndarray) else logits.float()


def _pieces(prompt: QwenPrompt, groups: int) -> list[QwenPrompt]:
    """``prompt`` cut before a text that follows every ``groups``-th visual group: each text run
    stays whole, so both backends tokenize the pieces as they tokenize the whole."""
    pieces, current, seen = [], [], 0
    for part in prompt.merged():
        if isinstance(part, Text) and seen >= groups and current:
            pieces.append(QwenPrompt(current))
            current, seen = [], 0
        current.append(part)
        if not isinstance(part, Text):
            seen += 1
    if current:
        pieces.append(QwenPrompt(current))
    return pieces


def _text_context(folder: Path) -> int:
    """The context the checkpoint was trained to (its text config's ``max_position_embeddings``)."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return 32_768
    text = config.get("text_config", config)
    return int(text.get("max_position_embeddings") or 32_768)


#: Tokens a Qwen conversation holds unless told otherwise: an hour's default plan (about 16.4K visual
#: tokens, 3K of markers, the dialogue) with room for a few turns.
DEFAULT_CONTEXT = 32_768


def load_qwen(folder: Path, backend: str = "auto", device: str = "auto", dtype: str = "auto",
              n_ctx: int | None = None, threads: int | None = None, kv_type: str = "auto",
              gpu_bytes: int | None = None) -> QwenVL:
    """A Qwen3-VL folder loaded on its backend (see the module docstring). ``gpu_bytes``: the total
    memory of the GPU that would hold it (None: none), for the ``auto`` rule."""
    from llamavid.runtime.llm_choice import prefers_llamacpp, weights_bytes

    folder = Path(folder)
    pair = qwen_gguf_pair(folder)
    has_hf = is_qwen_vl(folder)
    if backend == "auto":
        if pair is None:
            backend = "transformers"
        elif not has_hf:
            backend = "llama.cpp"
        else:
            backend = "llama.cpp" if prefers_llamacpp(weights_bytes(folder), gpu_bytes) else "transformers"
    if backend == "llama.cpp":
        if pair is None:
            raise UserError(f"{folder} has no Qwen3-VL GGUF with its mmproj-*.gguf: pull a `-gguf` model "
                            "(`llamavid models list --available`) or use --backend transformers")
        from llamavid.runtime.qwen_vl_llamacpp import QwenVLLlamaCpp

        context = n_ctx or DEFAULT_CONTEXT
        gpu_layers = 999 if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()) else 0
        lc = QwenVLLlamaCpp(pair[0], pair[1], n_ctx=context, threads=threads, n_gpu_layers=gpu_layers,
                            kv_type=kv_type)  # auto: q8_0 where the heads allow it, the rule LLaMA-VID's cache follows
        return QwenVL(lc, folder, int(lc.n_ctx))
    if backend != "transformers":
        raise UserError(f"backend must be auto, transformers or llama.cpp, got {backend!r}")
    if not has_hf:
        raise UserError(f"{folder} holds a Qwen3-VL for llama.cpp only (GGUF files): leave --backend at auto")
    from llamavid.runtime.qwen_vl import QwenVLTransformers

    where = "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)
    types = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    torch_dtype = types.get(dtype, torch.float32 if where == "cpu" else torch.bfloat16)
    hf = QwenVLTransformers(folder, dtype=torch_dtype, device=where)
    return QwenVL(hf, folder, min(n_ctx or _text_context(folder), _text_context(folder)))
