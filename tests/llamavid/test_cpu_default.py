"""The CPU default: a 7B on a machine whose GPU cannot hold it in fp16 (or without one) chats through
llama.cpp in q4_K_M, from a conversion made once, which says its disk space first, can be stopped and
goes on from its complete files; a film's KV cache is q8_0 unless asked otherwise.

The tiny checkpoint stands in for a 7B: the rule's size floor (``MIN_LLAMACPP_BYTES``) is lowered to
0 where a test says ``big``. Every file is real: converted by the same code and child process the
apps run, loaded by llama.cpp."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import cli
from llamavid.files import gguf_files
from llamavid.hub.installed import add_model, list_models
from llamavid.model.tiny import write_tiny_checkpoint
from llamavid.paths import DataDir
from llamavid.runtime import gguf_export, llm_choice
from llamavid.runtime.gguf_export import execute, part, plan_conversion
from llamavid.runtime.kv_size import llamacpp_kv_type
from llamavid.runtime.llm_choice import is_complete_conversion, prefers_llamacpp
from llamavid.runtime.load import NeedsConversion, choose_engine, load_model
from llamavid.runtime.options import LoadOptions

GiB = 2**30
SEVEN_B_WEIGHTS = 13_500_000_000
CPU = LoadOptions(device="cpu")


@pytest.fixture()
def big(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tiny checkpoint counts as a 7B for the rule."""
    monkeypatch.setattr(llm_choice, "MIN_LLAMACPP_BYTES", 0)


@pytest.fixture()
def data(tmp_path: Path, tiny_checkpoint_2heads: Path) -> Path:
    """A data folder with the 2-head tiny checkpoint (head size 32: a q8_0 cache fits it) as ``tiny``."""
    root = tmp_path / "data"
    DataDir(root).create()
    add_model(root, "tiny", tiny_checkpoint_2heads)
    return root


def test_the_rule_weighs_the_model_against_the_gpu() -> None:
    assert prefers_llamacpp(SEVEN_B_WEIGHTS, None)  # no GPU
    assert prefers_llamacpp(SEVEN_B_WEIGHTS, 16 * GiB)  # 13.5 GB in fp16 and room for a film do not fit
    assert not prefers_llamacpp(SEVEN_B_WEIGHTS, 24 * GiB)
    assert not prefers_llamacpp(5_000_000, None)  # a tiny model keeps transformers: no conversion for it
    assert llamacpp_kv_type("auto", 128) == "q8_0" and llamacpp_kv_type(None, 128) == "q8_0"
    assert llamacpp_kv_type("auto", 16) == "f16"  # no q8_0 cache for a head size llama.cpp cannot block
    assert llamacpp_kv_type("f32", 128) == "f32"  # the user's choice is kept
    assert LoadOptions().kv_type == "auto"


def test_small_models_keep_transformers(data: Path, tiny_checkpoint_2heads: Path) -> None:
    engine = choose_engine("tiny", tiny_checkpoint_2heads, CPU, data)
    assert (engine.backend, engine.convert_to) == ("transformers", None)


def test_the_cpu_default_is_llama_cpp_from_a_conversion_made_once(big, data: Path, tiny_checkpoint_2heads: Path,
                                                                  capsys) -> None:
    target = data / "models" / "tiny-gguf"
    engine = choose_engine("tiny", tiny_checkpoint_2heads, CPU, data)
    assert (engine.backend, engine.convert_to, engine.why) == ("llama.cpp", target, "no GPU")
    with pytest.raises(NeedsConversion) as err:
        load_model("tiny", data, CPU)
    assert "`llamavid models convert-gguf tiny`" in str(err.value) and "of disk" in str(err.value)
    assert "--backend transformers" in str(err.value) and err.value.target == target
    # what a person asks for is kept: transformers as it is, or bitsandbytes
    assert choose_engine("tiny", tiny_checkpoint_2heads, CPU.replace(backend="transformers"), data).backend == \
        "transformers"
    assert choose_engine("tiny", tiny_checkpoint_2heads, CPU.replace(bits=8), data).backend == "transformers"

    # `llamavid chat` says what to run
    assert cli.main(["--data-dir", str(data), "chat", "-m", "tiny", "--device", "cpu", "-p", "Hi"]) == 1
    assert "llamavid models convert-gguf tiny" in capsys.readouterr().err

    assert cli.main(["--data-dir", str(data), "models", "convert-gguf", "tiny"]) == 0
    out = capsys.readouterr().out
    assert f"tiny -> {target}: q4_K_M; about " in out and "free)" in out
    assert sorted(p.name for p in gguf_files(target)) == ["llm-q4_K_M.gguf"]
    assert not (target / ".convert").exists() and not list(target.glob("*.part"))
    assert is_complete_conversion(target, tiny_checkpoint_2heads)

    lv = load_model("tiny", data, CPU, load_vision=False)
    assert (lv.backend.name, Path(lv.backend.path), lv.backend.kv_type) == \
        ("llama.cpp", target / "llm-q4_K_M.gguf", "q8_0")  # a film's cache: q8_0 unless asked otherwise
    lv.backend.close()
    asked = load_model("tiny", data, CPU, load_vision=False, kv_type="f16")
    assert asked.backend.kv_type == "f16"
    asked.backend.close()
    assert cli.main(["--data-dir", str(data), "chat", "-m", "tiny", "--device", "cpu", "-p", "Hi",
                     "--max-new-tokens", "3", "--temperature", "0"]) == 0


def test_a_stopped_conversion_keeps_its_complete_files_and_goes_on(tmp_path: Path, tiny_checkpoint_2heads: Path,
                                                                  tiny_checkpoint: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "tiny-gguf"
    plan = plan_conversion(tiny_checkpoint_2heads, out, ("q4_K_M",))
    assert [(s.kind, s.kept) for s in plan.steps] == [("f16", False), ("q4_K_M", True), ("vision", True)]
    needed = plan.needed  # the plan reads the folder as it is when asked
    assert needed == plan.total > 0 and plan.present == 0 and plan.free() > needed
    quantized = out / "llm-q4_K_M.gguf"

    def stopped(source: Path, target: Path, kind: str, threads: int = 0) -> Path:
        part(target).write_bytes(b"half a file")  # the quantizer was under way
        raise KeyboardInterrupt

    monkeypatch.setattr(gguf_export, "quantize_gguf", stopped)
    with pytest.raises(KeyboardInterrupt):
        execute(plan)
    intermediate = out / ".convert" / "llm-f16.gguf"
    assert intermediate.is_file() and part(quantized).is_file() and not quantized.exists()
    assert not gguf_files(out) and not (out / "config.json").exists()  # nothing a loader or a list takes
    assert not is_complete_conversion(out)
    monkeypatch.undo()

    again = plan_conversion(tiny_checkpoint_2heads, out, ("q4_K_M",))
    assert [s.done for s in again.steps] == [True, False, False]  # the .part is not taken for the file
    assert again.present == intermediate.stat().st_size and again.needed == needed - again.steps[0].size
    written = []
    real_write = gguf_export.write_gguf
    monkeypatch.setattr(gguf_export, "write_gguf", lambda *a, **k: written.append(a) or real_write(*a, **k))
    assert execute(again) == [quantized, out / "vision.safetensors"]
    assert written == []  # the f16 file was not written again
    assert is_complete_conversion(out, tiny_checkpoint_2heads)
    assert not (out / ".convert").exists() and not list(out.glob("*.part"))
    marker = json.loads((out / "gguf.json").read_text())
    assert marker["files"] == ["llm-q4_K_M.gguf", "vision.safetensors"]

    # another checkpoint converted into the same folder starts again rather than mixing files
    other = plan_conversion(tiny_checkpoint, out, ("q4_K_M",))
    assert other.stale and other.needed == other.total and other.present == 0


def _events(proc: subprocess.Popen[str]):
    for line in proc.stdout or ():
        yield json.loads(line)


def test_the_conversion_child_stops_on_sigterm_and_the_next_run_goes_on(data: Path, tmp_path: Path) -> None:
    gate = tmp_path / "go"
    env = {**os.environ, "LLAMAVID_TEST_GATE": str(gate), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "tests.support.held_convert", "--data-dir", str(data), "tiny"],
                            stdout=subprocess.PIPE, text=True, env=env, start_new_session=True)
    try:
        seen = []
        for event in _events(proc):
            seen.append(event)
            if event["event"] == "file" and event["label"] == "llm-q4_K_M.gguf":
                proc.send_signal(signal.SIGTERM)  # Cancel, while llama.cpp's quantizer would run
        assert proc.wait(60) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
    plan = seen[0]
    assert plan["event"] == "plan" and plan["needed"] == plan["total"] > 0 and plan["done"] == 0
    assert plan["free"] > plan["needed"] and plan["folder"] == str(data / "models" / "tiny-gguf")
    assert [e["label"] for e in seen if e["event"] == "file"] == ["llm-f16.gguf", "llm-q4_K_M.gguf"]
    assert seen[-1]["event"] == "cancelled" and seen[-1]["kept"] > 0
    target = data / "models" / "tiny-gguf"
    assert not list(target.rglob("*.part")) and not (target / "config.json").exists()
    assert not any(m.name == "tiny-gguf" for m in list_models(data))

    again = subprocess.run([sys.executable, "-m", "app.model_convert", "--data-dir", str(data), "tiny"],
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    events = [json.loads(line) for line in again.stdout.splitlines()]
    assert events[0]["event"] == "plan" and events[0]["done"] == seen[-1]["kept"]  # it goes on from there
    assert events[0]["needed"] < plan["needed"]
    assert [e["label"] for e in events if e["event"] == "file"] == ["llm-q4_K_M.gguf", "vision.safetensors"]
    assert events[-1] == {"event": "done", "folder": str(target)}
    progress = [e["done"] for e in events if e["event"] == "progress"]
    assert progress == sorted(progress) and progress[-1] == events[0]["total"]
    assert is_complete_conversion(target)


def test_the_disk_space_said_first_holds_what_is_written(tmp_path: Path) -> None:
    """The plan's sizes come from config.json and file sizes alone; the LLM's GGUF files come within
    10 % of them (rows of 256 values, as a 7B's: q4_K_M applies throughout), and no file outgrows
    its share of the space said."""
    source = write_tiny_checkpoint(tmp_path / "wide", heads=2, hidden_size=256, intermediate_size=512)
    out = tmp_path / "wide-gguf"
    plan = plan_conversion(source, out, ("f16", "q4_K_M"))
    said = {s.kind: s.size for s in plan.steps}
    execute(plan)
    for kind in ("f16", "q4_K_M"):
        written = (out / f"llm-{kind}.gguf").stat().st_size
        assert abs(written - said[kind]) <= 0.1 * written + 2**16, (kind, written, said[kind])
    assert (out / "vision.safetensors").stat().st_size <= said["vision"]
    shutil.rmtree(out)
