"""Split a LLaMA-VID checkpoint for llama.cpp: the LLM as GGUF, the vision side as safetensors.

llama.cpp has no LLaMA-VID projector and no video input, but it can take embeddings in place of
tokens. So the LLM goes to GGUF (f32 / f16 written here tensor by tensor, so a 7B model never
sits in memory twice; q8_0 / q4_K_M through llama.cpp's own quantizer) and EVA, the Q-Former and
the projectors are stored next to it in fp16 for torch to run. The output folder is a model
folder like any other: ``LlamaVid.load`` opens it with the llama.cpp backend.

A conversion is a :class:`ConversionPlan` of files written one after the other, each under a
``.part`` name renamed once complete: its disk space is known before anything is written
(:func:`plan_conversion`), and a conversion stopped half way (Ctrl-C, a closed window, a full
disk) goes on from the files already complete when run again; a ``.part`` is never taken for a
file, and the folder only becomes a model when its last files (``gguf.json``, then ``config.json``)
are written. The f16 file the quantizer reads is kept under ``.convert/`` when not asked for, and
deleted at the end. :func:`run_conversion` runs a plan in a worker thread so that Ctrl-C (or
SIGTERM made into it) stops waiting at once, even inside llama.cpp's quantizer.
"""
from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
import sentencepiece as spm
import torch
from safetensors.torch import save_file

from llamavid.files import (
    CONFIG,
    EVA_FILE,
    QFORMER_CONFIG,
    TOKENIZER_FILES,
    VISION_FILE,
    VOCAB_FILE,
    find_part,
    gguf_name,
    weight_index,
)
from llamavid.model.config import LlamaVidConfig
from llamavid.model.loading import LLM_PREFIXES, load_llamavid, read_checkpoint
from llamavid.runtime.llamacpp import llama_cpp_lib, quiet_logs
from llamavid.runtime.llm_choice import MARKER, conversion_files, estimate_conversion, read_marker
from llamavid.storage import free_bytes, write_json_atomic

QUANT_TYPES = ("f32", "f16", "q8_0", "q4_K_M")
COPIED = (QFORMER_CONFIG, VOCAB_FILE, *TOKENIZER_FILES)  # then gguf.json, then config.json: the folder is a model
WORK = ".convert"  # the intermediate f16 file and the job's description, while a conversion is unfinished
JOB = "job.json"
LAYER_NAMES = {
    "input_layernorm.weight": "attn_norm.weight", "post_attention_layernorm.weight": "ffn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight", "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight", "self_attn.o_proj.weight": "attn_output.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
TOP_NAMES = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}


def tensor_name(key: str) -> str:
    """The GGUF name of an LLM tensor (``model.layers.3.mlp.up_proj.weight`` -> ``blk.3.ffn_up.weight``)."""
    if key in TOP_NAMES:
        return TOP_NAMES[key]
    parts = key.split(".")  # model.layers.{i}.<rest>
    return f"blk.{parts[2]}.{LAYER_NAMES['.'.join(parts[3:])]}"


def permute_qk(w: torch.Tensor, heads: int) -> torch.Tensor:
    """HF stores q/k rows for rotate-half RoPE; llama.cpp expects interleaved pairs."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def llm_tensors(state: dict[str, torch.Tensor], config, dtype: np.dtype) -> Iterator[tuple[str, np.ndarray]]:
    """GGUF name and array of every LLM tensor; 1-D tensors (norms) stay float32 as llama.cpp wants."""
    kv_heads = config.num_key_value_heads or config.num_attention_heads
    for key in sorted(k for k in state if k.startswith(LLM_PREFIXES) and not k.endswith("inv_freq")):
        w = state[key].float()
        if key.endswith("q_proj.weight"):
            w = permute_qk(w, config.num_attention_heads)
        elif key.endswith("k_proj.weight"):
            w = permute_qk(w, kv_heads)
        yield tensor_name(key), w.numpy().astype(np.float32 if w.ndim == 1 else dtype)


def add_tokenizer(writer, folder: Path, vocab_size: int) -> None:
    """The SentencePiece vocabulary, so llama.cpp can load the file and print tokens."""
    sp = spm.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))
    tokens, scores, types = [], [], []
    for i in range(vocab_size):
        if i < sp.get_piece_size():
            tokens.append(sp.id_to_piece(i).encode("utf-8"))
            scores.append(sp.get_score(i))
            kind = (gguf.TokenType.UNKNOWN if sp.is_unknown(i) else gguf.TokenType.CONTROL if sp.is_control(i)
                    else gguf.TokenType.BYTE if sp.is_byte(i) else gguf.TokenType.UNUSED if sp.is_unused(i)
                    else gguf.TokenType.NORMAL)
        else:  # embedding rows beyond the tokenizer (added tokens)
            tokens.append(f"[PAD{i}]".encode())
            scores.append(-1000.0)
            kind = gguf.TokenType.USER_DEFINED
        types.append(kind)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(sp.bos_id())
    writer.add_eos_token_id(sp.eos_id())
    writer.add_unk_token_id(sp.unk_id())
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)


def add_hparams(writer, config, name: str, file_type: int) -> None:
    rope, factor = config.rope_parameters or {}, config.rope_factor
    head_dim = config.hidden_size // config.num_attention_heads
    writer.add_name(name)
    writer.add_context_length(config.context_length)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_rope_dimension_count(head_dim)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads or config.num_attention_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(float(rope.get("rope_theta", 10000.0)))
    if factor != 1.0:
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(factor)
    writer.add_file_type(file_type)


def write_gguf(state: dict[str, torch.Tensor], config, tokenizer_folder: Path, out: Path, ftype: str,
               progress: Callable[[str], None] | None = None) -> Path:
    """Stream the LLM into ``out`` (f32 or f16): tensor infos first, then one tensor at a time."""
    dtype = np.float32 if ftype == "f32" else np.float16
    file_type = gguf.LlamaFileType.ALL_F32 if ftype == "f32" else gguf.LlamaFileType.MOSTLY_F16
    tmp = out.with_suffix(out.suffix + ".part")
    writer = gguf.GGUFWriter(str(tmp), "llama")
    add_hparams(writer, config, out.stem, int(file_type))
    add_tokenizer(writer, tokenizer_folder, config.vocab_size)
    for name, array in llm_tensors(state, config, dtype):
        writer.add_tensor_info(name, array.shape, array.dtype, array.nbytes)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for name, array in llm_tensors(state, config, dtype):
        if progress:
            progress(name)
        writer.write_tensor_data(array)
    writer.close()
    tmp.replace(out)
    return out


def quantize_gguf(source: Path, out: Path, ftype: str, threads: int = 0) -> Path:
    """q8_0 / q4_K_M with llama.cpp's quantizer (the same code ``llama-quantize`` runs)."""
    llama_cpp = llama_cpp_lib()
    quiet_logs()
    kinds = {"q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0, "q4_K_M": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M}
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = kinds[ftype]
    params.nthread = threads
    tmp = out.with_suffix(out.suffix + ".part")
    if llama_cpp.llama_model_quantize(str(source).encode(), str(tmp).encode(), params) != 0:
        raise RuntimeError(f"llama.cpp could not quantize {source} to {ftype}")
    tmp.replace(out)
    return out


def write_vision(folder: Path, out: Path, eva_file: Path | None, search_dirs) -> Path:
    """Everything but the LLM, in fp16, under the checkpoint's names (EVA fitted to the image size)."""
    model, _ = load_llamavid(folder, eva_file=eva_file, search_dirs=search_dirs, llm=False)
    tensors = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()
               if not k.startswith(LLM_PREFIXES) and v.is_floating_point() and not v.is_meta}
    save_file(tensors, str(out / (VISION_FILE + ".part")))
    (out / (VISION_FILE + ".part")).replace(out / VISION_FILE)
    return out / VISION_FILE


def part(path: Path) -> Path:
    """The name a file is written under until it is complete."""
    return path.with_suffix(path.suffix + ".part")


@dataclass(frozen=True)
class Step:
    """One file of a conversion: ``kind`` (a GGUF type, or ``vision``), where it goes, its size
    (estimated until written) and whether it stays (False: the quantizer's input, deleted at the end)."""

    kind: str
    path: Path
    size: int
    kept: bool

    @property
    def done(self) -> bool:
        """Complete: only a finished file is renamed to :attr:`path`."""
        return self.path.is_file()

    def on_disk(self) -> int:
        """Bytes of this file on disk now: the whole file once renamed, else its ``.part``."""
        for path in (self.path, part(self.path)):
            try:
                return path.stat().st_size
            except OSError:
                continue
        return 0


@dataclass(frozen=True)
class ConversionPlan:
    """What converting ``source`` into ``out`` writes (:func:`plan_conversion`)."""

    source: Path
    out: Path
    types: tuple[str, ...]
    steps: tuple[Step, ...]
    job: dict
    stale: bool  # ``out`` holds an unfinished or finished conversion of something else: it starts again
    eva_file: Path | None = None
    search_dirs: tuple[Path, ...] = ()

    @property
    def total(self) -> int:
        """Bytes of every file, as complete files weigh and the others are estimated."""
        return sum(s.path.stat().st_size if s.done and not self.stale else s.size for s in self.steps)

    @property
    def present(self) -> int:
        """Bytes of the files already complete (kept from an earlier run)."""
        return 0 if self.stale else sum(s.path.stat().st_size for s in self.steps if s.done)

    @property
    def final(self) -> int:
        """Bytes the conversion takes once done (the quantizer's input deleted)."""
        return sum(s.size for s in self.steps if s.kept)

    @property
    def needed(self) -> int:
        """Disk still to be written at the peak (the quantizer's input included)."""
        return sum(s.size for s in self.steps if self.stale or not s.done)

    @property
    def complete(self) -> bool:
        return not self.stale and all(s.done for s in self.steps) and read_marker(self.out) is not None

    def free(self) -> int:
        return free_bytes(self.out)

    def on_disk(self) -> int:
        """Bytes written so far (complete files and the ``.part`` under way): the progress."""
        return sum(s.on_disk() for s in self.steps)

    def kept(self) -> int:
        """Bytes a stop keeps: the complete files, from which the next run goes on."""
        return sum(s.path.stat().st_size for s in self.steps if s.done)

    def discard_partial(self) -> None:
        """Delete the ``.part`` files: a file under way is written again from its start next time."""
        for step in self.steps:
            part(step.path).unlink(missing_ok=True)


def _source_job(folder: Path, types: tuple[str, ...]) -> dict:
    """What a conversion is of: the checkpoint, its weight files' sizes and the types; a folder
    holding another job's files starts again instead of mixing them."""
    weights = {name: (folder / name).stat().st_size for name in weight_index(folder)[2] if (folder / name).is_file()}
    return {"source": str(folder.resolve()), "weights": weights, "types": sorted(types)}


def plan_conversion(folder: str | Path, out: str | Path, types: tuple[str, ...] = ("q4_K_M",),
                    eva_file: Path | None = None, search_dirs=()) -> ConversionPlan:
    """The files converting checkpoint ``folder`` into ``out`` writes, their sizes, and which are
    already complete from an earlier run of the same job (nothing is written here)."""
    folder, out = Path(folder), Path(out)
    bad = [t for t in types if t not in QUANT_TYPES]
    if bad:
        raise ValueError(f"unknown GGUF type {bad[0]!r}: choose from {', '.join(QUANT_TYPES)}")
    if not types:
        raise ValueError(f"no GGUF type asked for: choose from {', '.join(QUANT_TYPES)}")
    if not (folder / "tokenizer.model").is_file():
        raise FileNotFoundError(f"{folder}: no tokenizer.model; GGUF export needs the checkpoint's LLaMA tokenizer")
    eva = find_part(EVA_FILE, folder, eva_file, search_dirs)
    sizes = estimate_conversion(folder, tuple(types), eva.stat().st_size if eva else 0)
    steps = tuple(Step(kind, out / VISION_FILE if kind == "vision" else (out if kept else out / WORK) / gguf_name(kind),
                       sizes[kind], kept) for kind, kept in conversion_files(tuple(types)))
    job = _source_job(folder, tuple(types))
    earlier = _read_json(out / WORK / JOB) or read_marker(out)
    stale = earlier is not None and {k: earlier.get(k) for k in ("source", "weights")} != \
        {k: job[k] for k in ("source", "weights")}
    return ConversionPlan(folder, out, tuple(types), steps, job, stale, eva_file, tuple(Path(d) for d in search_dirs))


def _read_json(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _start(plan: ConversionPlan) -> None:
    """Make the folder ready: another job's files (and a finished folder's model files) go, the
    ``.part`` files of a stopped run go, the job is written down."""
    out = plan.out
    if plan.stale or not plan.complete:
        for name in (CONFIG, MARKER):  # not a model until this run finishes
            (out / name).unlink(missing_ok=True)
    if plan.stale:
        shutil.rmtree(out / WORK, ignore_errors=True)
        for step in plan.steps:
            step.path.unlink(missing_ok=True)
        for old in out.glob("llm-*.gguf"):
            old.unlink()
    plan.discard_partial()
    (out / WORK).mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / WORK / JOB, plan.job)


def execute(plan: ConversionPlan, progress: Callable[[str], None] | None = None) -> list[Path]:
    """Write the files of ``plan`` not complete yet, then the tokenizer files, ``gguf.json`` and
    ``config.json``; the intermediate f16 file and the job go. Returns the files kept."""
    _start(plan)
    source, out = plan.source, plan.out
    config = LlamaVidConfig.from_file(source / CONFIG)
    state: dict[str, torch.Tensor] | None = None
    base = plan.steps[0]
    for step in plan.steps:
        if step.done:
            continue
        if step.kind == "vision":
            write_vision(source, out, plan.eva_file, plan.search_dirs)
        elif step.kind.startswith("q"):
            quantize_gguf(base.path, step.path, step.kind)
        else:
            if state is None:  # read once, only when a file of the LLM is still to be written
                state = {k: v for k, v in read_checkpoint(source).items() if k.startswith(LLM_PREFIXES)}
            write_gguf(state, config, source, step.path, step.kind, progress)
    for name in COPIED:
        if (source / name).is_file():
            shutil.copy(source / name, out / name)
    kept = [s.path for s in plan.steps if s.kept]
    write_json_atomic(out / MARKER, {"source": plan.job["source"], "weights": plan.job["weights"],
                                     "files": [p.name for p in kept]})
    shutil.copy(source / CONFIG, out / (CONFIG + ".part"))
    (out / (CONFIG + ".part")).replace(out / CONFIG)
    shutil.rmtree(out / WORK, ignore_errors=True)
    return kept


def run_conversion(plan: ConversionPlan, tick: Callable[[int], None] | None = None, poll: float = 0.25,
                   progress: Callable[[str], None] | None = None) -> list[Path]:
    """:func:`execute` in a worker thread, ``tick(bytes on disk)`` every ``poll`` seconds. A
    KeyboardInterrupt in this thread (Ctrl-C; SIGTERM where a handler raises it) stops the wait at
    once, even inside llama.cpp's quantizer: the ``.part`` files are deleted and it goes up; the
    worker is left to the process's exit (the caller exits)."""
    outcome: dict[str, object] = {}

    def work() -> None:
        try:
            outcome["files"] = execute(plan, progress)
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            outcome["error"] = exc

    worker = threading.Thread(target=work, name="gguf-convert", daemon=True)
    worker.start()
    try:
        while worker.is_alive():
            worker.join(poll)
            if tick is not None:
                tick(plan.on_disk())
    except KeyboardInterrupt:
        plan.discard_partial()
        raise
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["files"]  # type: ignore[return-value]


def convert(folder: str | Path, out: str | Path, types: tuple[str, ...] = ("f16", "q8_0", "q4_K_M"),
            eva_file: Path | None = None, search_dirs=(), progress: Callable[[str], None] | None = None) -> list[Path]:
    """Write ``<out>/llm-<type>.gguf`` for each type plus the vision side and tokenizer files (going
    on from the files an interrupted run completed); returns the files kept."""
    return execute(plan_conversion(folder, out, types, eva_file, search_dirs), progress)
