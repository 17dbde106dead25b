"""The apps on a computer without a GPU for the model: the web UI offers the llama.cpp conversion
(its disk space on the button, progress, Cancel keeping the complete files, a second Convert going
on from them) and the model then loads from it; the prepared-film size the pages show before a film
is prepared comes from the one KV-size rule (a q8_0 cache), and the state file written holds exactly
that cache plus what the rule says it leaves out.

The tiny checkpoint stands in for a 7B (the rule's size floor is lowered to 0); the films are
written with PyAV and indexed by the real indexer; the conversion is the apps' own child process,
held before llama.cpp's quantizer (``tests.support.held_convert``) so Cancel lands half way."""
from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import cli
from app import film_words as words
from app.chat_service import ChatService
from app.model_convert import conversion_offer
from app.server import views
from app.server.converting import Conversion
from app.server.sample import CUES, FILM
from app.server.ui import Handlers
from indexer import library
from indexer.prepared_size import film_tokens, llm_shape
from llamavid.media.synthetic import clock, srt_text, write_video
from llamavid.model.tiny import write_tiny_checkpoint
from llamavid.paths import DataDir
from llamavid.runtime import llm_choice
from llamavid.runtime.kv_size import BYTES_PER_VALUE, kv_cache_bytes, llamacpp_state_extra
from llamavid.runtime.llm_choice import conversion_of
from llamavid.runtime.options import LoadOptions
from llamavid.runtime.state import MAGIC, read_header
from llamavid.storage import human_size

pytestmark = pytest.mark.slow
MODEL = "tiny-vid"
CPU = LoadOptions(device="cpu")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """A data folder: a 2-head tiny checkpoint (head size 32, so a q8_0 cache fits it) installed, and a
    20 s film with English subtitles indexed."""
    root = tmp_path_factory.mktemp("cpu-default")
    data, films = root / "data", root / "films"
    model = write_tiny_checkpoint(data / "models" / MODEL, heads=2)
    write_video(films / FILM, clock(64, 48, 5), fps=5, seconds=20)
    (films / (Path(FILM).stem + ".en.srt")).write_text(srt_text(CUES))
    for args in (["index", "add", str(films)],
                 ["index", "run", "--speech", "never", "--quiet", "--vision", str(model / "eva_vit_g.pth")]):
        proc = subprocess.run([sys.executable, "-m", "cli", "--data-dir", str(data), *args],
                              capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr
    return data


@pytest.fixture()
def big(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tiny checkpoint counts as a 7B for the rule (in this process: the service, the indexer)."""
    monkeypatch.setattr(llm_choice, "MIN_LLAMACPP_BYTES", 0)


@pytest.fixture()
def service(data: Path, big) -> Iterator[ChatService]:
    service = ChatService(data, model=MODEL, language="en", load=CPU)
    try:
        yield service
    finally:
        service.close()


def wait_until(check: Callable[[], bool], timeout: float = 180.0) -> None:
    end = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.1)


def test_the_web_ui_offers_the_conversion_cancels_it_and_goes_on(service: ChatService, data: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    if conversion_of(data, MODEL, data / "models" / MODEL) is not None:
        pytest.skip("converted by an earlier test of this module")
    gate = tmp_path / "go"
    monkeypatch.setenv("LLAMAVID_TEST_GATE", str(gate))
    conversion = Conversion(DataDir(data))
    conversion.MODULE = "tests.support.held_convert"
    ui = Handlers(service, indexer=None, upload_dir=tmp_path, conversion=conversion)
    offer = conversion_offer(service.data, MODEL, CPU)
    assert offer is not None and offer.why == "no GPU" and offer.fits and offer.present == 0

    line, convert, cancel, bar = ui.convert_panel()
    assert line == offer.describe() and f"about {human_size(offer.needed)} of disk while it runs" in line
    assert f"({human_size(offer.free)} free)" in line and "q4_K_M" in line and "q8_0" in line
    assert (convert["visible"], convert["value"], convert["interactive"]) == (True, offer.button(), True)
    assert human_size(offer.final) in convert["value"] and cancel["visible"] is False and bar == ""

    ui.start_convert()
    wait_until(lambda: "llm-q4_K_M.gguf" in conversion.state().label)  # held before the quantizer
    line, convert, cancel, bar = ui.convert_panel()
    assert line.startswith(f"Converting **{MODEL}** for llama.cpp: ") and " of about " in line
    assert convert["visible"] is False and cancel["visible"] is True and bar.startswith('<progress id="convert-bar"')
    ui.cancel_convert()
    wait_until(lambda: not conversion.running())
    state = conversion.state()
    assert state.outcome == "cancelled" and "kept, and the next conversion goes on from there" in state.message
    target = data / "models" / f"{MODEL}-gguf"
    assert not list(target.rglob("*.part")) and not (target / "config.json").exists()
    line, convert, _, _ = ui.convert_panel()
    assert "already done from a stopped conversion" in line and "*Conversion of tiny-vid stopped;" in line
    assert convert["visible"] is True

    gate.touch()
    ui.start_convert()
    wait_until(lambda: not conversion.running())
    assert conversion.state().outcome == "done", conversion.state().message
    line, convert, cancel, bar = ui.convert_panel()  # the model loads from the conversion now
    assert line == f"The conversion is done: {MODEL} runs on llama.cpp from {target}"
    assert convert["visible"] is False and cancel["visible"] is False
    wait_until(lambda: service.model_loaded)
    lv = service.model()
    assert (lv.backend.name, Path(lv.backend.path).parent, lv.backend.kv_type) == ("llama.cpp", target, "q8_0")
    assert views.conversion_controls(conversion_offer(service.data, MODEL, CPU), conversion.state())[0] == \
        line  # nothing more to offer


def test_the_size_shown_before_preparing_is_the_q8_0_cache_the_state_file_holds(service: ChatService,
                                                                              data: Path) -> None:
    if conversion_of(data, MODEL, data / "models" / MODEL) is None:
        assert cli.main(["--data-dir", str(data), "models", "convert-gguf", MODEL]) == 0
    movie = service.movie(FILM)
    shown = service.prepare_estimate(movie)  # before any model is loaded: the one rule, q8_0 on llama.cpp
    assert service._lv is None
    shape = llm_shape(data / "models" / MODEL)
    frames, text = film_tokens(library.open_library(data), movie, "en")
    assert shown == kv_cache_bytes(shape, 2 * frames + text, BYTES_PER_VALUE["q8_0"])
    assert f"(about {human_size(shown)})" in words.prepare_action(movie, shown)  # the button, desktop and web
    assert f"(about {human_size(shown)})" in views.prepare_controls(movie, shown)[1]["value"]

    service.set_prepared(movie.id, True)  # prepared in the service's queue, with the model it holds
    done = list(service._preparing[movie.id])  # noqa: SLF001 - the queued work, followed to its end
    assert done[-1].type == "done", done[-1]
    movie = service.movie(FILM)
    path = Path(movie.prepared_path) if getattr(movie, "prepared_path", None) else \
        next((data / "cache" / "prepared").glob("*"))
    header = read_header(path)
    with path.open("rb") as fh:
        fh.seek(len(MAGIC))
        header_bytes = int.from_bytes(fh.read(8), "little")
    length, payload = header["chat"]["length"], header["payload_bytes"]
    assert (header["key"]["backend"], header["key"]["kv_type"]) == ("llama.cpp", "q8_0")
    # the file: the cache the rule counts, what the rule says it leaves out, and the chat's own header
    assert payload == kv_cache_bytes(shape, length, BYTES_PER_VALUE["q8_0"]) + llamacpp_state_extra(shape, length)
    assert path.stat().st_size == len(MAGIC) + 8 + header_bytes + payload == movie.prepared_bytes
    assert f"prepared for fast answers ({human_size(movie.prepared_bytes)})" == words.prepared_label(movie)
    # shown and written cost the same per token; the shown size counted the film's frames exactly, and only
    # its dialogue's tokens are estimated (film_tokens: LLaMA's tokenizer; the tiny's 320-piece one splits finer)
    per_token = kv_cache_bytes(shape, 1000, BYTES_PER_VALUE["q8_0"]) / 1000
    assert shown == int(per_token * (2 * frames + text)) and payload - llamacpp_state_extra(shape, length) == \
        int(per_token * length)
    assert frames == movie.frames == 20 and length > 2 * frames and header["key"]["n_ctx"] >= length
