"""Which models can chat: one rule in the catalogue (``catalog.can_chat``), for every kind a model can
have, for folders whose kind is read from their files, and as the apps list them."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from app import status as st
from llamavid.hub import catalog
from llamavid.hub.installed import add_model, infer_kind, list_models
from llamavid.paths import DataDir

EVERY_KIND = {"image": True, "video": True, "long-video": True, "qwen-vl": True, "pretrain": False,
              "base-llm": False, "speech": False, "scenes": False, "unknown": True, None: True}


def test_every_kind_has_an_answer() -> None:
    assert set(catalog.KINDS) | {"unknown", None} == set(EVERY_KIND)  # a new kind gets a line here
    for kind, answer in EVERY_KIND.items():
        assert catalog.can_chat(kind) is answer, kind
    assert set(catalog.CHAT_KINDS) == {k for k, v in EVERY_KIND.items() if v and k in catalog.KINDS}


def test_the_catalogue_chat_models() -> None:
    chat = catalog.chat_models(catalog.entries())
    assert {e.kind for e in chat} == {"image", "video", "long-video", "qwen-vl"}
    assert [e.name for e in chat] == [e.name for e in (*catalog.MODELS, *catalog.QWEN_VL_MODELS)
                                      if e.kind in catalog.CHAT_KINDS]  # in order
    assert not any(e.kind in ("pretrain", "base-llm", "speech", "scenes") for e in chat)
    # what the apps offer to download: the chat models that read a film
    assert [e.kind for e in st.CHAT_MODELS] == ["video", "video", "long-video"]


def _folder(root: Path, name: str, files: dict[str, object]) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    for file, content in files.items():
        (folder / file).write_text(json.dumps(content) if isinstance(content, dict) else str(content))
    return folder


@pytest.mark.parametrize(("files", "kind"), [
    ({"config.json": {"mm_vision_tower": "eva", "compress_type": None}, "model.safetensors": ""}, "image"),
    ({"config.json": {"mm_vision_tower": "eva", "compress_type": "mean"}, "model.safetensors": ""}, "video"),
    ({"config.json": {"mm_vision_tower": "eva", "max_token": 65536}, "model.safetensors": ""}, "long-video"),
    ({"config.json": {"mm_hidden_size": 1408}, "mm_projector.bin": ""}, "pretrain"),
    ({"config.json": {"hidden_size": 4096}, "model.safetensors": ""}, "base-llm"),
    ({"config.json": {"suppress_ids": []}, "model.bin": "", "tokenizer.json": "{}"}, "speech"),
    ({"config.json": "{broken", "model.safetensors": ""}, "unknown"),
])
def test_a_users_folder_is_offered_by_what_its_files_say(tmp_path: Path, files: dict, kind: str) -> None:
    folder = _folder(tmp_path, "mine", files)
    assert infer_kind(folder) == kind
    assert catalog.can_chat(kind) is EVERY_KIND[kind]


def test_installed_models_as_the_apps_list_them(tmp_path: Path) -> None:
    data = DataDir(tmp_path / "data")
    _folder(data.models, "whisper-small", {"config.json": {"suppress_ids": []}, "model.bin": "",
                                           "tokenizer.json": "{}"})
    _folder(data.models, "vicuna-7b-v1.5", {"config.json": {"hidden_size": 4096}, "model.safetensors": ""})
    _folder(data.models, "llama-vid-7b-pretrain-224", {"config.json": {}, "mm_projector.bin": ""})
    status = st.collect_status(data.root)
    assert {m.kind for m in status.models} == {"speech", "base-llm", "pretrain"}
    assert catalog.chat_models(status.models) == [] and not status.has_models  # none of them can chat
    assert st.NEEDS_MODEL in st.status_markdown(status)

    gone = _folder(tmp_path, "elsewhere", {"config.json": {"mm_vision_tower": "eva"}, "model.safetensors": ""})
    add_model(data, "my-model", gone)
    shutil.rmtree(gone)  # the drive was unplugged: the model is still offered, and its status says why
    listed = {m.name: m for m in list_models(data)}
    assert (listed["my-model"].kind, listed["my-model"].status) == ("unknown", "missing")
    assert [m.name for m in catalog.chat_models(list_models(data))] == ["my-model"]
    assert st.collect_status(data.root).has_models
