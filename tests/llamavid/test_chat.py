"""The chat engine and ``llamavid chat``, on a tiny released-layout checkpoint."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from llamavid.media.synthetic import Tone, grey_ramp, write_audio, write_video
from llamavid.runtime.backend import TransformersBackend
from llamavid.runtime.chat import Chat, ordinal
from llamavid.runtime.generate import SamplingOptions
from llamavid.runtime.inputs import Visual
from llamavid.runtime.memory import estimate, frame_stride, kv_cache_bytes

GREEDY = SamplingOptions(max_new_tokens=4, temperature=0)
ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, stdin: str | None = None, data_dir: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if data_dir:
        env["LLAMAVID_DATA_DIR"] = str(data_dir)
    return subprocess.run([sys.executable, "-m", "cli", "chat", *args], input=stdin, text=True,
                          capture_output=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def image_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("img") / "photo.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (80, 120, 3), dtype=np.uint8)).save(path)
    return path


def write_clip(path: Path, seconds: int = 3, audio_only: bool = False) -> Path:
    """A 96x64 clip at 10 fps getting brighter every frame (libx264 defaults), or silent audio only."""
    if audio_only:
        return write_audio(path, seconds, Tone(amplitude=0))
    return write_video(path, grey_ramp(96, 64), fps=10, seconds=seconds)


@pytest.mark.slow
def test_one_shot_cli_answer_equals_the_api(tiny, tiny_checkpoint, image_file):
    result = cli("--model", str(tiny_checkpoint), "--image", str(image_file), "-p", "What is this?",
                 "--temperature", "0", "--max-new-tokens", "4")
    assert result.returncode == 0, result.stderr
    from llamavid.media.load import load_image

    expected = tiny.ask("What is this?", GREEDY, images=[load_image(image_file)])
    assert result.stdout.rstrip("\n") == expected


@pytest.mark.slow
def test_repl_answers_each_question_then_exits(tiny_checkpoint, image_file):
    result = cli("--model", str(tiny_checkpoint), "--image", str(image_file), "--temperature", "0",
                 "--max-new-tokens", "3", stdin="first question\nsecond question\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("ASSISTANT: ") == 2


@pytest.mark.slow
@pytest.mark.parametrize("args,message", [
    (["--image", "/no/such.png"], "no such file"),
    (["--load-4bit", "--load-8bit"], "choose one of"),
    (["--conv-mode", "nonsense"], "nonsense"),
])
def test_bad_arguments_give_one_line_errors(tiny_checkpoint, args, message):
    result = cli("--model", str(tiny_checkpoint), "-p", "x", *args)
    assert result.returncode != 0
    assert message in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("llamavid: error:")


@pytest.mark.slow
def test_unknown_model_lists_what_is_installed(tmp_path, tiny_checkpoint):
    import shutil

    shutil.copytree(tiny_checkpoint, tmp_path / "models" / "tiny-vid")
    result = cli("--model", "nope", "-p", "x", data_dir=tmp_path)
    assert result.returncode != 0 and "tiny-vid" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_unreadable_image_and_video_without_picture(tiny_checkpoint, tmp_path):
    fake = tmp_path / "notes.png"
    fake.write_text("not an image")
    result = cli("--model", str(tiny_checkpoint), "--image", str(fake), "-p", "x")
    assert result.returncode != 0 and "notes.png" in result.stderr and "not an image" in result.stderr
    audio = write_clip(tmp_path / "sound.mka", audio_only=True)
    result = cli("--model", str(tiny_checkpoint), "--video", str(audio), "-p", "x")
    assert result.returncode != 0 and "sound.mka" in result.stderr and "no video stream" in result.stderr


def test_video_chat_samples_one_frame_per_second(tiny, tmp_path):
    from llamavid.media.load import load_video

    clip = write_clip(tmp_path / "clip.mp4", seconds=3)
    frames, times = load_video(clip)
    assert len(frames) == 3 and times == pytest.approx([0.0, 1.0, 2.0], abs=0.11)
    chat = Chat(tiny, Visual("video", tiny.encode(tiny.preprocess(np.stack(frames), mode="crop"))))
    ids, slots = chat.turn_ids("What happens?")
    assert ids.count(-200) == 1 and slots[0].shape == (6, 64)


def test_second_turn_extends_the_cache_exactly(tiny, image_file):
    from llamavid.media.load import load_image

    feats = tiny.encode(tiny.preprocess([load_image(image_file)]))
    chat = Chat(tiny, Visual("image", feats))
    first = "".join(chat.ask("What is this?", GREEDY))
    ids1, slots1 = Chat(tiny, Visual("image", feats)).turn_ids("What is this?")
    generated = list(chat.state.seen_ids[len([i for i in ids1 if i >= 0]):])
    ids2, slots2 = chat.turn_ids("And the colours?")
    out = chat.backend.generate(chat.state, ids2, slots2, SamplingOptions(max_new_tokens=1, temperature=0))
    cached_scores = next(iter(out)).scores
    full_ids = ids1 + generated + ids2  # pending last token is fed first in the cached run
    with torch.inference_mode():
        emb = tiny.model.embed_inputs(full_ids, slots1 + slots2)
        fresh = tiny.model(inputs_embeds=emb).logits[0, -1]
    assert torch.allclose(cached_scores, fresh, atol=1e-4)
    assert first == chat.turns[0].answer


def test_stopping_an_answer_keeps_the_chat_usable(tiny):
    chat = Chat(tiny, Visual("none"))
    limit = 50
    pieces = chat.ask("Tell me a long story.", SamplingOptions(max_new_tokens=limit, temperature=1.0, seed=0,
                                                               top_p=1.0))
    shown = next(pieces)  # the first piece of text, then the reader stops (Ctrl-C, the Stop button)
    pieces.close()
    turn = chat.turns[0]
    assert turn.stopped and turn.answer == shown
    # generation stopped with the reader: only the tokens that made the first piece were drawn
    assert 1 <= turn.tokens < limit
    ids = chat.plan("Shorter please.").ids
    if chat.last_token != tiny.tokenizer.eos_token_id:
        assert ids[0] == tiny.tokenizer.eos_token_id  # the cut answer is closed as the template would
    assert "".join(chat.ask("Shorter please.", GREEDY)) == chat.turns[1].answer


def test_context_overflow_is_refused_before_running(tiny):
    chat = Chat(tiny, Visual("none"), backend=TransformersBackend(tiny.model))
    chat.backend.context_length = lambda: 20
    with pytest.raises(ValueError, match="tokens but only"):
        chat.ask("word " * 40, GREEDY)
    assert chat.turns == []


def test_memory_preflight_refuses_with_numbers(tiny, monkeypatch):
    import llamavid.runtime.memory as memory

    monkeypatch.setattr(memory, "available_memory", lambda device: 1000)
    chat = Chat(tiny, Visual("none"))
    with pytest.raises(MemoryError, match="GiB free"):
        chat.ask("hello", GREEDY)


def test_preflight_numbers_for_a_4bit_7b_chat():
    from transformers import LlamaConfig

    cfg = LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                      num_key_value_heads=32, vocab_size=32000)
    assert kv_cache_bytes(cfg, 8000, 2) == 2 * 32 * 4096 * 8000 * 2  # 4.2 GB in fp16
    plan = estimate(cfg, int(3.9e9), 8000, torch.device("cpu"), 2, available=16 * 2**30, weights_loaded=False)
    assert plan.fits and 8e9 < plan.total < 12e9
    assert not estimate(cfg, int(3.9e9), 8000, torch.device("cpu"), 2, available=6 * 2**30, weights_loaded=False).fits


def test_frame_stride_fits_the_context():
    assert frame_stride(100, 2, 100, 2048) == 1
    assert frame_stride(3000, 2, 100, 2048) == 4  # 974 frames fit -> every 4th of 3000
    with pytest.raises(ValueError):
        frame_stride(10, 2, 5000, 2048)


# NF4 code book (bitsandbytes, QLoRA paper): a weight is stored as the nearest of these levels
# times its 64-weight block's absmax, so it moves by at most half the widest gap (-1 .. -0.6962)
# times the absmax. Double quantization stores each absmax in 8 bits (blocks of 256, dynamic
# code: under 1 % relative error), which moves a weight by at most that fraction of the absmax
# more. A 2 % allowance covers it.
NF4_LEVELS = (-1.0, -0.6962, -0.5251, -0.3949, -0.2844, -0.1848, -0.0911, 0.0,
              0.0796, 0.1609, 0.2461, 0.3379, 0.4407, 0.5626, 0.7230, 1.0)
NF4_MAX_ERROR = max(b - a for a, b in zip(NF4_LEVELS[:-1], NF4_LEVELS[1:], strict=True)) / 2 + 0.02  # 0.172


def nf4_error(dequantized: torch.Tensor, original: torch.Tensor) -> float:
    """Largest |dequantized - original| / absmax over the 64-weight blocks."""
    err = (dequantized - original).abs().reshape(-1, 64)
    return float((err / original.abs().reshape(-1, 64).amax(dim=1, keepdim=True)).max())


def test_4bit_llm_runs_on_nf4_weights_within_their_rounding(tiny_checkpoint):
    import copy

    import bitsandbytes as bnb
    import bitsandbytes.functional as bnbf

    from llamavid.runtime.api import LlamaVid

    full = LlamaVid.load(tiny_checkpoint, device="cpu")
    q4 = LlamaVid.load(tiny_checkpoint, device="cpu", bits=4)
    assert isinstance(q4.model.model.mm_projector[0], torch.nn.Linear)  # projectors stay 16/32 bit
    # the float model with the 4-bit model's weights, dequantized: what a correct NF4 path computes
    dequantized = copy.deepcopy(full.model)
    originals = dict(full.model.named_parameters())
    replaced = 0
    with torch.no_grad():
        for name, module in q4.model.named_modules():
            if name.startswith("model.layers.") and isinstance(module, torch.nn.Linear):
                assert isinstance(module, bnb.nn.Linear4bit), name  # every decoder linear is 4-bit
                state = module.weight.quant_state
                assert state.quant_type == "nf4" and state.nested  # NF4 with double quantization
                w = bnbf.dequantize_4bit(module.weight.data, state).float()
                assert nf4_error(w, originals[name + ".weight"]) <= NF4_MAX_ERROR, name
                dequantized.get_submodule(name).weight.copy_(w)
                replaced += 1
    assert replaced == 2 * 7
    emb = full.model.embed_inputs([1, 20, 30, 40], [])
    with torch.inference_mode():
        got, want, unquantized = q4.model(inputs_embeds=emb).logits, dequantized(inputs_embeds=emb).logits, \
            full.model(inputs_embeds=emb).logits
    # the same weights in float32 (bitsandbytes dequantizes, then multiplies): rounding of ~1e-7 only
    assert (got - want).abs().max() < 1e-5
    # negative controls: the unquantized model is far outside that tolerance (the comparison sees the
    # 4-bit rounding), and a row moved by a fifth of the largest weight breaks the NF4 bound
    assert (got - unquantized).abs().max() > 1e-2
    w = originals["model.layers.0.mlp.up_proj.weight"]
    bad = w.clone()
    bad[3] += 0.2 * w.abs().max()
    assert nf4_error(bnbf.dequantize_4bit(*bnbf.quantize_4bit(bad, blocksize=64, quant_type="nf4")), w) \
        > NF4_MAX_ERROR


def test_film_longer_than_the_context_keeps_every_kth_frame(tiny):
    backend = TransformersBackend(tiny.model)
    backend.context_length = lambda: 1200
    feats = np.zeros((1000, 256, 176), np.float16)
    chat = Chat(tiny, Visual("film", feats, [float(i) for i in range(1000)], []), backend=backend)
    stride = int(chat.visual.frame_times[1])
    assert stride > 1 and len(chat.visual.features) == len(range(0, 1000, stride))
    assert 2 * len(chat.visual.features) < 1200 <= 2 * len(range(0, 1000, stride - 1)) + 256
    assert f"every {ordinal(stride)} frame" in chat.notes[0]


def test_static_cache_backend_gives_the_same_answers(tiny):
    """The CUDA path (static cache; compiled decode on GPUs) computes what the growing cache does,
    and a conversation that outgrows the preallocated size goes on in a growing cache."""
    from transformers import DynamicCache, StaticCache

    static = TransformersBackend(tiny.model, static_cache=True, compile_decode=False, static_cache_tokens=64,
                                 static_max_tokens=256)
    questions = ("Hello?", "Who are you?", "Tell me about " + "the sea and " * 40 + "the harbour.")
    answers, kinds = [], []
    for backend in (TransformersBackend(tiny.model), static):
        chat = Chat(tiny, Visual("none"), backend=backend)
        answers.append([])
        for q in questions:
            answers[-1].append("".join(chat.ask(q, GREEDY)))
            kinds.append(type(chat.state.cache))
    assert answers[0] == answers[1]
    assert kinds[3:] == [StaticCache, StaticCache, DynamicCache]  # 256 tokens preallocated, then grown
    assert chat.state.length > 256
