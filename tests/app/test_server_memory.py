"""A hostile request's media cannot blow up the server's memory: the peak resident memory (VmHWM)
of the ``llamavid serve`` process while it answers stays under a stated budget. The server runs as a
process of its own (the tiny model, API only) and its peak is reset before each request
(``/proc/<pid>/clear_refs``), so each figure is that request's own. It runs with glibc's mmap
threshold fixed at 1 MiB (``MALLOC_MMAP_THRESHOLD_``): large buffers are then given back when freed,
so what a request holds at its peak is measured rather than what the allocator kept from an earlier one.

Budgets (the growth of the peak over the memory in use before the request):

* pictures: eight 16-megapixel PNGs in one request (the most pixels a request may hold) stay within
  64 MB of what one of them costs (measured: 76 MB for one, 106 MB for eight): they are decoded one
  at a time, each reduced as it is read. One costs at least 40 MB (its 48 MB RGB decode), which shows
  the measure sees decoding at all. Decoded whole before the queue, as before, the eight cost more
  than 400 MB.
* a 20-minute clip at 320x240: at most 250 MB (measured: 179 MB). At most 2 x 180 frames are ever
  kept, as 224-px uint8 crops (0.15 MB each), then one float batch of 180 (108 MB) for EVA. Sampled
  at 1/s and thinned afterwards, as before, it kept 1,200 float frames (720 MB) and stacked them.
* a clip over the 30-minute limit is refused (400, "add it to the library") before any frame is
  decoded, and the request's copy of it is deleted.
"""
from __future__ import annotations

import base64
import io
import tempfile
from pathlib import Path

import numpy as np
import openai
import pytest
from PIL import Image

from app.server.sample import MODEL
from llamavid.model.tiny import write_tiny_checkpoint
from tests.support.media import make_video
from tests.support.served import ServerProcess, serve_process

MB = 2**20
SHORT = {"temperature": 0, "max_tokens": 2}


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> ServerProcess:
    root = tmp_path_factory.mktemp("memory")
    write_tiny_checkpoint(root / "data" / "models" / MODEL)
    with serve_process(root / "data", root / "serve.log",
                       env={"MALLOC_MMAP_THRESHOLD_": str(MB)}) as running:
        yield running  # the ``client`` fixture of tests/app/conftest.py talks to it


def peak_growth(server: ServerProcess, call) -> int:
    """Bytes by which the server's peak resident memory rose above its memory in use while ``call`` ran."""
    server.reset_peak()
    before = server.status("VmRSS")
    assert server.status("VmHWM") <= before + 4 * MB  # the reset took effect
    call()
    return server.status("VmHWM") - before


def _png_url(width: int, height: int, seed: int) -> str:
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None, None]
    pixels = np.broadcast_to(((x + y + seed) / 2).astype(np.uint8), (height, width, 3))
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _ask(client: openai.OpenAI, parts: list[dict]) -> str:
    messages = [{"role": "user", "content": [{"type": "text", "text": "What is this?"}, *parts]}]
    answer = client.chat.completions.create(model=MODEL, messages=messages, **SHORT)
    return answer.choices[0].message.content


@pytest.mark.slow
def test_eight_large_pictures_cost_about_what_one_costs(server, client) -> None:
    urls = [_png_url(4000, 4000, seed) for seed in range(8)]
    _ask(client, [{"type": "image_url", "image_url": {"url": urls[0]}}])  # warm-up: first-use allocations
    one = peak_growth(server, lambda: _ask(client, [{"type": "image_url", "image_url": {"url": urls[0]}}]))
    eight = peak_growth(server, lambda: _ask(client, [{"type": "image_url", "image_url": {"url": u}} for u in urls]))
    print(f"peak growth: one 16 MP picture {one / MB:.0f} MB, eight {eight / MB:.0f} MB")
    assert one >= 40 * MB  # the measure sees a picture's decode
    assert eight <= one + 64 * MB


@pytest.mark.slow
def test_a_twenty_minute_clip_is_sampled_within_the_budget(server, client, tmp_path) -> None:
    clip = make_video(tmp_path / "long.mp4", seconds=1200, fps=1, size=(320, 240))
    url = "data:video/mp4;base64," + base64.b64encode(clip.read_bytes()).decode()
    growth = peak_growth(server, lambda: _ask(client, [{"type": "video_url", "video_url": {"url": url}}]))
    print(f"peak growth: 20-minute clip {growth / MB:.0f} MB")
    assert growth <= 250 * MB


@pytest.mark.slow
def test_a_clip_over_the_limit_is_refused_before_decoding(server, client, tmp_path) -> None:
    clip = make_video(tmp_path / "long.mp4", seconds=31 * 60, fps=1, size=(32, 32))
    url = "data:video/mp4;base64," + base64.b64encode(clip.read_bytes()).decode()
    with pytest.raises(openai.BadRequestError) as caught:
        _ask(client, [{"type": "video_url", "video_url": {"url": url}}])
    error = caught.value.body
    assert error["code"] == "bad_media" and "add it to the library instead" in error["message"], error
    assert not list(Path(tempfile.gettempdir()).glob("llamavid-server-*/request-*"))  # its copy is gone
