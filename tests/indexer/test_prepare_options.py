"""The library keeps how its chat model is loaded (:meth:`LoadOptions.key`) so that the indexer
prepares films as the chat service will use them; a size estimate reads the same options."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from indexer.prepare import chat_load_options, choose_chat_model, mark_for_preparing, model_kv_shape
from indexer.store import LibraryStore
from llamavid.files import gguf_name
from llamavid.runtime.options import LoadOptions


@pytest.fixture
def store(tmp_path):
    with LibraryStore.open(tmp_path / "library.db") as store:
        yield store


def test_the_chosen_model_keeps_only_the_options_that_change_a_prepared_state(store) -> None:
    assert chat_load_options(store) == LoadOptions()  # nothing chosen: load_model's defaults
    options = LoadOptions(device="cpu", dtype="bf16", threads=3, n_ctx=512, template="llava_v1", load_vision=False)
    choose_chat_model(store, "m", options, "fr")
    assert (store.setting("chat_model"), store.setting("language")) == ("m", "fr")
    assert json.loads(store.setting("chat_load_options")) == options.key()
    assert chat_load_options(store) == LoadOptions(device="cpu", dtype="bf16")  # threads, template...: not kept
    mark_for_preparing(store, [], "n", options=LoadOptions(bits=4, backend="transformers"))
    assert store.setting("chat_model") == "n"
    assert chat_load_options(store) == LoadOptions(bits=4, backend="transformers")


def test_a_damaged_or_foreign_setting_is_read_as_far_as_it_goes(store) -> None:
    store.set_setting("chat_load_options", "{broken")
    assert chat_load_options(store) == LoadOptions()
    store.set_setting("chat_load_options", json.dumps({"device": "cpu", "threads": 4, "colour": "red"}))
    assert chat_load_options(store) == LoadOptions(device="cpu")  # only the key's options are read


def test_the_size_estimate_reads_the_options(tmp_path: Path) -> None:
    folder = tmp_path / "data" / "models" / "m"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"num_hidden_layers": 2, "num_attention_heads": 4,
                                                    "hidden_size": 64}))
    shape, fp32 = model_kv_shape("m", tmp_path / "data", LoadOptions(device="cpu"))
    assert (shape.num_hidden_layers, fp32) == (2, 4.0)
    assert model_kv_shape("m", tmp_path / "data", LoadOptions(device="cpu", dtype="bf16"))[1] == 2.0
    assert model_kv_shape("m", tmp_path / "data", None)[1] in (2.0, 4.0)  # defaults: fp32 on a CPU, fp16 on a GPU
    (folder / gguf_name("q8_0")).write_bytes(b"GGUF")  # a converted folder: llama.cpp's KV cache type counts
    assert model_kv_shape("m", tmp_path / "data", LoadOptions(kv_type="q8_0"))[1] == 34 / 32
    assert model_kv_shape("m", tmp_path / "data", LoadOptions())[1] == 2.0  # f16
