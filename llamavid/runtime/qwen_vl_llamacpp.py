"""The second family on llama.cpp: a GGUF LLM and its mmproj through libmtmd (llama-cpp-python's ``mtmd_cpp``).

The same :class:`~llamavid.prompt.qwen_vl.QwenPrompt` the transformers backend reads goes in as
libmtmd input parts (``mtmd_tokenize_from_parts``): each text run as text, each visual group as
one bitmap (an image) or two adjacent ``mergeable`` bitmaps (a pair of video frames, which libmtmd
merges into one group as Qwen-VL's temporal patch does), so no media marker is parsed from
anyone's text. libmtmd adds ``<|vision_start|>``/``<|vision_end|>`` around each group, runs the
vision tower and decodes the embeddings at M-RoPE positions (``mtmd_helper_eval_chunks``); the
answer is then decoded greedily one token at a time, at the positions after the prompt.

The conversation's state is sequence 0's cache as llama.cpp serializes it
(``llama_state_seq_get_data``) and the next position; a pure-attention model restores it whole.
"""
from __future__ import annotations

import ctypes
import os
from pathlib import Path

import numpy as np

from llamavid.prompt.qwen_vl import Frames, QwenPrompt, Text
from llamavid.runtime.kv_size import llamacpp_kv_type
from llamavid.runtime.llamacpp import (
    context_params,
    free_context_and_model,
    gguf_head_dim,
    llama_cpp_lib,
    quiet_logs,
)

__all__ = ["QwenVLLlamaCpp", "mtmd_lib"]


def mtmd_lib():
    """llama-cpp-python's libmtmd bindings, imported on first use (a native build, as llama_cpp_lib).
    libmtmd logs through llama-cpp-python's own callback, so :func:`quiet_logs` quiets it too."""
    from llama_cpp import _logger, mtmd_cpp

    if not getattr(mtmd_cpp, "_llamavid_logs", False):
        mtmd_cpp.mtmd_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))
        mtmd_cpp.mtmd_helper_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))
        mtmd_cpp._llamavid_logs = True
    return mtmd_cpp


class QwenVLLlamaCpp:
    """A Qwen3-VL GGUF + mmproj on llama.cpp, answering one conversation at a time (sequence 0)."""

    name = "llama.cpp"

    def __init__(self, gguf: str | Path, mmproj: str | Path, n_ctx: int = 4096, n_batch: int = 512,
                 threads: int | None = None, n_gpu_layers: int = 0, kv_type: str = "auto"):
        lib, mtmd = llama_cpp_lib(), mtmd_lib()
        self.path, self.mmproj = Path(gguf), Path(mmproj)
        for f in (self.path, self.mmproj):
            if not f.is_file():
                raise FileNotFoundError(f"{f}: file not found")
        quiet_logs()
        lib.llama_backend_init()
        mparams = lib.llama_model_default_params()
        mparams.n_gpu_layers = n_gpu_layers
        self.model = lib.llama_model_load_from_file(str(self.path).encode(), mparams)
        if not self.model:
            raise ValueError(f"{self.path}: llama.cpp could not load this GGUF file")
        self.vocab = lib.llama_model_get_vocab(self.model)
        self.n_vocab = lib.llama_vocab_n_tokens(self.vocab)
        self.threads = threads or max(1, min(8, os.cpu_count() or 2))
        self.n_batch = n_batch
        # the project's one rule: q8_0 where "auto" and the heads allow it (a film's cache is most of a chat's memory)
        head_dim = gguf_head_dim(self.model)
        self.kv_type = llamacpp_kv_type(kv_type, head_dim)
        params = context_params(self.kv_type, n_ctx, n_batch, self.threads, head_dim)
        self.ctx = lib.llama_init_from_model(self.model, params)
        if not self.ctx:
            raise MemoryError(f"llama.cpp could not create a {n_ctx}-token context")
        self.n_ctx = lib.llama_n_ctx(self.ctx)
        mparams_v = mtmd.mtmd_context_params_default()
        mparams_v.use_gpu = n_gpu_layers > 0
        mparams_v.n_threads = self.threads
        mparams_v.print_timings = False
        mparams_v.warmup = False
        self.mctx = mtmd.mtmd_init_from_file(str(self.mmproj).encode(), self.model, mparams_v)
        if not self.mctx:
            raise ValueError(f"{self.mmproj}: libmtmd could not load this mmproj for {self.path.name}")
        self.length = 0  # the next position (llama.cpp's n_past; M-RoPE positions for this family)
        self.eos = {lib.llama_vocab_eos(self.vocab), lib.llama_vocab_eot(self.vocab)}
        self._batch = lib.llama_batch_init(1, 0, 1)

    def close(self) -> None:
        lib, mtmd = llama_cpp_lib(), mtmd_lib()
        if getattr(self, "_batch", None) is not None:
            lib.llama_batch_free(self._batch)
            self._batch = None
        if getattr(self, "mctx", None):
            mtmd.mtmd_free(self.mctx)
            self.mctx = None
        free_context_and_model(self)

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: the library may be gone
            pass

    # ------------------------------------------------------------------ prompt
    def chunks(self, prompt: QwenPrompt):
        """The prompt as libmtmd input chunks (the caller frees them with ``mtmd_input_chunks_free``)."""
        mtmd = mtmd_lib()
        keep: list = []  # ctypes objects that must outlive the call
        bitmaps: list = []
        parts: list = []
        try:
            for part in prompt.merged():
                if isinstance(part, Text):
                    raw = part.text.encode("utf-8")
                    text = mtmd.mtmd_input_text(text=raw, text_len=len(raw), add_special=False, parse_special=True)
                    keep += [raw, text]
                    parts.append(mtmd.mtmd_input_part(text=ctypes.pointer(text), bitmap=None))
                    continue
                assert isinstance(part, Frames)
                for frame in part.frames:
                    pixels = np.ascontiguousarray(frame, dtype=np.uint8)
                    h, w = pixels.shape[:2]
                    buf = (ctypes.c_uint8 * pixels.size).from_buffer_copy(pixels.tobytes())
                    bitmap = mtmd.mtmd_bitmap_init(w, h, buf)
                    if not bitmap:
                        raise RuntimeError("libmtmd could not make a bitmap")
                    bitmaps.append(bitmap)
                    if part.video:
                        mtmd.mtmd_bitmap_set_mergeable(bitmap, True)
                    parts.append(mtmd.mtmd_input_part(text=None, bitmap=bitmap))
            array = (ctypes.POINTER(mtmd.mtmd_input_part) * len(parts))(*[ctypes.pointer(p) for p in parts])
            chunks = mtmd.mtmd_input_chunks_init()
            res = mtmd.mtmd_tokenize_from_parts(self.mctx, chunks, array, len(parts), False)
            if res != 0:
                mtmd.mtmd_input_chunks_free(chunks)
                raise RuntimeError(f"mtmd_tokenize_from_parts failed ({res})")
            return chunks
        finally:
            for bitmap in bitmaps:
                mtmd.mtmd_bitmap_free(bitmap)

    def prompt_tokens(self, prompt: QwenPrompt) -> list[int | tuple[int, int]]:
        """What libmtmd makes of ``prompt``: text token ids, and ``(tokens, positions)`` per visual group."""
        mtmd = mtmd_lib()
        chunks = self.chunks(prompt)
        try:
            out: list[int | tuple[int, int]] = []
            for i in range(mtmd.mtmd_input_chunks_size(chunks)):
                chunk = mtmd.mtmd_input_chunks_get(chunks, i)
                if mtmd.mtmd_input_chunk_get_type(chunk) == mtmd.MTMD_INPUT_CHUNK_TYPE_TEXT:
                    n = ctypes.c_size_t()
                    ids = mtmd.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(n))
                    out += [int(ids[j]) for j in range(n.value)]
                else:
                    out.append((int(mtmd.mtmd_input_chunk_get_n_tokens(chunk)),
                                int(mtmd.mtmd_input_chunk_get_n_pos(chunk))))
            return out
        finally:
            mtmd.mtmd_input_chunks_free(chunks)

    # ------------------------------------------------------------------ running
    def _logits(self) -> np.ndarray:
        lib = llama_cpp_lib()
        return np.ctypeslib.as_array(lib.llama_get_logits_ith(self.ctx, -1), shape=(self.n_vocab,)).copy()

    def reset(self) -> None:
        lib = llama_cpp_lib()
        lib.llama_memory_clear(lib.llama_get_memory(self.ctx), True)
        self.length = 0

    def prefill(self, prompt: QwenPrompt) -> np.ndarray:
        """Read ``prompt`` after what the cache holds; the logits of the next token."""
        mtmd = mtmd_lib()
        chunks = self.chunks(prompt)
        try:
            new_past = llama_cpp_lib().llama_pos(0)
            res = mtmd.mtmd_helper_eval_chunks(self.mctx, self.ctx, chunks, self.length, 0, self.n_batch, True,
                                               ctypes.byref(new_past))
            if res != 0:
                raise RuntimeError(f"mtmd_helper_eval_chunks failed ({res})")
            self.length = int(new_past.value)
        finally:
            mtmd.mtmd_input_chunks_free(chunks)
        return self._logits()

    def step(self, token: int) -> np.ndarray:
        lib = llama_cpp_lib()
        b = self._batch
        b.n_tokens = 1
        b.token[0], b.pos[0], b.n_seq_id[0], b.logits[0] = token, self.length, 1, 1
        b.seq_id[0][0] = 0
        if lib.llama_decode(self.ctx, b) != 0:
            raise RuntimeError("llama_decode failed")
        self.length += 1
        return self._logits()

    def greedy(self, logits: np.ndarray, max_new_tokens: int, stop: tuple[int, ...] = ()) -> list[int]:
        """Greedy tokens from ``logits`` on, up to a stop token (kept) or ``max_new_tokens``; every token
        chosen goes into the cache."""
        stops = set(stop) | self.eos
        out: list[int] = []
        while len(out) < max_new_tokens:
            token = int(np.argmax(logits))
            out.append(token)
            logits = self.step(token)
            if token in stops:
                break
        return out

    def answer(self, prompt: QwenPrompt, max_new_tokens: int = 32, stop: tuple[int, ...] = ()) -> list[int]:
        self.reset()
        return self.greedy(self.prefill(prompt), max_new_tokens, stop)

    def decode(self, ids: list[int]) -> str:
        lib = llama_cpp_lib()
        out = b""
        buf = ctypes.create_string_buffer(256)
        for token in ids:
            if token in self.eos:
                continue
            n = lib.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, False)
            out += buf.raw[:max(0, n)]
        return out.decode("utf-8", errors="replace")

    # ------------------------------------------------------------------ state
    def state_bytes(self) -> bytes:
        """Sequence 0's cache (``llama_state_seq_get_data``) after an 8-byte next position."""
        lib = llama_cpp_lib()
        size = lib.llama_state_seq_get_size(self.ctx, 0)
        buffer = (ctypes.c_uint8 * size)()
        written = lib.llama_state_seq_get_data(self.ctx, buffer, size, 0)
        if written != size:
            raise RuntimeError(f"llama_state_seq_get_data wrote {written} of {size} bytes")
        return int(self.length).to_bytes(8, "little") + bytes(buffer)

    def load_state(self, data: bytes) -> None:
        lib = llama_cpp_lib()
        length, payload = int.from_bytes(data[:8], "little"), data[8:]
        lib.llama_memory_seq_rm(lib.llama_get_memory(self.ctx), 0, 0, -1)
        buffer = (ctypes.c_uint8 * len(payload)).from_buffer_copy(payload)
        if lib.llama_state_seq_set_data(self.ctx, buffer, len(payload), 0) == 0:
            raise RuntimeError("llama_state_seq_set_data refused the state")
        self.length = length
