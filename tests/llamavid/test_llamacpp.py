"""GGUF export and the llama.cpp backend against the transformers path, on tiny checkpoints.

Tolerance: with an f32 GGUF and an f32 KV cache (flash attention off, which would round to
f16 on the CPU), the two engines compute the same float32 operations in a different summation
order; logits of magnitude ~1 then agree to ~1e-6 (6e-7 seen), so 1e-4 leaves room for other
CPUs' SIMD widths while still catching any real difference (a wrong RoPE layout or a misplaced
visual row moves logits by 1e-2 or more; another image moves them by ~1e-2, checked below).

Quantized files (f16, q8_0, q4_K_M) run on a second tiny model whose weight rows are 256 wide:
llama.cpp's K-quants store 256-value super-blocks, and narrower rows fall back to other types,
so on the 64-wide model "q4_K_M" would never run a K-quant kernel. Each file's tensors are read
back (gguf's GGUFReader), their types checked and their dequantized values compared with the
checkpoint within the rounding of their type; llama.cpp's logits are then compared with
transformers running those same dequantized weights, so what remains is the rounding llama.cpp
applies to activations in its dot products. The bounds are derived from these roundings, and a
corrupted row (or the wrong RoPE row order) must fall outside them.
"""
from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
import torch

from llamavid.runtime.api import LlamaVid
from llamavid.runtime.backend import TransformersBackend
from llamavid.runtime.generate import SamplingOptions
from llamavid.runtime.gguf_export import convert, permute_qk, tensor_name

GREEDY = SamplingOptions(max_new_tokens=6, temperature=0, stop_ids=())
FIRST = SamplingOptions(max_new_tokens=1, temperature=0, stop_ids=())
K_WIDE = dict(heads=4, hidden_size=256, intermediate_size=512)  # head size 64, rows of 256 and 512


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint_2heads):
    """The session's tiny checkpoint with 2 heads of 32 (tests/support/fixtures.py)."""
    return tiny_checkpoint_2heads


@pytest.fixture(scope="module")
def converted(tiny_gguf_2heads):
    """``checkpoint`` converted to GGUF in f32, f16, q8_0 and q4_K_M, once per session."""
    return tiny_gguf_2heads


@pytest.fixture(scope="module")
def engines(checkpoint, converted):
    ref = LlamaVid.load(checkpoint, device="cpu")
    cpp = LlamaVid.load(converted, device="cpu", backend="llama.cpp", gguf_type="f32", kv_type="f32")
    return ref, cpp


@pytest.fixture(scope="module")
def k_checkpoint(tmp_path_factory):
    from llamavid.model.tiny import write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("cpp-k") / "tiny-vid-256", **K_WIDE)


@pytest.fixture(scope="module")
def k_converted(k_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("gguf-k") / "tiny-vid-256-gguf"
    convert(k_checkpoint, out, types=("f32", "f16", "q8_0", "q4_K_M"))
    return out


def inputs(kind: str):
    rng = np.random.default_rng(3)
    image = rng.integers(0, 255, (90, 160, 3), dtype=np.uint8)
    if kind == "image":
        return {"images": [image]}
    if kind == "other image":
        return {"images": [rng.integers(0, 255, (90, 160, 3), dtype=np.uint8)]}
    if kind == "video":
        return {"video": rng.integers(0, 255, (3, 72, 96, 3), dtype=np.uint8)}
    subs = [{"start_time": 0.5, "end_time": 1.4, "text": "Hello captain."},
            {"start_time": 2.2, "end_time": 3.0, "text": "The ship sails at night."}]
    return {"features": rng.standard_normal((4, 256, 176)).astype(np.float16), "frame_times": [0, 1, 2, 3],
            "subtitles": subs}


def test_files_and_metadata(converted, checkpoint):
    import gguf

    names = {p.name for p in converted.iterdir()}
    assert {"llm-f32.gguf", "llm-f16.gguf", "llm-q8_0.gguf", "llm-q4_K_M.gguf", "vision.safetensors",
            "tokenizer.model", "config.json", "bert_vocab.txt"} <= names
    sizes = {k: (converted / f"llm-{k}.gguf").stat().st_size for k in ("f32", "f16", "q4_K_M")}
    assert sizes["f32"] > sizes["f16"] > sizes["q4_K_M"]
    reader = gguf.GGUFReader(converted / "llm-f32.gguf")
    tensors = {t.name: t for t in reader.tensors}
    assert len(tensors) == 2 * 9 + 3
    from safetensors.torch import load_file

    from llamavid.model.loading import read_checkpoint

    want = permute_qk(read_checkpoint(checkpoint)["model.layers.0.self_attn.q_proj.weight"].float(), 2).numpy()
    got = np.asarray(tensors["blk.0.attn_q.weight"].data).reshape(want.shape)
    assert np.array_equal(got, want)  # llama.cpp's interleaved RoPE layout
    vision = load_file(str(converted / "vision.safetensors"))
    assert "model.vision_tower.vision_tower.cls_token" in vision
    assert not any(k.startswith("model.layers.") for k in vision)


@pytest.mark.parametrize("kind", ["image", "video", "movie"])
def test_same_greedy_tokens_and_logits_as_transformers(engines, kind):
    ref, cpp = engines
    question = "What is happening here?"
    a, b = ref.prepare(question, **inputs(kind)), cpp.prepare(question, **inputs(kind))
    assert a.input_ids == b.input_ids and a.input_ids.count(-200) >= 1
    steps_a, steps_b = list(ref.generate(a, GREEDY)), list(cpp.generate(b, GREEDY))
    assert [s.token for s in steps_a] == [s.token for s in steps_b]
    diff = max((x.scores - y.scores).abs().max().item() for x, y in zip(steps_a, steps_b, strict=True))
    assert diff < 1e-4
    if kind == "image":  # negative control: the same engine on another image is far outside the bound
        other = next(iter(cpp.generate(cpp.prepare(question, **inputs("other image")), GREEDY))).scores
        assert (other - steps_a[0].scores).abs().max().item() > 10 * 1e-4


class TokenCounter:
    """Positions each engine's LLM is fed, per call: transformers' decoder forward, llama.cpp's llama_decode."""

    def __init__(self, monkeypatch, lv):
        self.calls: list[list[int]] = []
        if lv.backend.name == "llama.cpp":
            import llama_cpp

            real = llama_cpp.llama_decode

            def counting_decode(ctx, batch):
                self.calls.append([int(batch.pos[i]) for i in range(batch.n_tokens)])
                return real(ctx, batch)

            monkeypatch.setattr(llama_cpp, "llama_decode", counting_decode)
        else:
            decoder = lv.model.model
            real = decoder.forward

            def counting_forward(*args, **kwargs):
                pos = kwargs["position_ids"]
                assert pos.shape[1] == kwargs["inputs_embeds"].shape[1]
                self.calls.append(pos[0].tolist())
                return real(*args, **kwargs)

            monkeypatch.setattr(decoder, "forward", counting_forward)

    def take(self) -> list[int]:
        """Every position fed since the last call, in order."""
        positions = [p for call in self.calls for p in call]
        self.calls = []
        return positions


@pytest.mark.parametrize("engine", ["transformers", "llama.cpp"])
def test_follow_up_turn_feeds_only_its_own_tokens(engines, engine, monkeypatch):
    """Turn two continues the cache: its positions start where turn one's ended, and it feeds only the
    pending last answer token and its own few prompt tokens, not the system prompt and image again."""
    lv = engines[0] if engine == "transformers" else engines[1]
    counter = TokenCounter(monkeypatch, lv)
    chat = lv.chat(**inputs("image"))
    first = "".join(chat.ask("What is this?", SamplingOptions(max_new_tokens=4, temperature=0)))
    turn1 = counter.take()
    cut = chat.last_token != lv.tokenizer.eos_token_id  # then turn two closes the answer with </s> first
    second = "".join(chat.ask("And then?", SamplingOptions(max_new_tokens=4, temperature=0)))
    turn2 = counter.take()
    assert first and second
    assert turn1 == list(range(len(turn1)))  # one pass over the prompt, then one token per step
    assert turn2 == list(range(len(turn1), len(turn1) + len(turn2)))  # no position fed twice
    text = lv.tokenize("USER: <image>\nAnd then? ASSISTANT:")  # vicuna_v1's follow-up, its own <image>
    # the pending last answer token, </s> if cut, the text without BOS with the <image> id replaced
    # by its 2 visual rows, then 3 decode steps; re-reading turn one would add its ~180 positions
    assert len(turn2) == 1 + cut + (len(text) - 1) - 1 + 2 + 3
    assert len(turn2) < len(turn1) / 4


def test_both_engines_answer_a_follow_up_alike(engines):
    ref, cpp = engines
    answers = []
    for lv in (ref, cpp):
        chat = lv.chat(**inputs("image"))
        first = "".join(chat.ask("What is this?", SamplingOptions(max_new_tokens=4, temperature=0)))
        second = "".join(chat.ask("And then?", SamplingOptions(max_new_tokens=4, temperature=0)))
        answers.append((first, second, chat.state.length))
    assert answers[0][0] and answers[0][1]  # two empty answers would compare equal
    assert answers[0] == answers[1]


def test_quantized_files_hold_the_tensor_types_asked_for(k_converted):
    import gguf

    def types(kind: str) -> dict[str, str]:
        reader = gguf.GGUFReader(k_converted / f"llm-{kind}.gguf")
        return {t.name: t.tensor_type.name for t in reader.tensors}

    for kind, want in (("f32", {"F32"}), ("f16", {"F16"}), ("q8_0", {"Q8_0"})):
        found = types(kind)
        assert {v for k, v in found.items() if not k.endswith("norm.weight")} == want, found
        assert {v for k, v in found.items() if k.endswith("norm.weight")} == {"F32"}
    k = types("q4_K_M")
    matrices = {name: kind for name, kind in k.items() if not name.endswith("norm.weight")}
    assert set(matrices.values()) == {"Q4_K", "Q6_K"}, k  # K-quants only: no fallback type
    assert k["output.weight"] == "Q6_K" and list(matrices.values()).count("Q4_K") > len(matrices) / 2


def unpermute_qk(w: torch.Tensor, heads: int) -> torch.Tensor:
    """llama.cpp's interleaved RoPE rows back to transformers' rotate-half order (inverse of permute_qk)."""
    return w.reshape(heads, w.shape[0] // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_weights(lv: LlamaVid, gguf_file, unpermute: bool = True) -> dict[str, tuple[str, torch.Tensor]]:
    """The GGUF file's LLM tensors, dequantized, under ``lv``'s parameter names: (ggml type, values)."""
    import gguf
    from gguf.quants import dequantize

    tensors = {t.name: t for t in gguf.GGUFReader(gguf_file).tensors}
    out = {}
    for key, param in lv.model.named_parameters():
        if key.startswith(("model.layers.", "model.embed_tokens.", "model.norm.", "lm_head.")):
            t = tensors[tensor_name(key)]
            w = torch.from_numpy(np.array(dequantize(t.data, t.tensor_type), dtype=np.float32)).reshape(param.shape)
            if unpermute and key.endswith(("q_proj.weight", "k_proj.weight")):
                w = unpermute_qk(w, lv.config.num_attention_heads)
            out[key] = (t.tensor_type.name, w)
    return out


def with_weights(lv: LlamaVid, weights: dict[str, tuple[str, torch.Tensor]]) -> LlamaVid:
    """``lv`` (transformers) running these LLM weights."""
    params = dict(lv.model.named_parameters())
    with torch.no_grad():
        for key, (_, w) in weights.items():
            params[key].copy_(w)
    lv.backend = TransformersBackend(lv.model)
    return lv


def corrupted_copy(folder, kind: str, tensor: str, row: int, out):
    """The converted folder with one row of one tensor zeroed in its GGUF file (all blocks of the row)."""
    import gguf

    shutil.copytree(folder, out, ignore=lambda d, names: [n for n in names if n.endswith(".gguf")])
    shutil.copy(folder / f"llm-{kind}.gguf", out / f"llm-{kind}.gguf")
    reader = gguf.GGUFReader(out / f"llm-{kind}.gguf", "r+")
    next(t for t in reader.tensors if t.name == tensor).data[row] = 0
    reader.data.flush()
    del reader
    return out


def rms_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got - want).norm() / want.norm())


# Rounding of the weights by each GGML type, as rms relative error: f16 keeps 11 significant bits
# (rms 2^-11/sqrt(3)); the block types round to a step of their block's range, rms step/sqrt(12),
# with the largest |w| of a block of 16-32 random-normal weights about 2.5 rms: Q8_0 steps of
# absmax/127, Q6_K absmax/32, Q4_K (max - min)/15. The bound allows twice that.
WEIGHT_ROUNDING = {"F32": 0.0, "F16": 2**-11 / math.sqrt(3), "Q8_0": 2.5 / 127 / math.sqrt(12),
                   "Q6_K": 2.5 / 32 / math.sqrt(12), "Q4_K": 2 * 2.5 / 15 / math.sqrt(12)}


def weight_bound(ggml_type: str) -> float:
    return 2 * WEIGHT_ROUNDING[ggml_type] + 1e-6  # Q8_0 1.1e-2, Q6_K 4.5e-2, Q4_K 0.19


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """||got - want|| / ||want|| over the logits, each centred (softmax ignores a common shift)."""
    got, want = got - got.mean(), want - want.mean()
    return float((got - want).norm() / want.norm())


# llama.cpp rounds a matmul's activations to the weight type's partner: f16 for f16 weights (11
# significant bits: relative error <= 2^-11, rms 2^-11/sqrt(3)), Q8_0 / Q8_K blocks for q8_0 and the
# K-quants (steps of absmax/127, rms step/sqrt(12), absmax ~ 3 rms in a block). The logits pass 15
# such matmuls (q, k, v, o, gate, up, down in each of 2 layers, then output); independent errors add
# in quadrature, so the expected relative error is the rounding x sqrt(15); the bound allows twice that.
ACTIVATION_ROUNDING = {"f16": 2**-11 / math.sqrt(3), "q8_0": 3 / 127 / math.sqrt(12),
                       "q4_K_M": 3 / 127 / math.sqrt(12)}
MATMULS = 7 * 2 + 1


@pytest.mark.parametrize("kind", ["f16", "q8_0", "q4_K_M"])
def test_quantized_file_holds_the_weights_and_llama_cpp_computes_with_them(k_checkpoint, k_converted, kind, tmp_path):
    bound = 2 * ACTIVATION_ROUNDING[kind] * math.sqrt(MATMULS)  # f16 2.2e-3, q8 5.3e-2
    # the file holds the checkpoint's weights, each within its type's rounding (and in llama.cpp's
    # RoPE row order: without undoing it, q and k are far off, the negative control)
    exact = LlamaVid.load(k_checkpoint, device="cpu")
    original = {k: p.detach().clone() for k, p in exact.model.named_parameters()}
    weights = gguf_weights(exact, k_converted / f"llm-{kind}.gguf")
    errors = {k: (t, rms_error(w, original[k])) for k, (t, w) in weights.items()}
    assert {k: e for k, e in errors.items() if e[1] > weight_bound(e[0])} == {}
    q_type, q_rows = gguf_weights(exact, k_converted / f"llm-{kind}.gguf", unpermute=False)[
        "model.layers.0.self_attn.q_proj.weight"]
    assert rms_error(q_rows, original["model.layers.0.self_attn.q_proj.weight"]) > 3 * weight_bound(q_type)

    cpp = LlamaVid.load(k_converted, device="cpu", backend="llama.cpp", gguf_type=kind, kv_type="f32")
    prepared = cpp.prepare("Describe it.", **inputs("image"))  # the same ids and visual rows for all
    got = next(iter(cpp.generate(prepared, FIRST))).scores
    want = next(iter(with_weights(exact, weights).generate(prepared, FIRST))).scores
    assert relative_error(got, want) < bound

    # negative control: the same file with the embedding row of the prompt's last token zeroed
    bad_folder = corrupted_copy(k_converted, kind, "token_embd.weight", prepared.input_ids[-1], tmp_path / "bad")
    bad = LlamaVid.load(bad_folder, device="cpu", backend="llama.cpp", gguf_type=kind, kv_type="f32")
    assert relative_error(next(iter(bad.generate(prepared, FIRST))).scores, want) > bound
    if kind == "q4_K_M":  # 4-bit weights move the logits by far more than the bound (~20 %): the
        # comparison resolves them, so it shows the engine ran this file and not an unquantized one
        unquantized = next(iter(LlamaVid.load(k_checkpoint, device="cpu").generate(prepared, FIRST))).scores
        assert relative_error(got, unquantized) > 2 * bound


# A quantized KV cache rounds K and V in blocks of 32 (q8_0: steps of absmax/127; q4_0: absmax/8),
# rms step/sqrt(12) with absmax ~ 3 rms; K and V in each of the 2 layers: 4 roundings in quadrature
# (x 2). The bound allows 1.5 times that expected error.
KV_ROUNDING = {"q8_0": 3 / 127 / math.sqrt(12), "q4_0": 3 / 8 / math.sqrt(12)}


def kv_bound(kv_type: str) -> float:
    return 1.5 * 2 * KV_ROUNDING[kv_type]  # q8_0 2.0e-2, q4_0 0.32


@pytest.mark.parametrize("kv_type", ["f16", "q8_0", "q4_0"])
def test_quantized_kv_cache(k_converted, kv_type):
    exact = LlamaVid.load(k_converted, device="cpu", backend="llama.cpp", gguf_type="f32", kv_type="f32")
    lv = LlamaVid.load(k_converted, device="cpu", backend="llama.cpp", gguf_type="f32", kv_type=kv_type)
    plan = lv.backend.preflight(lv.backend.new_state(), 7200)
    per_value = {"f16": 2, "q8_0": 34 / 32, "q4_0": 18 / 32}[kv_type]
    assert plan.kv_cache == pytest.approx(2 * 2 * 256 * 7200 * per_value, rel=0.01)  # K and V, 2 layers
    if kv_type == "f16":
        return
    prepared = exact.prepare("Describe it.", **inputs("image"))
    want = next(iter(exact.generate(prepared, FIRST))).scores
    error = relative_error(next(iter(lv.generate(prepared, FIRST))).scores, want)
    assert error < kv_bound(kv_type)
    if kv_type == "q4_0":  # negative control: 4-bit rounding lies outside the 8-bit cache's bound
        assert error > kv_bound("q8_0")


def test_bad_gguf_and_missing_files_are_named(converted, tmp_path):
    from llamavid.runtime.llamacpp import LlamaCppBackend, find_gguf

    broken = tmp_path / "llm-f16.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(ValueError, match="llm-f16.gguf"):
        LlamaCppBackend(broken)
    with pytest.raises(FileNotFoundError, match="convert-gguf"):
        find_gguf(tmp_path / "nothing", "q4_K_M")


def test_long_video_rope_scaling_is_written(tmp_path):
    import gguf

    from llamavid.model.tiny import write_tiny_checkpoint

    folder = write_tiny_checkpoint(tmp_path / "long", heads=2, rope_factor=16.0)  # released rope_scaling x16
    convert(folder, tmp_path / "out", types=("f32",))
    reader = gguf.GGUFReader(tmp_path / "out" / "llm-f32.gguf")
    fields = {f.name: f for f in reader.fields.values()}
    factor = fields["llama.rope.scaling.factor"]
    assert float(factor.parts[factor.data[0]][0]) == 16.0
    ctx = fields["llama.context_length"]
    assert int(ctx.parts[ctx.data[0]][0]) == 4096 * 16
    ref = LlamaVid.load(folder, device="cpu")
    cpp = LlamaVid.load(tmp_path / "out", device="cpu", backend="llama.cpp", kv_type="f32", n_ctx=2048)
    a, b = ref.prepare("Who?", **inputs("movie")), cpp.prepare("Who?", **inputs("movie"))
    sa, sb = list(ref.generate(a, GREEDY)), list(cpp.generate(b, GREEDY))
    assert max((x.scores - y.scores).abs().max().item() for x, y in zip(sa, sb, strict=True)) < 1e-4


@pytest.mark.slow
def test_cli_convert_verify_and_chat(checkpoint, tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "LLAMAVID_DATA_DIR": str(tmp_path), "PYTHONPATH": str(Path(__file__).resolve().parents[2])}

    def llamavid(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "cli", *args], env=env, text=True,
                              capture_output=True, timeout=300)

    assert llamavid("models", "add", "tiny", str(checkpoint)).returncode == 0
    converted = llamavid("models", "convert-gguf", "tiny", "--types", "f32,q4_K_M")
    assert converted.returncode == 0, converted.stderr
    assert (tmp_path / "models" / "tiny-gguf" / "llm-q4_K_M.gguf").is_file()
    assert "llama_model_quantize" not in converted.stdout  # llama.cpp's log stays quiet
    assert llamavid("models", "verify", "tiny-gguf").returncode == 0
    answer = llamavid("chat", "--model", "tiny-gguf", "--gguf-type", "f32", "--kv-type", "f32", "-p", "Hello?",
                      "--temperature", "0", "--max-new-tokens", "4")
    reference = llamavid("chat", "--model", "tiny", "-p", "Hello?", "--temperature", "0", "--max-new-tokens", "4")
    assert answer.returncode == 0 and reference.returncode == 0, answer.stderr + reference.stderr
    assert answer.stdout.strip(), answer.stderr  # two empty answers would compare equal
    assert answer.stdout == reference.stdout
    bad = llamavid("models", "convert-gguf", "tiny", "--types", "q3")
    assert bad.returncode != 0 and "unknown GGUF type" in bad.stderr
