"""The second family behind the project's seams: a Qwen3-VL folder is a chat model of its own kind, loads
through ``load_model``, converses with follow-ups, restores, cuts a cancelled turn out, and reads a
film's planned frames by seeking; the catalogue pulls the published GGUF + mmproj by name."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from llamavid.errors import Cancelled
from llamavid.hub import catalog, hf, pull
from llamavid.hub.installed import infer_kind, is_checkpoint, list_models, resolve_model
from llamavid.media.seek import frames_at
from llamavid.media.still import frame_at
from llamavid.media.synthetic import clock, write_video
from llamavid.runtime.control import Control
from llamavid.runtime.family import LLAMA_VID, QWEN_VL, QwenVL, family_of, qwen_gguf_pair
from llamavid.runtime.generate import SamplingOptions
from llamavid.runtime.load import load_model
from llamavid.runtime.qwen_chat import QwenChat, image_turn, text_turn
from tests.support import qwen_vl as support

GREEDY = SamplingOptions(temperature=0, max_new_tokens=8)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return support.tiny_qwen_vl(tmp_path_factory)


@pytest.fixture(scope="module")
def model(tiny, tmp_path_factory) -> QwenVL:
    data = tmp_path_factory.mktemp("qwen-data")
    shutil.copytree(tiny, data / "models" / "qwen3-vl-tiny")
    loaded = load_model("qwen3-vl-tiny", data, device="cpu", dtype="fp32")
    assert isinstance(loaded, QwenVL)
    return loaded


def _answer(chat: QwenChat, question: str, control: Control | None = None) -> str:
    return "".join(chat.ask(question, GREEDY, control=control))


# ---------------------------------------------------------------- folders, kinds, catalogue
def test_a_qwen_folder_is_a_chat_model_of_its_own_family(tiny, tmp_path):
    assert family_of(tiny) == QWEN_VL and infer_kind(tiny) == "qwen-vl" and catalog.can_chat("qwen-vl")
    gguf = tmp_path / "qwen-gguf"
    gguf.mkdir()
    for name in ("Qwen3VL-4B-Instruct-Q8_0.gguf", "Qwen3VL-4B-Instruct-Q4_K_M.gguf",
                 "mmproj-Qwen3VL-4B-Instruct-F16.gguf"):
        (gguf / name).write_bytes(b"x")
    assert qwen_gguf_pair(gguf) == (gguf / "Qwen3VL-4B-Instruct-Q4_K_M.gguf",
                                    gguf / "mmproj-Qwen3VL-4B-Instruct-F16.gguf")
    assert family_of(gguf) == QWEN_VL and infer_kind(gguf) == "qwen-vl" and is_checkpoint(gguf)
    assert family_of(tmp_path) == LLAMA_VID


def test_installed_qwen_models_are_listed_complete_as_chat_models(tiny, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny, data / "models" / "qwen3-vl-tiny")
    (data / "models" / "qwen-gguf").mkdir(parents=True)
    for name in ("q.gguf", "mmproj-q.gguf"):
        (data / "models" / "qwen-gguf" / name).write_bytes(b"x")
    found = {m.name: m for m in list_models(data)}
    assert {n: (m.kind, m.status) for n, m in found.items()} == {"qwen3-vl-tiny": ("qwen-vl", "complete"),
                                                                  "qwen-gguf": ("qwen-vl", "complete")}
    assert resolve_model("qwen-gguf", data) == data / "models" / "qwen-gguf"


def test_catalogue_has_three_sizes_in_both_layouts_with_sizes_and_memory():
    names = {e.name: e for e in catalog.QWEN_VL_MODELS}
    assert set(names) == {f"qwen3-vl-{s}-instruct{g}" for s in ("2b", "4b", "8b") for g in ("", "-gguf")}
    for entry in names.values():
        assert entry.kind == "qwen-vl" and entry.approx_size and entry.memory > entry.approx_size
        assert catalog.get(entry.repo_id) is entry and entry in catalog.chat_models(catalog.entries())
    assert names["qwen3-vl-4b-instruct"].repo_id == "Qwen/Qwen3-VL-4B-Instruct"
    assert names["qwen3-vl-4b-instruct-gguf"].repo_id == "Qwen/Qwen3-VL-4B-Instruct-GGUF"


def test_pull_plan_of_a_gguf_repo_takes_its_q4_k_m_and_f16_mmproj(tmp_path, monkeypatch):
    """The published repo holds several quantizations and two mmproj files and no config.json."""
    listed = ["README.md", ".gitattributes", "Qwen3VL-8B-Instruct-F16.gguf", "Qwen3VL-8B-Instruct-Q8_0.gguf",
              "Qwen3VL-8B-Instruct-Q4_K_M.gguf", "mmproj-Qwen3VL-8B-Instruct-F16.gguf",
              "mmproj-Qwen3VL-8B-Instruct-Q8_0.gguf"]
    files = tuple(hf.RepoFile(name, 100 + i, "ab" * 32, None) for i, name in enumerate(listed))
    monkeypatch.setattr(hf, "hub_repo_files", lambda repo: hf.RepoListing(repo, "c" * 40, files))
    plan = pull.plan_pull(catalog.get("qwen3-vl-8b-instruct-gguf"), tmp_path)
    assert [r.dest.name for r in plan.remotes] == ["Qwen3VL-8B-Instruct-Q4_K_M.gguf",
                                                   "mmproj-Qwen3VL-8B-Instruct-F16.gguf"]
    assert not plan.shared_remotes and plan.remotes[0].sha256 == "ab" * 32  # verified as every pull is


# ---------------------------------------------------------------- the conversation
def test_follow_ups_restore_and_saved_state_give_the_same_next_answer(model):
    image = support.frames(1, 150, 100, seed=5)[0]
    chat = QwenChat(model, image_turn([image]))
    first, second = _answer(chat, "What is this?"), _answer(chat, "And then?")
    assert first and second and len(chat.turns) == 2
    turns, state = list(chat.turns), chat.state_bytes()
    expected = _answer(chat, "More?")

    rebuilt = QwenChat(model, image_turn([image]))
    rebuilt.restore(turns)
    assert _answer(rebuilt, "More?") == expected
    loaded = QwenChat(model, image_turn([image]))
    loaded.load_state(state, turns)
    assert _answer(loaded, "More?") == expected


def test_a_cancelled_turn_is_cut_out_of_the_cache(model):
    """The model answers one conversation at a time: the uncancelled reference is asked first."""
    clean = QwenChat(model, text_turn())
    _answer(clean, "Hello?")
    expected = _answer(clean, "Next?")

    chat = QwenChat(model, text_turn())
    _answer(chat, "Hello?")
    control = Control()
    pieces = chat.ask("A question to stop", GREEDY, control=control)
    next(pieces)
    control.cancel()
    with pytest.raises(Cancelled):
        list(pieces)
    assert len(chat.turns) == 1
    assert _answer(chat, "Next?") == expected


def test_an_answer_stopped_early_is_kept_and_closed_before_the_next_turn(model):
    chat = QwenChat(model, text_turn())
    pieces = chat.ask("Tell me", SamplingOptions(temperature=0, max_new_tokens=6))
    next(pieces)
    pieces.close()
    assert chat.turns[-1].stopped and not chat.closed
    assert _answer(chat, "Go on")  # the cut answer is closed first (follow_up's answer_closed=False)


# ---------------------------------------------------------------- a film's frames by seeking
def test_frames_at_seeks_to_the_planned_times_as_the_indexer_reads_them(tmp_path):
    film = write_video(tmp_path / "film.mp4", clock(96, 64, 10), fps=10, seconds=20)
    times = [0.55, 3.3, 3.4, 9.95, 17.0]
    got = list(frames_at(film, times, size=(64, 32)))
    assert [img.shape for _, img in got] == [(32, 64, 3)] * len(times)
    # the first decoded frame at or after each time; non-reference frames are skipped, as the indexer
    # skips them, so a frame may be up to two frames late (and one frame stands for one time only)
    shown = [t for t, _ in got]
    assert all(t - 1e-6 <= s <= t + 0.2 + 1e-6 for t, s in zip(times, shown, strict=True))
    assert shown == sorted(set(shown))
    for s, (_, image) in zip(shown, frames_at(film, times), strict=True):
        np.testing.assert_array_equal(image, frame_at(film, s))  # the very frame shown then, upright


def test_frames_past_the_end_repeat_the_last_frame(tmp_path):
    film = write_video(tmp_path / "film.mp4", clock(64, 48, 5), fps=5, seconds=4)
    got = list(frames_at(film, [1.0, 3.9, 30.0]))
    assert len(got) == 3
    np.testing.assert_array_equal(got[2][1], got[1][1])


# ---------------------------------------------------------------- the GGUF + mmproj layout on llama.cpp
@pytest.mark.slow
def test_a_gguf_folder_loads_on_llamacpp_and_converses_as_transformers_does(tiny, tmp_path_factory, model):
    """The tiny model's GGUF and mmproj (llama.cpp's own converter) in a folder of their own, as a
    GGUF repo is pulled: ``load_model`` runs it on llama.cpp, and a film question and its follow-up
    get the answers transformers gives."""
    from llamavid.prompt.qwen_vl import film_prompt
    from llamavid.runtime.qwen_chat import FirstTurn

    files = support.tiny_qwen_vl_gguf(tmp_path_factory)
    data = tmp_path_factory.mktemp("qwen-gguf-data")
    folder = data / "models" / "qwen3-vl-tiny-gguf"
    folder.mkdir(parents=True)
    for f in (files.model, files.mmproj):
        shutil.copy(f, folder / f.name)
    plan = support.film_plan()
    frames = support.frames(len(plan.times), *plan.size, seed=4)

    def film() -> FirstTurn:
        return FirstTurn("film", lambda q, _c: film_prompt(q, frames, plan.times, support.CUES), list(plan.times))

    lc = load_model("qwen3-vl-tiny-gguf", data, device="cpu", n_ctx=1024, kv_type="f32", threads=2)
    try:
        assert isinstance(lc, QwenVL) and lc.backend.name == "llama.cpp" and set(model.stops) <= set(lc.stops)
        on_lc = QwenChat(lc, film())
        got = [_answer(on_lc, "Who is going to the harbor?"), _answer(on_lc, "And then?")]
        got_ids = [t.answer_ids for t in on_lc.turns]
    finally:
        lc.close()
    on_hf = QwenChat(model, film())
    assert [_answer(on_hf, "Who is going to the harbor?"), _answer(on_hf, "And then?")] == got
    assert [t.answer_ids for t in on_hf.turns] == got_ids


def test_llamavid_chat_with_a_qwen_folder_answers_an_image_question(tiny, model, tmp_path, capsys):
    """``llamavid chat --model FOLDER --image ... --prompt ...`` with a Qwen3-VL folder: the answer the
    model gives the same picture directly."""
    from PIL import Image

    import cli

    picture = support.frames(1, 96, 64, seed=7)[0]
    Image.fromarray(picture).save(tmp_path / "a.png")
    assert cli.main(["--data-dir", str(tmp_path / "data"), "chat", "--model", str(tiny), "--image",
                     str(tmp_path / "a.png"), "--prompt", "What is this?", "--temperature", "0",
                     "--max-new-tokens", "8", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert printed == _answer(QwenChat(model, image_turn([picture])), "What is this?") + "\n"
