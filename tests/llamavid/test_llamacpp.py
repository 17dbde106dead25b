"""GGUF export and the llama.cpp backend against the transformers path, on tiny checkpoints.

Tolerance: with an f32 GGUF and an f32 KV cache (flash attention off, which would round to
f16 on the CPU), the two engines compute the same float32 operations in a different summation
order; logits of magnitude ~1 then agree to ~1e-6 (6e-7 seen), so 1e-4 leaves room for other
CPUs' SIMD widths while still catching any real difference (a wrong RoPE layout or a misplaced
visual row moves logits by 1e-2 or more).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from llamavid.runtime.api import LlamaVid
from llamavid.runtime.generate import SamplingOptions
from llamavid.runtime.gguf_export import convert, permute_qk

GREEDY = SamplingOptions(max_new_tokens=6, temperature=0, stop_ids=())


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from llamavid.model.tiny import write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("cpp") / "tiny-vid", heads=2)  # head size 32


@pytest.fixture(scope="module")
def converted(checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("gguf") / "tiny-vid-gguf"
    convert(checkpoint, out, types=("f32", "f16", "q8_0", "q4_K_M"))
    return out


@pytest.fixture(scope="module")
def engines(checkpoint, converted):
    ref = LlamaVid.load(checkpoint, device="cpu")
    cpp = LlamaVid.load(converted, device="cpu", backend="llama.cpp", gguf_type="f32", kv_type="f32")
    return ref, cpp


def inputs(kind: str):
    rng = np.random.default_rng(3)
    image = rng.integers(0, 255, (90, 160, 3), dtype=np.uint8)
    if kind == "image":
        return {"images": [image]}
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


def test_follow_up_turn_reuses_the_cache_in_both_engines(engines):
    ref, cpp = engines
    answers = []
    for lv in (ref, cpp):
        chat = lv.chat(**inputs("image"))
        first = "".join(chat.ask("What is this?", SamplingOptions(max_new_tokens=4, temperature=0)))
        second = "".join(chat.ask("And then?", SamplingOptions(max_new_tokens=4, temperature=0)))
        answers.append((first, second, chat.state.length))
    assert answers[0] == answers[1]


@pytest.mark.parametrize("gguf_type,kv_type", [("f16", "f16"), ("q8_0", "q8_0"), ("q4_K_M", "q4_0")])
def test_quantized_files_and_caches_run(converted, engines, gguf_type, kv_type):
    ref, _ = engines
    lv = LlamaVid.load(converted, device="cpu", backend="llama.cpp", gguf_type=gguf_type, kv_type=kv_type)
    a = ref.prepare("Describe it.", **inputs("image"))
    first_ref = next(iter(ref.generate(a, GREEDY))).scores
    first = next(iter(lv.generate(lv.prepare("Describe it.", **inputs("image")), GREEDY))).scores
    cosine = torch.nn.functional.cosine_similarity(first, first_ref, dim=0).item()
    assert cosine > (0.999 if gguf_type == "f16" else 0.9)
    plan = lv.backend.preflight(lv.backend.new_state(), 7200)
    per_value = {"f16": 2, "q8_0": 34 / 32, "q4_0": 18 / 32}[kv_type]
    assert plan.kv_cache == pytest.approx(2 * 2 * 64 * 7200 * per_value, rel=0.01)


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
        return subprocess.run([sys.executable, "-m", "llamavid", *args], env=env, text=True,
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
    assert answer.stdout == reference.stdout
    bad = llamavid("models", "convert-gguf", "tiny", "--types", "q3")
    assert bad.returncode != 0 and "unknown GGUF type" in bad.stderr
