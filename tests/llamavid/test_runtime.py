"""The library's one loading policy (`load_model`), inputs fitted to the context, and the typed
errors every front end maps to its own words."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from llamavid.errors import CheckpointError, ContextOverflow, NotEnoughMemory, UserError
from llamavid.files import EVA_FILE, find_part, gguf_name, is_stage1, weight_index
from llamavid.runtime.chat import Chat, plan_video_stride
from llamavid.runtime.control import Rates
from llamavid.runtime.generate import SamplingOptions
from llamavid.runtime.inputs import Visual
from llamavid.runtime.load import load_model, pick_backend

GREEDY = SamplingOptions(temperature=0, max_new_tokens=2)


@pytest.fixture()
def data_dir(tmp_path: Path, tiny_checkpoint: Path) -> Path:
    """A data folder with the tiny checkpoint installed as ``tiny`` and its shared parts in shared/."""
    data = tmp_path / "data"
    folder = data / "models" / "tiny"
    shutil.copytree(tiny_checkpoint, folder)
    shared = data / "models" / "shared"
    shared.mkdir()
    for name in (EVA_FILE, "bert_vocab.txt"):
        (folder / name).rename(shared / name)
    return data


def test_load_model_resolves_an_installed_name_and_finds_the_shared_parts(data_dir: Path, tiny) -> None:
    lv = load_model("tiny", data_dir, device="cpu", dtype="fp32")
    shared = data_dir / "models" / "shared"
    assert lv.report.folder == data_dir / "models" / "tiny"
    assert lv.report.eva_file == shared / EVA_FILE and lv.report.vocab_file == shared / "bert_vocab.txt"
    assert lv.backend.name == "transformers" and lv.template == tiny.template
    image = np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8)
    assert lv.ask("What is this?", GREEDY, images=[image]) == tiny.ask("What is this?", GREEDY, images=[image])


def test_load_model_template_and_bad_requests_are_user_errors(data_dir: Path) -> None:
    assert load_model("tiny", data_dir, device="cpu", template="llava_v1", load_vision=False).template == "llava_v1"
    with pytest.raises(UserError, match="vicuna_v1"):  # the message lists the templates there are
        load_model("tiny", data_dir, template="no-such-template")
    with pytest.raises(UserError, match="bits must be 4 or 8"):
        load_model("tiny", data_dir, bits=3)
    with pytest.raises(UserError, match="not installed|unknown model"):
        load_model("llama-vid-7b-full-224-video-fps-1", data_dir)
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA GPU is available"):
            load_model("tiny", data_dir, device="cuda")


def test_a_stage1_folder_needs_a_base_llm(tmp_path: Path, data_dir: Path) -> None:
    stage1 = data_dir / "models" / "my-pretrain"
    stage1.mkdir()
    shutil.copy(data_dir / "models" / "tiny" / "config.json", stage1 / "config.json")
    (stage1 / "mm_projector.bin").write_bytes(b"")
    assert is_stage1(stage1) and not is_stage1(data_dir / "models" / "tiny")
    with pytest.raises(UserError, match="name its base LLM with --base"):  # not a catalogue name
        load_model("my-pretrain", data_dir)


def test_backend_auto_picks_llama_cpp_only_for_a_converted_folder(tmp_path: Path) -> None:
    assert pick_backend(tmp_path) == "transformers"
    (tmp_path / gguf_name("q8_0")).write_bytes(b"GGUF")
    assert pick_backend(tmp_path) == "llama.cpp" and pick_backend(tmp_path, "transformers") == "transformers"
    with pytest.raises(UserError, match="backend must be one of"):
        pick_backend(tmp_path, "onnx")


def test_find_part_prefers_what_the_user_named(tmp_path: Path) -> None:
    folder, shared, mine = tmp_path / "ckpt", tmp_path / "shared", tmp_path / "mine.pth"
    for f in (folder / EVA_FILE, shared / EVA_FILE, mine):
        f.parent.mkdir(exist_ok=True)
        f.write_bytes(b"x")
    assert find_part(EVA_FILE, folder, mine, [shared]) == mine
    assert find_part(EVA_FILE, folder, None, [shared]) == folder / EVA_FILE
    (folder / EVA_FILE).unlink()
    assert find_part(EVA_FILE, folder, None, [shared]) == shared / EVA_FILE
    assert find_part(EVA_FILE, folder, None, []) is None


def test_a_broken_weight_index_is_a_checkpoint_error_naming_it(tmp_path: Path) -> None:
    index = tmp_path / "pytorch_model.bin.index.json"
    index.write_text("{not json")
    with pytest.raises(CheckpointError, match="pytorch_model.bin.index.json: not a valid weight index"):
        weight_index(tmp_path)
    assert issubclass(CheckpointError, UserError)


def test_a_long_video_is_strided_to_fit_by_the_library(tiny, monkeypatch) -> None:
    """The rule the CLI used to apply by itself: keep every k-th frame, say so in Visual.notes."""
    monkeypatch.setattr(tiny.config, "max_position_embeddings", 128)  # 128 - (64 question + 16 answer) = 48 rows
    frames = np.random.default_rng(1).integers(0, 255, (60, 16, 16, 3), dtype=np.uint8)
    stride = plan_video_stride(tiny, 60, max_new_tokens=16)
    assert stride == 3  # 2 rows per frame: 24 frames fit, 60 / 24 rounds up to 3
    visual = tiny.visual(video=frames, answer_tokens=16)
    assert visual.features.shape[0] == 20 and visual.frame_times == [float(t) for t in range(0, 60, 3)]
    assert visual.notes == ["60 frames do not fit the context; using every 3rd"]
    short = tiny.visual(video=frames[:10], answer_tokens=16)
    assert short.features.shape[0] == 10 and short.notes == []
    with pytest.raises(ContextOverflow) as err:  # not even one frame fits beside the text
        tiny.visual(video=frames, answer_tokens=100)
    assert err.value.limit == 128 and isinstance(err.value, UserError)


def test_fitting_a_film_leaves_the_callers_visual_alone(tiny, monkeypatch) -> None:
    monkeypatch.setattr(tiny.config, "max_position_embeddings", 1024)  # 600 frames x 2 rows do not fit
    feats = torch.randn(600, 256, 176)
    film = Visual("film", feats, [float(t) for t in range(600)], [])
    chat = Chat(tiny, film)
    assert chat.visual.features.shape[0] == 200 and chat.notes == [
        "the film has more frames than the 1024-token context holds; using every 3rd frame (200 frames)"]
    assert film.features is feats and len(film.frame_times) == 600 and film.notes == []


def test_a_turn_past_the_context_is_a_context_overflow(tiny, monkeypatch) -> None:
    monkeypatch.setattr(tiny.config, "max_position_embeddings", 64)
    chat = Chat(tiny, Visual("none"))
    with pytest.raises(ContextOverflow) as err:
        chat.ask("why " * 80, GREEDY)
    assert err.value.needed > err.value.limit == 64 and "start a new chat" in str(err.value)
    assert chat.turns == []


def test_a_turn_that_does_not_fit_memory_is_refused_before_it_runs(tiny, monkeypatch) -> None:
    monkeypatch.setattr("llamavid.runtime.memory.available_memory", lambda device: 1000)
    chat = Chat(tiny, Visual("none"))
    with pytest.raises(NotEnoughMemory, match="not enough memory") as err:
        chat.ask("What is this?", GREEDY)
    assert isinstance(err.value, MemoryError) and isinstance(err.value, UserError) and chat.turns == []


def test_every_public_name_resolves() -> None:
    """`from llamavid import X` for each name the README documents (they are imported on first use)."""
    import llamavid

    assert {"LlamaVid", "load_model", "Chat", "Visual", "SamplingOptions"} <= set(llamavid.__all__)
    assert all(getattr(llamavid, name).__name__ == name for name in llamavid.__all__)


def test_a_time_budget_strides_a_film_and_refuses_a_question_that_would_take_too_long(tiny, monkeypatch):
    """At measured rates of 10 frames/s (Q-Former) and 1000 tokens/s (prefill), 300 frames take 30 s
    plus the prompt; a 20 s budget keeps every 2nd frame, and a question over a 10 s budget is refused
    with what would fit (every 2nd: ~15.6 s, 3rd: ~10.5 s, 4th: ~7.9 s), before any Q-Former work."""
    monkeypatch.setattr(tiny, "rates", Rates({"visual": 10.0, "prefill": 1000.0}))
    film = Visual("film", torch.randn(300, 256, 176), [float(t) for t in range(300)], [])
    chat = Chat(tiny, film, time_budget=20.0)
    assert chat.stride == 2 and "can be read in 20 s" in chat.notes[0] and "every 2nd frame" in chat.notes[0]
    monkeypatch.setattr(tiny, "visual_tokens", lambda *a, **k: pytest.fail("the Q-Former ran"))
    refusal = r"about 31 s on this machine, over the 10 s allowed; every 4th frame: about 8 s"
    with pytest.raises(UserError, match=refusal):
        Chat(tiny, film).ask("What happens?", GREEDY, time_budget=10.0)
