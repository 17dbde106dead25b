"""The first run's advice across both families: which model and size fits a machine's free memory
(app.family_advice), with the catalogue's memory figures, and the settings dialog showing it."""
from __future__ import annotations

from pathlib import Path

import pytest

from app import hardware
from app.family_advice import advise
from app.hardware import GiB, Gpu, Hardware
from llamavid.hub import catalog

LV = "llama-vid-7b-full-224-long-video"


def machine(ram_free_gib: float | None, gpu_free_gib: float | None = None) -> Hardware:
    gpus = (Gpu(0, "Test GPU", int(48 * GiB), int(gpu_free_gib * GiB)),) if gpu_free_gib is not None else ()
    free = None if ram_free_gib is None else int(ram_free_gib * GiB)
    return Hardware("Test CPU", 8, None if free is None else int(64 * GiB), free, gpus)


@pytest.mark.parametrize(("hw", "best", "device", "alternatives"), [
    # a big GPU: the 8B in bf16 (21.6 GB with an hour of film); its GGUF and LLaMA-VID in fp16 fit too
    (machine(40, gpu_free_gib=24), "qwen3-vl-8b-instruct", "gpu", ["qwen3-vl-8b-instruct-gguf", LV]),
    # a 12 GB card: the 8B's bf16 (21.6 GB) and the 4B's (13.0 GB) do not fit, the 8B GGUF (10.3 GB) does
    (machine(40, gpu_free_gib=11), "qwen3-vl-8b-instruct-gguf", "gpu", ["qwen3-vl-2b-instruct"]),
    # a small GPU (3 GiB): nothing fits there, so the CPU's advice
    (machine(40, gpu_free_gib=3), "qwen3-vl-4b-instruct-gguf", "cpu", [LV, "qwen3-vl-2b-instruct-gguf"]),
    # no GPU, 14 GiB free: the default 4B GGUF; LLaMA-VID q4 (12.3 GB) and the 2B fit too
    (machine(14), "qwen3-vl-4b-instruct-gguf", "cpu", [LV, "qwen3-vl-2b-instruct-gguf"]),
    # 8 GiB free: the 4B (7.5 GB) and the 2B, not LLaMA-VID
    (machine(8), "qwen3-vl-4b-instruct-gguf", "cpu", ["qwen3-vl-2b-instruct-gguf"]),
    # 6 GiB free: only the 2B (5.1 GB)
    (machine(6), "qwen3-vl-2b-instruct-gguf", "cpu", []),
    # 3 GiB free: the 2B anyway, saying to close programs
    (machine(3), "qwen3-vl-2b-instruct-gguf", "cpu", []),
    (machine(None), "qwen3-vl-4b-instruct-gguf", "cpu", []),
])
def test_advice_follows_the_machine(hw: Hardware, best: str, device: str, alternatives: list[str]) -> None:
    advice = advise(hw)
    assert (advice.best.model, advice.best.device) == (best, device)
    assert [a.model for a in advice.alternatives] == alternatives
    free = (max(g.free for g in hw.gpus) if device == "gpu" else hw.ram_available) or 0
    if free >= advice.best.memory:  # each model named fits the memory it would use
        assert all(c.memory <= free for c in (advice.best, *advice.alternatives) if c.device == device)


def test_figures_are_the_catalogues() -> None:
    advice = advise(machine(14))
    entry = catalog.get("qwen3-vl-4b-instruct-gguf")
    assert advice.best.memory == entry.memory
    assert f"about {entry.memory / GiB:.1f} GiB with an hour of film" in advice.text()
    lv = next(a for a in advice.alternatives if a.family == "llama-vid")
    assert lv.memory == catalog.LLAMA_VID_7B_Q4_MEMORY and "llama.cpp, q4_K_M" in lv.runs_as
    assert "prepared films answer in seconds" in advice.text()


def test_too_little_memory_says_what_to_do() -> None:
    text = advise(machine(3)).text()
    assert "less than even the smallest model needs" in text and "close other programs" in text


def test_doctor_gives_the_same_advice(monkeypatch: pytest.MonkeyPatch) -> None:
    from cli.doctor import check_model_advice

    hw = machine(40, gpu_free_gib=24)
    monkeypatch.setattr(hardware, "detect", lambda: hw)
    check = check_model_advice()
    assert check.detail == advise(hw).text()
    assert check.data["model"] == "qwen3-vl-8b-instruct" and check.data["family"] == "qwen-vl"
    assert check.data["memory_bytes"] == catalog.get("qwen3-vl-8b-instruct").memory


@pytest.mark.slow
def test_the_settings_dialog_shows_the_advice_for_this_machine(qtbot, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("PySide6.QtMultimedia", reason="PySide6-Addons (QtMultimedia) is part of the install")
    from tests.support.desktop import open_window

    hw = machine(14)
    monkeypatch.setattr(hardware, "detect", lambda: hw)
    window = open_window(qtbot, tmp_path / "data", watch_folders=False)
    qtbot.waitUntil(lambda: window.setup_dialog is not None and window.setup_dialog.family_advice.isVisible())
    label = window.setup_dialog.family_advice
    assert label.text() == advise(hw).text()
    assert label.text().startswith("Suggested model: qwen3-vl-4b-instruct-gguf")
