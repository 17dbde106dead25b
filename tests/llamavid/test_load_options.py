"""``LoadOptions``: one frozen value for how a model is loaded, its checks, its key (what a prepared
film is tied to), its JSON, the command line's one set of flags, and ``load_model``'s overrides."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

import cli
from cli.options import FLAGS, add_load_arguments, load_options_from
from llamavid.errors import UserError
from llamavid.runtime import load as load_module
from llamavid.runtime.options import LoadOptions

#: Every option set to something other than its default.
EVERYTHING = LoadOptions(device="cpu", dtype="bf16", bits=4, backend="llama.cpp", base="vicuna-7b-v1.5",
                         vision="/w/eva_vit_g.pth", template="llava_v1", load_vision=False, gguf_type="q8_0",
                         kv_type="q8_0", n_ctx=4096, threads=3, vision_engine="int8")


def test_bad_bits_and_backend_are_user_errors_that_say_what_to_use() -> None:
    with pytest.raises(UserError, match="bits must be 4 or 8.*--load-4bit"):
        LoadOptions(bits=3)
    with pytest.raises(UserError, match="backend must be one of auto, transformers, llama.cpp"):
        LoadOptions(backend="onnx")
    with pytest.raises(UserError, match="bits must be 4 or 8"):  # a copy is checked too
        LoadOptions().replace(bits=16)
    with pytest.raises(TypeError, match="unknown load option.*colour"):  # a typo in code is a bug, not a user's
        LoadOptions().replace(colour="red")
    assert LoadOptions(bits=8).bits == 8 and LoadOptions(backend="transformers").backend == "transformers"


def test_options_are_frozen_and_a_path_is_kept_as_its_string() -> None:
    options = LoadOptions()
    with pytest.raises(AttributeError):
        options.device = "cpu"  # type: ignore[misc]
    assert LoadOptions(vision=Path("/w/eva_vit_g.pth")) == LoadOptions(vision="/w/eva_vit_g.pth")
    assert options.replace(device="cpu") == LoadOptions(device="cpu") and options.device == "auto"


def test_the_key_holds_exactly_the_options_that_change_what_the_model_computes() -> None:
    assert LoadOptions().key() == {"backend": "auto", "device": "auto", "dtype": "auto", "kv_type": "auto"}
    assert EVERYTHING.key() == {"backend": "llama.cpp", "bits": 4, "device": "cpu", "dtype": "bf16",
                                "gguf_type": "q8_0", "kv_type": "q8_0"}
    # every other option leaves the key as it is ...
    for name, value in EVERYTHING.to_dict().items():
        changed = LoadOptions().replace(**{name: value}).key() != LoadOptions().key()
        assert changed == (name in {"backend", "bits", "device", "dtype", "gguf_type", "kv_type"}), name


def test_json_round_trip_of_every_option_and_of_a_key() -> None:
    text = json.dumps(EVERYTHING.to_dict())
    assert LoadOptions.from_dict(json.loads(text)) == EVERYTHING
    assert LoadOptions.from_dict(json.loads(json.dumps(LoadOptions().to_dict()))) == LoadOptions()
    assert LoadOptions.from_dict(EVERYTHING.key()) == LoadOptions(device="cpu", dtype="bf16", bits=4,
                                                                  backend="llama.cpp", gguf_type="q8_0",
                                                                  kv_type="q8_0")
    assert LoadOptions.from_dict({}) == LoadOptions()
    with pytest.raises(UserError, match="unknown load option.*colour"):
        LoadOptions.from_dict({"device": "cpu", "colour": "red"})
    with pytest.raises(UserError, match="JSON object"):
        LoadOptions.from_dict(["cpu"])  # type: ignore[arg-type]


def test_changed_lays_options_over_others() -> None:
    saved = LoadOptions(bits=4, device="cuda")
    server = LoadOptions(device="cpu", dtype="fp32")
    assert server.changed() == {"device": "cpu", "dtype": "fp32"} and LoadOptions().changed() == {}
    assert saved.replace(**server.changed()) == LoadOptions(bits=4, device="cpu", dtype="fp32")


FLAG_ARGS = ["--load-4bit", "--device", "cpu", "--dtype", "bf16", "--backend", "llama.cpp", "--gguf-type", "q8_0",
             "--kv-type", "q8_0", "--ctx", "4096", "--threads", "3", "--base", "vicuna-7b-v1.5",
             "--vision", "/w/eva_vit_g.pth", "--conv-mode", "llava_v1"]


def _parse(argv: list[str]) -> argparse.Namespace:
    return cli.build_parser().parse_args(argv)


def test_chat_and_eval_flags_make_the_same_options() -> None:
    chat = load_options_from(_parse(["chat", "-m", "m", *FLAG_ARGS, "--vision-engine", "int8"]))
    evaluation = load_options_from(_parse(["eval", "gqa", "--data", "d", "-m", "m", *FLAG_ARGS]))
    assert chat == EVERYTHING.replace(load_vision=True)
    assert evaluation == EVERYTHING.replace(load_vision=True, vision_engine=None)  # eval has no --vision-engine
    # no flag: the dataclass's defaults, in every command that takes them
    assert load_options_from(_parse(["chat", "-m", "m"])) == LoadOptions()
    assert load_options_from(_parse(["eval", "gqa", "--data", "d", "-m", "m"])) == LoadOptions()
    assert load_options_from(_parse(["index", "run", "--device", "cpu"])) == LoadOptions(device="cpu")
    assert _parse(["bench", "--device", "cpu"]).device == "cpu"
    for command in (["chat", "-m", "m"], ["eval", "gqa", "--data", "d", "-m", "m"]):
        with pytest.raises(UserError, match="choose one of --load-4bit and --load-8bit"):
            load_options_from(_parse([*command, "--load-4bit", "--load-8bit"]))
        assert load_options_from(_parse([*command, "--load-8bit"])).bits == 8


def _actions(argv: list[str]) -> dict[str, argparse.Action]:
    """The actions of the subcommand parser that ``argv`` reaches, by dest."""
    parser = cli.build_parser()
    for word in argv:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[word]
    return {a.dest: a for a in parser._actions}


def test_one_definition_of_each_flag() -> None:
    chat, evaluation, index = _actions(["chat"]), _actions(["eval", "gqa"]), _actions(["index", "run"])
    for name, (flag, _) in FLAGS.items():
        a = chat[name]
        assert a.option_strings == [flag]
        shared = [c for c in (evaluation.get(name), index.get(name)) if c is not None]
        for b in shared:
            assert (b.option_strings, b.default, b.choices, b.type) == (a.option_strings, a.default, a.choices, a.type)
            assert b.help.startswith(a.help)  # a command may add its own words after the shared help
    assert {"n_ctx", "template", "load_4bit", "load_8bit"} <= set(evaluation)
    assert "vision_engine" not in evaluation and {"device", "dtype", "vision", "vision_engine"} <= set(index)


def test_a_command_takes_a_subset_and_an_unknown_name_is_a_bug() -> None:
    parser = argparse.ArgumentParser()
    add_load_arguments(parser, which=("device", "n_ctx"))
    args = parser.parse_args(["--ctx", "512"])
    assert load_options_from(args) == LoadOptions(n_ctx=512)
    with pytest.raises(SystemExit):
        parser.parse_args(["--dtype", "bf16"])
    with pytest.raises(ValueError, match="no load flag for colour"):
        add_load_arguments(argparse.ArgumentParser(), which=("colour",))


class _Recorded:
    template = "vicuna_v1"


@pytest.fixture()
def recorded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[list[dict], Path]:
    """``LlamaVid.load`` replaced by a recorder, and a data folder with an (empty) model ``m``."""
    calls: list[dict] = []

    class FakeLlamaVid:
        @classmethod
        def load(cls, folder, **kwargs):
            kwargs.pop("vision_engine")  # a VisionEngines built from vision_engine (compared below by its spec)
            calls.append({"folder": folder, **kwargs})
            return _Recorded()

    monkeypatch.setattr(load_module, "LlamaVid", FakeLlamaVid)
    folder = tmp_path / "data" / "models" / "m"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    return calls, tmp_path / "data"


def test_load_model_keywords_are_the_same_as_options(recorded) -> None:
    calls, data = recorded
    chosen = dict(device="cpu", dtype="bf16", bits=8, backend="transformers", vision="/w/eva.pth",
                  load_vision=False, gguf_type="q8_0", kv_type="q8_0", n_ctx=2048, threads=2)
    load_module.load_model("m", data, **chosen)
    load_module.load_model("m", data, LoadOptions(**chosen))
    load_module.load_model("m", data, LoadOptions(**{**chosen, "device": "cuda", "n_ctx": 99}), device="cpu",
                           n_ctx=2048)
    assert calls[0] == calls[1] == calls[2]
    assert (calls[0]["device"], calls[0]["dtype"], calls[0]["bits"], calls[0]["n_ctx"], calls[0]["load_vision"]) == \
        ("cpu", "bf16", 8, 2048, False)
    load_module.load_model("m", data)
    assert (calls[3]["device"], calls[3]["bits"], calls[3]["kv_type"], calls[3]["load_vision"]) == \
        ("auto", None, "auto", True)
    assert load_module.load_model("m", data, template="llava_v1").template == "llava_v1"
    with pytest.raises(TypeError, match="unknown load option"):
        load_module.load_model("m", data, colour="red")
    with pytest.raises(UserError, match="bits must be 4 or 8"):
        load_module.load_model("m", data, bits=3)
