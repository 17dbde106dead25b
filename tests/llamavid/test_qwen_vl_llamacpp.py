"""The second family (Qwen3-VL) on llama.cpp: the tiny checkpoint converted by llama.cpp's own
``convert_hf_to_gguf.py`` (and its ``--mmproj`` mode) from the installed llama-cpp-python's sdist,
read through libmtmd, gives the greedy tokens transformers gives for an image, a clip and a library
film; and a saved sequence state gives the same next answer.

The tiny weights are float32 in both files and the KV cache is float32: the logits of the two
backends differ by about 3e-3 (llama.cpp's vision tower resamples its position grid and computes
GELU its own way), while the random model's top two logits stand further apart at every step
checked here, so the greedy choices must agree token for token (the margins are asserted too).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from gguf import GGUFReader

from llamavid.prompt.qwen_vl import follow_up
from llamavid.runtime.qwen_vl import QwenVLTransformers
from llamavid.runtime.qwen_vl_llamacpp import QwenVLLlamaCpp
from tests.support import llamacpp_converter
from tests.support import qwen_vl as support

N_TOKENS = 16


def test_missing_sdist_is_said_with_the_command_that_fetches_it(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("LLAMAVID_LLAMACPP_SDIST", str(tmp_path / "nowhere"))
    monkeypatch.setattr(llamacpp_converter, "TMP_SDIST", tmp_path / "tmp")
    conv, why = llamacpp_converter.converter("0.3.36")
    assert conv is None
    assert "pip download llama-cpp-python==0.3.36 --no-deps --no-binary llama-cpp-python" in why
    assert str(tmp_path / "cache" / "llamavid" / "sdist") in why


def test_sdist_is_found_in_the_cache_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("LLAMAVID_LLAMACPP_SDIST", raising=False)
    monkeypatch.setattr(llamacpp_converter, "TMP_SDIST", tmp_path / "tmp")
    (tmp_path / "llamavid" / "sdist").mkdir(parents=True)
    tarball = tmp_path / "llamavid" / "sdist" / "llama_cpp_python-9.9.9.tar.gz"
    tarball.write_bytes(b"")
    assert llamacpp_converter.find_sdist("9.9.9") == tarball
    assert llamacpp_converter.find_sdist("9.9.8") is None


slow = pytest.mark.slow  # the conversion takes a few seconds, once per session


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> support.TinyGguf:
    return support.tiny_qwen_vl_gguf(tmp_path_factory)


@pytest.fixture(scope="module")
def hf(tmp_path_factory) -> QwenVLTransformers:
    return QwenVLTransformers(support.tiny_qwen_vl(tmp_path_factory))


@pytest.fixture(scope="module")
def lc(files) -> QwenVLLlamaCpp:
    backend = QwenVLLlamaCpp(files.model, files.mmproj, n_ctx=1024, threads=2, kv_type="f32")
    yield backend
    backend.close()


def _field(reader: GGUFReader, key: str):
    field = reader.fields[key]
    value = field.parts[field.data[0]]
    return bytes(value).decode() if field.types[0].name == "STRING" else value.tolist()


@slow
def test_converter_writes_a_qwen3vl_gguf_and_mmproj(files):
    text, vision = GGUFReader(files.model), GGUFReader(files.mmproj)
    assert _field(text, "general.architecture") == "qwen3vl"
    assert _field(text, "qwen3vl.n_deepstack_layers") == [2]
    assert _field(text, "tokenizer.ggml.pre") == "qwen2"
    assert _field(vision, "clip.projector_type") == "qwen3vl_merger"
    names = {t.name for t in vision.tensors}
    assert {"v.patch_embd.weight", "v.patch_embd.weight.1", "v.deepstack.0.fc1.weight"} <= names


@slow
@pytest.mark.parametrize("kind", ["image", "clip", "film"])
def test_llamacpp_reads_the_prompt_as_transformers_does(hf, lc, kind):
    """Text tokens are the same ids; each visual group is one chunk of as many tokens, taking
    max(rows, cols) positions."""
    prompt = support.prompts()[kind]
    enc = hf.encode(prompt)
    ids = enc.input_ids[0].tolist()
    expected: list = []
    i = 0
    while i < len(ids):
        if ids[i] in (hf.tokens.image, hf.tokens.video):
            j = i
            while j < len(ids) and ids[j] == ids[i]:
                j += 1
            expected.append((j - i, None))
            i = j
        else:
            expected.append(ids[i])
            i += 1
    got = lc.prompt_tokens(prompt)
    assert [g if isinstance(g, int) else (g[0], None) for g in got] == expected
    groups = [s for s in enc.segments if isinstance(s, tuple)]
    assert [g[1] for g in got if isinstance(g, tuple)] == [max(s) for s in groups]


@slow
@pytest.mark.parametrize("kind", ["image", "clip", "film"])
def test_same_greedy_tokens_as_transformers(hf, lc, kind):
    prompt = support.prompts()[kind]
    hf.reset()
    lc.reset()
    hf_logits, lc_logits = hf.prefill(prompt).numpy(), lc.prefill(prompt)
    assert lc.length == hf.position  # llama.cpp's next position is the M-RoPE one
    np.testing.assert_allclose(lc_logits, hf_logits, atol=2e-2)
    want, got = [], []
    for _ in range(N_TOKENS):
        top2 = np.sort(hf_logits)[-2:]
        assert top2[1] - top2[0] > 4 * np.abs(lc_logits - hf_logits).max(), "margin too small to compare greedily"
        want.append(int(np.argmax(hf_logits)))
        got.append(int(np.argmax(lc_logits)))
        if want[-1] != got[-1]:
            break
        hf_logits, lc_logits = hf.step(want[-1]).numpy(), lc.step(got[-1])
    assert got == want and len(got) == N_TOKENS
    assert hf.decode(want) == lc.decode(got)


@slow
def test_same_answer_through_both_greedy_loops(hf, lc):
    prompt = support.prompts()["film"]
    assert lc.answer(prompt, N_TOKENS, hf.tokens.stop) == hf.answer(prompt, N_TOKENS)


@slow
def test_saved_state_gives_the_same_next_answer(files, hf, lc):
    """llama_state_seq_get_data after a film question and its answer, read into a fresh context: the
    follow-up's answer is the one the first context gives going on, and the one transformers gives."""
    answer = lc.answer(support.prompts()["film"], 8, hf.tokens.stop)
    state = lc.state_bytes()
    nxt = follow_up("And then?", answer_closed=answer[-1] in hf.tokens.stop)
    expected = lc.greedy(lc.prefill(nxt), 8, hf.tokens.stop)

    fresh = QwenVLLlamaCpp(files.model, files.mmproj, n_ctx=1024, threads=2, kv_type="f32")
    try:
        fresh.load_state(state)
        assert fresh.greedy(fresh.prefill(nxt), 8, hf.tokens.stop) == expected
    finally:
        fresh.close()

    assert hf.answer(support.prompts()["film"], 8) == answer
    with torch.inference_mode():
        assert hf.greedy(hf.prefill(nxt), 8) == expected


@slow
def test_the_kv_cache_type_follows_the_projects_one_rule(files, lc):
    """"auto" is q8_0 where the heads are whole blocks of 32, as for LLaMA-VID's cache; this tiny
    model's 16-wide heads keep f16, and asking for q8_0 says why it cannot be made."""
    from llamavid.runtime.llamacpp import gguf_head_dim

    assert gguf_head_dim(lc.model) == 16  # the GGUF's qwen3vl.attention.key_length
    auto = QwenVLLlamaCpp(files.model, files.mmproj, n_ctx=256, threads=1)
    try:
        assert auto.kv_type == "f16"
    finally:
        auto.close()
    with pytest.raises(ValueError, match="q8_0 KV cache needs a head size divisible by 32 .this model: 16."):
        QwenVLLlamaCpp(files.model, files.mmproj, n_ctx=256, threads=1, kv_type="q8_0")
