"""Split a LLaMA-VID checkpoint for llama.cpp: the LLM as GGUF, the vision side as safetensors.

llama.cpp has no LLaMA-VID projector and no video input, but it can take embeddings in place of
tokens. So the LLM goes to GGUF (f32 / f16 written here tensor by tensor, so a 7B model never
sits in memory twice; q8_0 / q4_K_M through llama.cpp's own quantizer) and EVA, the Q-Former and
the projectors are stored next to it in fp16 for torch to run. The output folder is a model
folder like any other: ``LlamaVid.load`` opens it with the llama.cpp backend.
"""
from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import gguf
import numpy as np
import sentencepiece as spm
import torch
from safetensors.torch import save_file

from llamavid.files import CONFIG, QFORMER_CONFIG, TOKENIZER_FILES, VISION_FILE, VOCAB_FILE, gguf_name
from llamavid.model.config import LlamaVidConfig
from llamavid.model.loading import LLM_PREFIXES, load_llamavid, read_checkpoint
from llamavid.runtime.llamacpp import llama_cpp_lib, quiet_logs

QUANT_TYPES = ("f32", "f16", "q8_0", "q4_K_M")
COPIED = (CONFIG, QFORMER_CONFIG, VOCAB_FILE, *TOKENIZER_FILES)
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


def convert(folder: str | Path, out: str | Path, types: tuple[str, ...] = ("f16", "q8_0", "q4_K_M"),
            eva_file: Path | None = None, search_dirs=(), progress: Callable[[str], None] | None = None) -> list[Path]:
    """Write ``<out>/llm-<type>.gguf`` for each type plus the vision side and tokenizer files."""
    folder, out = Path(folder), Path(out)
    bad = [t for t in types if t not in QUANT_TYPES]
    if bad:
        raise ValueError(f"unknown GGUF type {bad[0]!r}: choose from {', '.join(QUANT_TYPES)}")
    if not (folder / "tokenizer.model").is_file():
        raise FileNotFoundError(f"{folder}: no tokenizer.model; GGUF export needs the checkpoint's LLaMA tokenizer")
    out.mkdir(parents=True, exist_ok=True)
    config = LlamaVidConfig.from_file(folder / CONFIG)
    state = {k: v for k, v in read_checkpoint(folder).items() if k.startswith(LLM_PREFIXES)}
    written: list[Path] = []
    base_type = "f32" if "f32" in types else "f16"
    base = write_gguf(state, config, folder, out / gguf_name(base_type), base_type, progress)
    written.append(base)
    if "f16" in types and base_type == "f32":
        written.append(write_gguf(state, config, folder, out / gguf_name("f16"), "f16", progress))
    for kind in (t for t in types if t.startswith("q")):
        written.append(quantize_gguf(base, out / gguf_name(kind), kind))
    written.append(write_vision(folder, out, eva_file, search_dirs))
    for name in COPIED:
        if (folder / name).is_file():
            shutil.copy(folder / name, out / name)
    (out / "gguf.json").write_text(json.dumps({"source": str(folder), "files": [p.name for p in written]}, indent=2))
    return written
