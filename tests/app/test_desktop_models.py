"""The desktop's model picker: both families' installed models listed by name and family; picking
one makes new conversations ask it (kept as the chat model in settings.json), while a kept
conversation goes on with the model it began with."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from app.server.sample import FILM, MODEL, make_library
from app.settings import load_settings
from tests.support import qwen_vl as support
from tests.support.desktop import open_window, save_test_settings, wait_for_films

pytestmark = pytest.mark.slow

QWEN = "qwen3-vl-tiny"


@pytest.fixture()
def data(tmp_path: Path, tmp_path_factory) -> Path:
    data, _ = make_library(tmp_path)
    shutil.copytree(support.tiny_qwen_vl(tmp_path_factory), data / "models" / QWEN)
    save_test_settings(data, model=MODEL)
    return data


def test_the_picker_lists_both_families_and_new_conversations_ask_the_one_picked(qtbot, data: Path) -> None:
    window = open_window(qtbot, data, watch_folders=False)
    wait_for_films(qtbot, window, {FILM})
    picker = window.model_picker
    listed = {picker.itemData(i): picker.itemText(i) for i in range(picker.count())}
    assert listed == {MODEL: f"{MODEL} (LLaMA-VID)", QWEN: f"{QWEN} (Qwen3-VL)"}
    assert picker.currentData() == MODEL
    movie = window.service.movie(FILM)
    before = window.service.new_conversation(movie.id)

    picker.setCurrentIndex(picker.findData(QWEN))
    picker.activated.emit(picker.currentIndex())
    assert load_settings(data).model == QWEN  # kept for the next start
    assert window.service.shown_model == QWEN and window.service.family() == "qwen-vl"
    assert window.service.new_conversation(movie.id).model.endswith(QWEN)
    assert window.service.store.get(before.id).model.endswith(MODEL)  # begun with LLaMA-VID: stays so
    assert window.message.text() == f"New conversations ask {QWEN}"
