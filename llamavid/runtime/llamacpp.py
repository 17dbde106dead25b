"""The llama.cpp LLM backend: GGUF weights, visual tokens fed as embedding batches.

Text between ``<image>`` placeholders goes in as token batches, visual rows as embedding batches
at the following positions (llama.cpp's ``llama_batch.embd``), so a CPU or Apple laptop runs
the 4-bit LLM at llama.cpp speed while EVA and the Q-Former stay in torch. Sampling is the
project's own (``generate.decode_loop``), so both backends choose tokens the same way.
"""
from __future__ import annotations

import ctypes
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from llamavid.errors import MemoryInUse
from llamavid.files import gguf_files, gguf_name
from llamavid.runtime.backend import PrefillHook, Snapshot, restore_session, take_snapshot
from llamavid.runtime.generate import SamplingOptions, Session, Step, decode_loop, make_generator
from llamavid.runtime.kv_size import BYTES_PER_VALUE, QUANT_BLOCK, kv_bytes_per_token, llamacpp_kv_type
from llamavid.runtime.memory import Estimate, activation_bytes, available_memory, require_free, total_memory

KV_TYPES = ("f16", "q8_0", "q4_0", "f32")  # and "auto": kv_size.llamacpp_kv_type's choice for the model


def quiet_logs() -> None:
    """llama.cpp logs every tensor it loads to stderr; keep errors only unless LLAMAVID_LLAMA_LOG is set."""
    if not os.environ.get("LLAMAVID_LLAMA_LOG"):
        logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)


def llama_cpp_lib():
    """The llama-cpp-python module, imported on first use: it is a native build, and a broken one
    must not take the transformers backend (which imports this module) down with it."""
    import llama_cpp

    return llama_cpp


def context_params(kv_type: str, n_ctx: int, n_batch: int, threads: int, head_dim: int):
    """llama.cpp context parameters for a cache of ``kv_type``: the one rule for every llama.cpp model
    of the project (LLaMA-VID's LLM, Qwen3-VL). A quantized cache stores rows in blocks of 32 (a
    ValueError names another head size) and its V needs flash attention; an f32 one keeps flash
    attention off (on a CPU it rounds Q, K and V to f16)."""
    if kv_type.startswith("q") and head_dim % QUANT_BLOCK:
        raise ValueError(f"a {kv_type} KV cache needs a head size divisible by {QUANT_BLOCK} (this model: "
                         f"{head_dim}); use --kv-type f16")
    lib = llama_cpp_lib()
    params = lib.llama_context_default_params()
    params.n_ctx, params.n_batch, params.n_ubatch = n_ctx, n_batch, n_batch
    params.n_threads = params.n_threads_batch = threads
    params.type_k = params.type_v = {"f32": lib.GGML_TYPE_F32, "f16": lib.GGML_TYPE_F16, "q8_0": lib.GGML_TYPE_Q8_0,
                                     "q4_0": lib.GGML_TYPE_Q4_0}[kv_type]
    if kv_type.startswith("q"):
        params.flash_attn_type = lib.LLAMA_FLASH_ATTN_TYPE_ENABLED
    elif kv_type == "f32":
        params.flash_attn_type = lib.LLAMA_FLASH_ATTN_TYPE_DISABLED
    return params


def gguf_head_dim(model) -> int:
    """The attention head size of a loaded GGUF model: its ``<arch>.attention.key_length`` where the
    file says it (Qwen3's heads are 128 wide whatever its width over its heads), else width / heads."""
    lib = llama_cpp_lib()
    buffer = ctypes.create_string_buffer(128)
    if lib.llama_model_meta_val_str(model, b"general.architecture", buffer, len(buffer)) > 0:
        key = buffer.value + b".attention.key_length"
        if lib.llama_model_meta_val_str(model, key, buffer, len(buffer)) > 0 and buffer.value.isdigit():
            return int(buffer.value)
    return lib.llama_model_n_embd(model) // max(1, lib.llama_model_n_head(model))


def free_context_and_model(holder: object) -> None:
    """Free a holder's llama.cpp ``ctx``, then its ``model`` (each once; either may be missing, as
    after a failed load), for every llama.cpp holder of the project."""
    lib = llama_cpp_lib()
    if getattr(holder, "ctx", None):
        lib.llama_free(holder.ctx)
        holder.ctx = None
    if getattr(holder, "model", None):
        lib.llama_model_free(holder.model)
        holder.model = None


class LlamaCppBackend:
    """One llama.cpp context serving one conversation at a time (sequence 0)."""

    name = "llama.cpp"

    def __init__(self, gguf: str | Path, n_ctx: int | None = None, kv_type: str = "f16",
                 n_gpu_layers: int | None = None, threads: int | None = None, n_batch: int = 512):
        lib = llama_cpp_lib()
        if kv_type not in (*KV_TYPES, "auto"):
            raise ValueError(f"KV cache type must be one of auto, {', '.join(KV_TYPES)}, got {kv_type!r}")
        self.path = Path(gguf)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: GGUF file not found (llamavid models convert-gguf writes it)")
        quiet_logs()
        lib.llama_backend_init()
        mparams = lib.llama_model_default_params()
        offload = 999 if lib.llama_supports_gpu_offload() else 0
        mparams.n_gpu_layers = offload if n_gpu_layers is None else n_gpu_layers
        self.model = lib.llama_model_load_from_file(str(self.path).encode(), mparams)
        if not self.model:
            raise ValueError(f"{self.path}: llama.cpp could not load this GGUF file "
                             "(corrupt or from a newer llama.cpp)")
        self.n_embd = lib.llama_model_n_embd(self.model)
        self.n_vocab = lib.llama_vocab_n_tokens(lib.llama_model_get_vocab(self.model))
        # "auto": the one rule the size estimates follow too (q8_0 where the head size allows it)
        self.kv_type = llamacpp_kv_type(kv_type, self.n_embd // max(1, lib.llama_model_n_head(self.model)))
        self.n_batch = n_batch
        self.threads = threads or max(1, min(8, (os.cpu_count() or 2)))
        self.n_ctx = n_ctx or self.fitting_context()  # the context asked for (llama.cpp may pad it)
        self.ctx = self._context(self.n_ctx)
        self.owner: Session | None = None

    def kv_bytes_per_token(self) -> float:
        return kv_bytes_per_token(_GgufShape(self), BYTES_PER_VALUE[self.kv_type])

    def trained_context(self) -> int:
        return int(llama_cpp_lib().llama_model_n_ctx_train(self.model))

    def weights_bytes(self) -> int:
        return self.path.stat().st_size

    def total_memory(self) -> int:
        return total_memory(torch.device("cpu"))

    def free_memory(self) -> int:
        return available_memory(torch.device("cpu"))

    def fitting_context(self, floor: int = 2048) -> int:
        """The context to create when none is asked for: the model's trained length (64K for the
        long-video model, enough for a subtitled film) as far as its KV cache fits in half of the
        memory left beside the weights; in steps of 256, never under ``floor``. A library film and
        a kept conversation do not use it: they bring their own context (:meth:`use_context`)."""
        trained = self.trained_context()
        budget = 0.5 * max(0, self.free_memory() - self.weights_bytes())
        fits = int(budget // self.kv_bytes_per_token()) // 256 * 256
        return max(min(trained, floor), min(trained, fits))

    def _context(self, n_ctx: int):
        lib = llama_cpp_lib()
        params = context_params(self.kv_type, n_ctx, self.n_batch, self.threads,
                                self.n_embd // max(1, lib.llama_model_n_head(self.model)))
        ctx = lib.llama_init_from_model(self.model, params)
        if not ctx:
            raise MemoryError(f"llama.cpp could not create a {n_ctx}-token {self.kv_type} context; use a smaller "
                              "context or KV type (set LLAMAVID_LLAMA_LOG=1 to see llama.cpp's reason)")
        return ctx

    def use_context(self, n_ctx: int) -> None:
        """Run an ``n_ctx``-token context from now on: a film's plan, a kept conversation's context.
        The current one is kept when it is that size; else it is freed and the new one made, once
        the memory free now (with the current context's) holds it; if not,
        :class:`~llamavid.errors.MemoryInUse` says what to free and the current context stays.
        Whatever conversation the old context served must be saved first (its cache is lost)."""
        if self.ctx and self.n_ctx == n_ctx:
            return
        per_token = self.kv_bytes_per_token()
        held = int(self.context_length() * per_token) if self.ctx else 0
        require_free(int(n_ctx * per_token), self.free_memory() + held,
                     f"this conversation's {n_ctx}-token context")
        lib = llama_cpp_lib()
        old = self.n_ctx
        if self.ctx:
            lib.llama_free(self.ctx)
            self.ctx, self.owner = None, None
        try:
            self.ctx, self.n_ctx = self._context(n_ctx), n_ctx
        except MemoryError as exc:
            self.ctx = self._context(old)  # what served before serves on
            raise MemoryInUse(f"this conversation's {n_ctx}-token context could not be made ({exc}): close other "
                              "programs to free memory and ask again; nothing was lost") from exc

    def close(self) -> None:
        free_context_and_model(self)

    def __del__(self) -> None:  # contexts hold large buffers: free them with the backend
        try:
            self.close()
        except Exception:
            pass

    def context_length(self) -> int:
        return int(llama_cpp_lib().llama_n_ctx(self.ctx))

    def new_state(self) -> Session:
        lib = llama_cpp_lib()
        lib.llama_memory_clear(lib.llama_get_memory(self.ctx), True)
        self.owner = Session(cache=None)
        return self.owner

    def preflight(self, state: Session, new_tokens: int, answer_tokens: int = 0) -> Estimate:
        """The KV of this turn and its answer budget (the context's buffers are allocated, but the
        live part is counted once), one batch's activations over the whole conversation."""
        tokens = new_tokens + answer_tokens
        kv = int(tokens * self.kv_bytes_per_token())
        return Estimate(self.path.stat().st_size, kv, activation_bytes(_GgufShape(self), state.length + tokens, 4),
                        available_memory(torch.device("cpu")), tokens, weights_loaded=True)

    def _check_owner(self, state: Session) -> None:
        if state is not self.owner:
            raise RuntimeError("this llama.cpp context now serves another conversation; start a new chat")

    def _prefill(self, state: Session, input_ids: Sequence[int], slots: Sequence[torch.Tensor],
                 on_prefill: PrefillHook | None) -> torch.Tensor | None:
        self._check_owner(state)
        state.seen_ids.extend(i for i in input_ids if i >= 0)
        pieces = self._pieces(list(state.pending) + list(input_ids), slots)
        state.pending = []
        total = sum(len(p) for p in pieces)
        logits, done = None, 0
        for piece in pieces:
            report = (lambda n, before=done: on_prefill(before + n, total)) if on_prefill else None
            logits = self._decode(state, piece, report)
            done += len(piece)
        return logits

    def generate(self, state: Session, input_ids: Sequence[int], slots: Sequence[torch.Tensor],
                 options: SamplingOptions, on_prefill: PrefillHook | None = None) -> Iterator[Step]:
        logits = self._prefill(state, input_ids, slots, on_prefill)
        return decode_loop(logits, lambda t: self._decode(state, [t]), options, state, make_generator(options))

    def feed(self, state: Session, input_ids: Sequence[int], slots: Sequence[torch.Tensor] = (),
             on_prefill: PrefillHook | None = None) -> None:
        self._prefill(state, input_ids, slots, on_prefill)

    def snapshot(self, state: Session) -> Snapshot:
        return take_snapshot(state)

    def rollback(self, state: Session, snap: Snapshot) -> None:
        """Remove the positions a failed turn added from sequence 0 (``llama_memory_seq_rm``)."""
        self._check_owner(state)
        lib = llama_cpp_lib()
        if state.length > snap.length:
            lib.llama_memory_seq_rm(lib.llama_get_memory(self.ctx), 0, snap.length, -1)
        restore_session(state, snap)

    def cache_size(self, state: Session) -> int:
        """The bytes :meth:`export_cache_into` needs for sequence 0 (``llama_state_seq_get_size``)."""
        self._check_owner(state)
        lib = llama_cpp_lib()
        return lib.llama_state_seq_get_size(self.ctx, 0)

    def export_cache_into(self, state: Session, dst: memoryview) -> int:
        """Serialize sequence 0's KV cache straight into ``dst`` (a memory-mapped state file), so an
        hour's 2 GB cache is never copied into anonymous memory beside the one llama.cpp holds;
        returns the bytes written."""
        self._check_owner(state)
        lib = llama_cpp_lib()
        target = (ctypes.c_uint8 * dst.nbytes).from_buffer(dst)
        try:
            return lib.llama_state_seq_get_data(self.ctx, target, dst.nbytes, 0)
        finally:
            del target  # the mapping it points into can only be closed once no view of it is left

    def export_cache(self, state: Session) -> bytes:
        """Sequence 0's KV cache as bytes (what :meth:`export_cache_into` writes)."""
        buffer = bytearray(self.cache_size(state))
        with memoryview(buffer) as view:
            written = self.export_cache_into(state, view)
        return bytes(buffer[:written])

    def import_cache(self, state: Session, data, length: int) -> None:
        """Fill sequence 0 from saved bytes: any buffer, a read-only one copied, a writable one (the
        private mapping of a state file) read in place."""
        self._check_owner(state)
        lib = llama_cpp_lib()
        memory = lib.llama_get_memory(self.ctx)
        lib.llama_memory_seq_rm(memory, 0, 0, -1)
        view = memoryview(data)
        source = (ctypes.c_uint8 * view.nbytes).from_buffer_copy(view) if view.readonly else \
            (ctypes.c_uint8 * view.nbytes).from_buffer(view)
        try:
            accepted = not view.nbytes or lib.llama_state_seq_set_data(self.ctx, source, view.nbytes, 0) != 0
        finally:
            del source
            view.release()
        if not accepted:
            lib.llama_memory_seq_rm(memory, 0, 0, -1)
            raise ValueError("llama.cpp refused the saved cache (another model, KV type or context size?)")
        state.length = length

    @staticmethod
    def _pieces(ids: list[int], slots: Sequence[torch.Tensor]) -> list[list[int] | np.ndarray]:
        """Token runs and embedding blocks in prompt order; adjacent placeholders make one block (a
        film's 7,200 one-row slots are read in full batches, not one row per llama_decode)."""
        pieces: list[list[int] | list[np.ndarray]] = []
        run: list[int] = []
        slot_iter = iter(slots)
        for token in ids:
            if token >= 0:
                run.append(token)
                continue
            if run:
                pieces.append(run)
                run = []
            rows = next(slot_iter, None)
            if rows is None:
                raise ValueError("more <image> placeholders than visual inputs")
            block = rows.detach().to("cpu", torch.float32).reshape(-1, rows.shape[-1]).numpy()
            if pieces and isinstance(pieces[-1][0], np.ndarray):
                pieces[-1].append(block)
            else:
                pieces.append([block])
        if run:
            pieces.append(run)
        return [np.concatenate(p) if isinstance(p[0], np.ndarray) else p for p in pieces]

    def _decode(self, state: Session, piece: list[int] | np.ndarray,
                after_batch: Callable[[int], None] | None = None) -> torch.Tensor:
        """Feed a token run or embedding block in batches; logits of its last position.

        ``after_batch(done)`` follows each batch (a cancel raised there stops between batches)."""
        count = len(piece)
        for start in range(0, count, self.n_batch):
            part = piece[start:start + self.n_batch]
            self._batch(state.length, part, last=start + len(part) == count)
            state.length += len(part)
            if after_batch is not None:
                after_batch(start + len(part))
        ptr = llama_cpp_lib().llama_get_logits_ith(self.ctx, -1)
        return torch.from_numpy(np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).copy())

    def _batch(self, pos0: int, part, last: bool) -> None:
        lib = llama_cpp_lib()
        n = len(part)
        if n + pos0 > self.context_length():
            raise ValueError(f"the conversation needs more than the {self.context_length()}-token context")
        embd = isinstance(part, np.ndarray)
        batch = lib.llama_batch_init(n, self.n_embd if embd else 0, 1)
        try:
            if embd:
                rows = np.ascontiguousarray(part, dtype=np.float32)
                if rows.shape[1] != self.n_embd:
                    raise ValueError(f"visual tokens have width {rows.shape[1]}, the GGUF model {self.n_embd}")
                ctypes.memmove(batch.embd, rows.ctypes.data, rows.nbytes)
            for i in range(n):
                if not embd:
                    batch.token[i] = int(part[i])
                batch.pos[i] = pos0 + i
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = 0
                batch.logits[i] = int(last and i == n - 1)
            batch.n_tokens = n
            if lib.llama_decode(self.ctx, batch) != 0:
                raise RuntimeError("llama.cpp failed to decode a batch (context full or out of memory)")
        finally:
            lib.llama_batch_free(batch)


class _GgufShape:
    """The few sizes the memory estimate needs, read from the loaded GGUF model."""

    def __init__(self, backend: LlamaCppBackend):
        lib = llama_cpp_lib()
        m = backend.model
        self.num_hidden_layers = lib.llama_model_n_layer(m)
        self.num_attention_heads = lib.llama_model_n_head(m)
        self.hidden_size = backend.n_embd
        self.head_dim = backend.n_embd // max(1, self.num_attention_heads)
        self.num_key_value_heads = lib.llama_model_n_head_kv(m)
        self.kv_width = self.num_key_value_heads * self.head_dim
        self.intermediate_size = 4 * backend.n_embd
        self.vocab_size = backend.n_vocab


def find_gguf(folder: Path, quant: str | None = None) -> Path:
    """The GGUF file of a converted folder: the requested type, else the smallest present."""
    files = gguf_files(folder)
    if quant:
        files = [p for p in files if p.name == gguf_name(quant)]
    if not files:
        raise FileNotFoundError(f"{folder}: no llm-{quant or '*'}.gguf; run `llamavid models convert-gguf` first")
    return files[0]
