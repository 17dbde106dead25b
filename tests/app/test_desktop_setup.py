"""The first run of the desktop window: the settings dialog, its defaults for this computer, and a
model download with progress and Cancel, from a Hugging Face hub played by a local HTTP server
(nothing leaves the machine), in a child process of the window."""
from __future__ import annotations

import hashlib
import json
import re
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

pytest.importorskip("PySide6.QtMultimedia", reason="PySide6-Addons (QtMultimedia) is part of the install")

from PySide6.QtCore import Qt  # noqa: E402

from app import hardware  # noqa: E402
from app.desktop.download import ModelConvert  # noqa: E402
from app.hardware import GiB, Gpu, Hardware, recommend  # noqa: E402
from app.settings import Settings, load_settings, save_settings  # noqa: E402
from llamavid.errors import UserError  # noqa: E402
from llamavid.hub import catalog, download  # noqa: E402
from llamavid.runtime import llm_choice  # noqa: E402
from llamavid.runtime.llm_choice import is_complete_conversion  # noqa: E402
from llamavid.runtime.options import LoadOptions  # noqa: E402
from llamavid.storage import human_size  # noqa: E402
from tests.support.desktop import TINY, alive, click, install_tiny, open_window, processes_using  # noqa: E402

MODEL = "llama-vid-7b-full-224-long-video"
SEVEN_B = 15_890_000_000


def _machine(ram_free_gib: float, gpu_free_gib: float | None = None, mps: bool = False) -> Hardware:
    gpus = (Gpu(0, "Test GPU", int(80 * GiB), int(gpu_free_gib * GiB)),) if gpu_free_gib is not None else ()
    return Hardware("Test CPU", 8, int(64 * GiB), int(ram_free_gib * GiB), gpus, mps)


@pytest.mark.parametrize(("machine", "device", "backend"), [
    (_machine(8, gpu_free_gib=60), "cuda", "auto"),        # weights 14.8 GiB + room for a film: fp16
    (_machine(8, gpu_free_gib=16), "cuda", "llama.cpp"),   # fp16 does not fit: llama.cpp q4_K_M, vision on the GPU
    (_machine(8, gpu_free_gib=6), "cuda", "llama.cpp"),
    (_machine(40), "cpu", "llama.cpp"),                    # no GPU: llama.cpp q4_K_M, whatever the RAM
    (_machine(10), "cpu", "llama.cpp"),
    (_machine(60, mps=True), "mps", "auto"),
])
def test_recommendations_follow_the_hardware_and_free_memory(machine: Hardware, device: str, backend: str) -> None:
    rec = recommend(machine, SEVEN_B)
    assert (rec.device, rec.bits, rec.backend) == (device, None, backend), rec
    assert rec.gguf_type == ("q4_K_M" if backend == "llama.cpp" else None)
    assert rec.reason
    if backend == "llama.cpp":
        assert "q4_K_M" in rec.reason and "q8_0" in rec.reason


@pytest.mark.parametrize(("machine", "device", "bits"), [
    (_machine(8, gpu_free_gib=1.4), "cuda", 8),        # a 1.5 GB model: fp16 does not fit, 8 bit does
    (_machine(8, gpu_free_gib=1.0), "cuda", 4),
    (_machine(8), "cpu", None),                         # fp32 on the CPU: 3 GB and room
    (_machine(2), "cpu", 8),
])
def test_a_model_too_small_to_convert_keeps_transformers(machine: Hardware, device: str, bits) -> None:
    rec = recommend(machine, 1_500_000_000)
    assert (rec.device, rec.bits, rec.backend, rec.gguf_type) == (device, bits, "auto", None), rec


def test_recommendation_for_a_gguf_model_and_for_too_little_memory() -> None:
    rec = recommend(_machine(4), SEVEN_B, gguf=True)
    assert (rec.device, rec.backend, rec.bits) == ("cpu", "llama.cpp", None)
    rec = recommend(_machine(2), SEVEN_B)
    assert (rec.device, rec.backend) == ("cpu", "llama.cpp") and "tight" in rec.reason
    assert recommend(_machine(8, gpu_free_gib=60), 3_000_000).bits is None  # a tiny model fits anywhere


def test_settings_keep_unknown_keys_and_refuse_bad_values(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"model": "m", "bits": 4, "index_idle": 1.5, "prepared_cap_bytes": 7,
                                "drafts": {"3": "why?"}}))
    s = load_settings(tmp_path)
    assert (s.model, s.bits, s.index_idle, s.drafts, s.extra) == ("m", 4, 1.5, {"3": "why?"},
                                                                  {"prepared_cap_bytes": 7})
    assert s.sampling_options() == {}
    s.temperature, s.max_new_tokens = 0.0, 64
    save_settings(tmp_path, s)
    again = load_settings(tmp_path)
    assert again.sampling_options() == {"temperature": 0.0, "max_new_tokens": 64}
    assert json.loads(path.read_text())["prepared_cap_bytes"] == 7
    path.write_text(json.dumps({"index_idle": -1}))
    with pytest.raises(UserError, match="index_idle"):
        load_settings(tmp_path)
    path.write_text(json.dumps({"kv_type": "q3"}))
    with pytest.raises(UserError, match="kv_type must be one of auto, f32, f16, q8_0, q4_0"):
        load_settings(tmp_path)
    path.write_text(json.dumps({"kv_type": "f16"}))
    assert load_settings(tmp_path).load_options() == LoadOptions(kv_type="f16")  # every front end loads with it
    path.write_text("{broken")
    with pytest.raises(UserError, match="cannot be read"):
        load_settings(tmp_path)
    assert Settings().load_options() == LoadOptions()
    assert s.load_options() == LoadOptions(bits=4)  # the file's backend, bits and device; the rest: defaults


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint: Path) -> Path:
    """The session's tiny checkpoint (tests/support/fixtures.py): registered, served by the fake hub; never changed."""
    return tiny_checkpoint


@pytest.mark.slow
def test_first_run_picks_a_downloaded_model_with_defaults_for_this_computer(qtbot, tmp_path: Path,
                                                                           checkpoint: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    install_tiny(data, checkpoint)
    window = open_window(qtbot, data, watch_folders=False)
    qtbot.waitUntil(lambda: window.setup_dialog is not None and window.setup_dialog.isVisible())
    dialog = window.setup_dialog
    assert window.model_label.text().startswith("No chat model chosen")
    qtbot.waitUntil(lambda: dialog.installed.count() == 1 and dialog.selected_model() == TINY)
    expected = recommend(hardware.detect(), *hardware.model_size(checkpoint))
    qtbot.waitUntil(lambda: dialog.device.currentData() == expected.device, timeout=30_000)
    assert dialog.hardware_label.text().startswith("This computer: ")
    assert (dialog.bits.currentData(), dialog.backend.currentData()) == (expected.bits, expected.backend)
    assert dialog.reason.text().startswith(f"Suggested for this computer: {expected.device}")
    dialog.language.setText("en")
    assert dialog.kv_type.currentData() == "auto"
    dialog.kv_type.setCurrentIndex(dialog.kv_type.findData("f16"))
    click(qtbot, dialog.save_button)
    qtbot.waitUntil(lambda: not dialog.isVisible())
    saved = load_settings(data)
    assert (saved.model, saved.device, saved.bits, saved.backend, saved.language, saved.kv_type) == (
        TINY, expected.device, expected.bits, expected.backend, "en", "f16")
    assert window.service.load_options.kv_type == "f16"
    assert window.service.model_name == TINY and window.model_label.text().startswith(f"Model: {TINY} (")
    assert "settings saved" in window.message.text().lower()


@pytest.mark.slow
def test_without_models_the_dialog_says_how_to_get_one(qtbot, tmp_path: Path) -> None:
    data = tmp_path / "data"
    window = open_window(qtbot, data, watch_folders=False)
    qtbot.waitUntil(lambda: window.setup_dialog is not None and window.setup_dialog.instructions.isVisible())
    text = window.setup_dialog.instructions.text()
    assert "How to get model weights" in text and str(data / "models") in text
    click(qtbot, window.setup_dialog.save_button)
    assert "Choose a model first" in window.setup_dialog.error_label.text()
    assert not (data / "settings.json").exists()


# -- the llama.cpp conversion, where the model runs on llama.cpp ------------------------------------
@pytest.mark.slow
def test_where_the_model_runs_on_llama_cpp_the_dialog_offers_its_conversion(qtbot, tmp_path: Path,
                                                                            tiny_checkpoint_2heads: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(llm_choice, "MIN_LLAMACPP_BYTES", 0)  # the tiny checkpoint stands for a 7B
    monkeypatch.setattr(hardware, "detect", lambda: _machine(8))  # a computer without a GPU
    monkeypatch.setattr(ModelConvert, "MODULE", "tests.support.held_convert")  # held before the quantizer
    gate = tmp_path / "go"
    monkeypatch.setenv("LLAMAVID_TEST_GATE", str(gate))
    data = tmp_path / "data"
    data.mkdir()
    install_tiny(data, tiny_checkpoint_2heads)
    window = open_window(qtbot, data, watch_folders=False)
    qtbot.waitUntil(lambda: window.setup_dialog is not None and window.setup_dialog.isVisible())
    dialog = window.setup_dialog
    qtbot.waitUntil(lambda: dialog.offer is not None and dialog.convert_button.isEnabled(), timeout=60_000)
    assert (dialog.backend.currentData(), dialog.bits.currentData(), dialog.device.currentData()) == \
        ("llama.cpp", None, "cpu")
    assert "q4_K_M" in dialog.reason.text() and dialog.convert_box.isVisible()
    offer = dialog.offer
    assert dialog.convert_button.text() == f"Convert for llama.cpp ({human_size(offer.final)})"
    assert f"({human_size(offer.free)} free)" in dialog.convert_label.text() and "no GPU" in dialog.convert_label.text()

    click(qtbot, dialog.convert_button)
    qtbot.waitUntil(lambda: "llm-q4_K_M.gguf" in dialog.convert_label.text(), timeout=120_000)
    assert dialog.convert_label.text().startswith(f"Converting {TINY} for llama.cpp: ")
    assert 0 < dialog.convert_bar.value() < 1000 and not dialog.convert_button.isEnabled()
    pid = window.convert.pid()
    click(qtbot, dialog.cancel_convert_button)
    qtbot.waitUntil(lambda: not window.convert.running(), timeout=30_000)
    qtbot.waitUntil(lambda: "already done from a stopped conversion" in dialog.convert_label.text(), timeout=30_000)
    assert not alive(pid) and processes_using(data) == []
    target = data / "models" / f"{TINY}-gguf"
    assert (target / ".convert" / "llm-f16.gguf").is_file() and not list(target.rglob("*.part"))

    gate.touch()
    click(qtbot, dialog.convert_button)
    qtbot.waitUntil(lambda: not window.convert.running() and "converted for llama.cpp" in dialog.convert_label.text(),
                    timeout=120_000)
    assert is_complete_conversion(target, tiny_checkpoint_2heads)
    qtbot.waitUntil(lambda: dialog.offer is None and not dialog.convert_button.isVisible())
    assert dialog.convert_bar.value() == 1000
    click(qtbot, dialog.save_button)
    qtbot.waitUntil(lambda: not dialog.isVisible())
    assert (load_settings(data).backend, load_settings(data).device) == ("llama.cpp", "cpu")
    lv = window.service.model()  # the chat loads from the conversion
    assert (lv.backend.name, Path(lv.backend.path).parent, lv.backend.kv_type) == ("llama.cpp", target, "q8_0")


# -- downloads against a local hub -----------------------------------------------------------------
@dataclass
class Hub:
    port: int = 0
    repos: dict[str, dict] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)
    hold: str = ""  # a file whose first download stops after one read chunk until `release` is set
    release: threading.Event = field(default_factory=threading.Event)
    ranges: list[tuple[str, str]] = field(default_factory=list)  # (file, Range header) of resumed GETs

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _sha1_blob(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    """Just what huggingface-hub and the model manager ask: a file listing with sizes and hashes,
    ``resolve`` URLs with the commit and ETag headers, and byte ranges."""

    def log_message(self, *args) -> None:
        pass

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def do_GET(self) -> None:
        self._serve(head=False)

    def _serve(self, head: bool) -> None:
        hub: Hub = self.server.hub  # type: ignore[attr-defined]
        path = urllib.parse.urlparse(self.path).path
        if m := re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/[^/]+)?", path):
            repo = hub.repos.get(m.group(1))
            if repo is None:
                return self._empty(404, {"X-Error-Code": "RepoNotFound"})
            siblings = [{"rfilename": n, "size": len(b), "blobId": _sha1_blob(b),
                         "lfs": {"size": len(b), "sha256": hashlib.sha256(b).hexdigest(), "pointerSize": 134}}
                        for n, b in repo["files"].items()]
            body = json.dumps({"id": m.group(1), "sha": repo["commit"], "siblings": siblings}).encode()
            return self._body(body, head, {"Content-Type": "application/json"}, "")
        if m := re.fullmatch(r"/([^/]+/[^/]+)/resolve/[^/]+/(.+)", path):
            repo, name = hub.repos.get(m.group(1)), urllib.parse.unquote(m.group(2))
            if repo is None or name not in repo["files"]:
                return self._empty(404, {"X-Error-Code": "EntryNotFound"})
            data = repo["files"][name]
            sha = hashlib.sha256(data).hexdigest()
            return self._body(data, head, {"X-Repo-Commit": repo["commit"], "ETag": f'"{sha}"',
                                           "X-Linked-Etag": f'"{sha}"', "X-Linked-Size": str(len(data))}, name)
        if path in hub.files:
            return self._body(hub.files[path], head, {}, path)
        self._empty(404, {})

    def _empty(self, code: int, headers: dict[str, str]) -> None:
        self.send_response(code)
        for k, v in {**headers, "Content-Length": "0"}.items():
            self.send_header(k, v)
        self.end_headers()

    def _body(self, data: bytes, head: bool, headers: dict[str, str], name: str) -> None:
        hub: Hub = self.server.hub  # type: ignore[attr-defined]
        start, rng = 0, self.headers.get("Range")
        if rng:
            start = int(re.match(r"bytes=(\d+)-", rng).group(1))
            if not head:
                hub.ranges.append((name, rng))
        self.send_response(206 if rng else 200)
        self.send_header("Content-Length", str(len(data) - start))
        self.send_header("Accept-Ranges", "bytes")
        if rng:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if head:
            return
        body = data[start:]
        try:
            if name == hub.hold and not rng:
                self.wfile.write(body[:download.CHUNK])  # one whole read of the model manager's
                self.wfile.flush()
                hub.release.wait(120)
                body = body[download.CHUNK:]
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the download was cancelled while the file was on its way


@pytest.fixture
def hub(checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Hub]:
    """The tiny checkpoint served as YanweiLi/<MODEL>; the child process finds it through HF_ENDPOINT."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    state = Hub(port=server.server_address[1])
    server.hub = state  # type: ignore[attr-defined]
    files = {p.name: p.read_bytes() for p in checkpoint.iterdir() if p.name not in ("eva_vit_g.pth", "bert_vocab.txt")}
    state.repos[f"YanweiLi/{MODEL}"] = {"commit": hashlib.sha1(MODEL.encode()).hexdigest(), "files": files}
    vocab = (checkpoint / "bert_vocab.txt").read_bytes()
    state.repos["google-bert/bert-base-uncased"] = {"commit": "b" * 40, "files": {"vocab.txt": vocab}}
    state.files["/lavis/eva_vit_g.pth"] = (checkpoint / "eva_vit_g.pth").read_bytes()
    state.hold = "/lavis/eva_vit_g.pth"  # the first file fetched, and larger than one read chunk
    assert len(state.files[state.hold]) > download.CHUNK
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    for key, value in {"HF_ENDPOINT": state.url, "HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0",
                       "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_CACHE": str(tmp_path / "hf-home" / "hub"),
                       catalog.EVA_URL_ENV: state.url + "/lavis/eva_vit_g.pth"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    yield state
    state.release.set()
    server.shutdown()
    server.server_close()


def _start_download(qtbot, window):
    qtbot.waitUntil(lambda: window.setup_dialog is not None and window.setup_dialog.isVisible())
    dialog = window.setup_dialog
    dialog.catalogue.setCurrentIndex(dialog.catalogue.findData(MODEL))
    click(qtbot, dialog.download_button)
    return dialog


@pytest.mark.slow
def test_a_download_shows_progress_can_be_cancelled_and_resumes(qtbot, tmp_path: Path, hub: Hub) -> None:
    data = tmp_path / "data"
    window = open_window(qtbot, data, watch_folders=False)
    dialog = _start_download(qtbot, window)
    held = data / "models" / "shared" / "eva_vit_g.pth"
    part = download.part_path(held)
    # the held file has arrived half-way: the bar shows it, between the start and the end
    qtbot.waitUntil(lambda: part.is_file() and part.stat().st_size > 0 and 0 < dialog.download_bar.value() < 1000
                    and dialog.download_label.text().startswith(f"Downloading {MODEL}: "), timeout=120_000)
    assert dialog.cancel_button.isEnabled() and not dialog.download_button.isEnabled()
    pid = window.download.pid()
    click(qtbot, dialog.cancel_button)
    qtbot.waitUntil(lambda: not window.download.running(), timeout=30_000)
    qtbot.waitUntil(lambda: "stopped" in dialog.download_label.text())
    assert "kept" in dialog.download_label.text() and "resumes" in dialog.download_label.text()
    assert not alive(pid) and processes_using(data) == []
    kept = part.stat().st_size
    assert kept == download.CHUNK and not held.exists()
    # listed as an unfinished download, which cannot be chosen
    qtbot.waitUntil(lambda: dialog.installed.count() == 1 and "incomplete" in dialog.installed.item(0).text())
    assert not dialog.installed.item(0).flags() & Qt.ItemFlag.ItemIsEnabled and dialog.selected_model() is None

    hub.release.set()
    click(qtbot, dialog.download_button)
    qtbot.waitUntil(lambda: not window.download.running() and "is downloaded" in dialog.download_label.text(),
                    timeout=120_000)
    assert (hub.hold, f"bytes={kept}-") in hub.ranges  # it went on from the partial file
    assert held.read_bytes() == hub.files[hub.hold]
    qtbot.waitUntil(lambda: dialog.selected_model() == MODEL)
    assert dialog.download_bar.value() == 1000
    assert dialog.installed.currentItem().flags() & Qt.ItemFlag.ItemIsEnabled


@pytest.mark.slow
def test_closing_the_window_during_a_download_keeps_what_arrived(qtbot, tmp_path: Path, hub: Hub) -> None:
    data = tmp_path / "data"
    window = open_window(qtbot, data, watch_folders=False)
    _start_download(qtbot, window)
    part = download.part_path(data / "models" / "shared" / "eva_vit_g.pth")
    qtbot.waitUntil(lambda: part.is_file() and part.stat().st_size > 0, timeout=120_000)
    pid = window.download.pid()
    window.close()
    assert not alive(pid) and processes_using(data) == []
    assert part.stat().st_size > 0
