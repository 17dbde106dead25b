"""The web UI (gradio, mounted in the server on 127.0.0.1) in a real browser with no model installed,
the `web` and `serve` commands, and `llamavid app` falling back to the web UI."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from app import status as st
from app import web
from llamavid.errors import UserError
from llamavid.system import stop_process_group


def test_status_text_without_models(data_dir: Path) -> None:
    text = st.status_markdown(st.collect_status(data_dir))
    assert str(data_dir) in text
    assert st.GET_MODELS_HEADING in text
    assert "`llamavid models pull llama-vid-7b-full-224-video-fps-1`" in text
    assert "llamavid models add" in text and str(data_dir / "models") in text
    assert st.NEEDS_MODEL in text


def test_status_text_lists_models(data_dir: Path, make_model) -> None:
    make_model(data_dir, "my-checkpoint", size=1500)
    text = st.status_markdown(st.collect_status(data_dir))
    assert "Installed models (1)" in text and "my-checkpoint" in text
    assert st.GET_MODELS_HEADING not in text and st.NEEDS_MODEL not in text


def test_busy_port_is_a_user_error(data_dir: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(UserError, match=rf"port {port} .*--port"):
            web.start(data_dir, "127.0.0.1", port)


@pytest.fixture
def web_ui(data_dir: Path) -> Iterator[str]:
    """The web UI served from this process on a free port; yields its URL."""
    running = web.start(data_dir, "127.0.0.1", 0)
    try:
        yield running.url
    finally:
        running.stop()


def chat_model(make_model, data_dir: Path, name: str) -> Path:
    """A fake installed checkpoint whose config says it is a LLaMA-VID chat model (not a bare LLM)."""
    folder = make_model(data_dir, name)
    (folder / "config.json").write_text('{"model_type": "llamavid", "mm_hidden_size": 1408, "compress_type": "mean"}')
    return folder


@pytest.mark.slow
def test_web_ui_in_chromium(browser: Any, web_ui: str, data_dir: Path, make_model, tmp_path: Path) -> None:
    assert web_ui.startswith("http://127.0.0.1:")
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    try:
        page.goto(web_ui, wait_until="domcontentloaded", timeout=60_000)
        page.get_by_text(st.GET_MODELS_HEADING).wait_for(timeout=60_000)
        status = page.locator("#status").inner_text()
        assert str(data_dir) in status
        assert "YanweiLi/llama-vid-7b-full-224-video-fps-1" in status
        assert page.title().startswith(st.TITLE)
        png = page.screenshot(path=str(tmp_path / "web-no-models.png"), full_page=True)
        assert len(png) > 5_000, "the screenshot is (nearly) empty"

        chat_model(make_model, data_dir, "llama-vid-7b-from-browser-test")
        page.locator("#refresh").click()
        page.locator("#status").get_by_text("llama-vid-7b-from-browser-test").wait_for(timeout=30_000)
        assert st.GET_MODELS_HEADING not in page.locator("#status").inner_text()
        assert not page.locator("#model").is_visible(), "one model: no picker"
        page.screenshot(path=str(tmp_path / "web-one-model.png"), full_page=True)

        chat_model(make_model, data_dir, "llama-vid-7b-second")
        page.locator("#refresh").click()
        page.locator("#model").wait_for(state="visible", timeout=30_000)
        page.locator("#model input").click()
        page.get_by_role("option", name="llama-vid-7b-second").click()
        page.locator("#status").get_by_text("llama-vid-7b-second").wait_for(timeout=30_000)
    finally:
        page.close()


def _start_cli(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as fh:
        return subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    stop_process_group(proc, timeout=20)


def _wait_for_output(log: Path, text: str, timeout: float = 90.0) -> str:
    """The server prints its banner just after it starts answering: wait for it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        output = log.read_text(errors="replace")
        if text in output:
            return output
        time.sleep(0.2)
    pytest.fail(f"{text!r} not printed within {timeout:.0f} s; output so far:\n{log.read_text(errors='replace')}")


def _no_display_env(env: dict[str, str]) -> dict[str, str]:
    for var in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        env.pop(var, None)
    return env


@pytest.mark.slow
@pytest.mark.parametrize(
    ("display", "reason"),
    [(None, "no display found"), (":97", "the desktop toolkit (Qt) cannot start")],
    ids=["no-display", "dead-x-server"],
)
def test_app_falls_back_to_web_ui(
    llamavid_cmd: list[str],
    data_dir: Path,
    free_port: int,
    tmp_path: Path,
    display: str | None,
    reason: str,
    wait_http: Callable[..., int],
) -> None:
    env = _no_display_env(dict(os.environ))
    if display:
        env["DISPLAY"] = display  # nothing listens there, so Qt cannot start
    log = tmp_path / "app.log"
    proc = _start_cli([*llamavid_cmd, "--data-dir", str(data_dir), "app", "--port", str(free_port)], env, log)
    try:
        url = f"http://127.0.0.1:{free_port}/"
        assert wait_http(url, is_alive=lambda: proc.poll() is None) == 200
        _wait_for_output(log, "running at")
        time.sleep(0.5)
        assert proc.poll() is None, "the web UI must stay up"
        with urllib.request.urlopen(url + "config", timeout=10) as resp:
            config = resp.read().decode()
        assert st.GET_MODELS_HEADING in config, "the page does not carry the setup instructions"
    finally:
        _stop(proc)
    output = log.read_text(errors="replace")
    assert reason in output and "starting the web UI instead" in output, output
    assert f"running at http://127.0.0.1:{free_port}/" in output, output


@pytest.mark.slow
def test_web_command_serves_until_stopped(
    llamavid_cmd: list[str],
    data_dir: Path,
    free_port: int,
    tmp_path: Path,
    wait_http: Callable[..., int],
) -> None:
    log, temp = tmp_path / "web.log", tmp_path / "tmp"
    temp.mkdir()
    proc = _start_cli([*llamavid_cmd, "web", "--port", str(free_port)], {**os.environ, "TMPDIR": str(temp)}, log)
    try:
        assert wait_http(f"http://127.0.0.1:{free_port}/", is_alive=lambda: proc.poll() is None) == 200
        banner = _wait_for_output(log, "running at")
        assert list(temp.glob("llamavid-uploads-*")), "the page's private upload folder exists while it runs"
    finally:
        _stop(proc)
    assert f"http://127.0.0.1:{free_port}/" in banner
    assert str(data_dir) in banner, "the web UI must use $LLAMAVID_DATA_DIR"
    # SIGTERM ends it cleanly: status 0 and its exit handlers ran (the quick exit skips only the teardown)
    assert proc.returncode == 0, log.read_text(errors="replace")
    assert not list(temp.glob("llamavid-*")), "the upload and request folders are removed at exit"


@pytest.mark.slow
def test_serve_command_serves_the_api_alone(
    llamavid_cmd: list[str],
    data_dir: Path,
    free_port: int,
    tmp_path: Path,
    wait_http: Callable[..., int],
) -> None:
    log = tmp_path / "serve.log"
    proc = _start_cli([*llamavid_cmd, "serve", "--port", str(free_port)], dict(os.environ), log)
    base = f"http://127.0.0.1:{free_port}"
    try:
        assert wait_http(base + "/health", is_alive=lambda: proc.poll() is None) == 503, "no model is installed"
        _wait_for_output(log, "running at")
        with urllib.request.urlopen(base + "/v1/models", timeout=10) as resp:
            assert json.load(resp) == {"object": "list", "data": []}
        with urllib.request.urlopen(base + "/", timeout=10) as resp:
            assert json.load(resp)["api"] == "/v1"
        try:
            urllib.request.urlopen(base + "/config", timeout=10)
            pytest.fail("the API alone serves no web UI")
        except urllib.error.HTTPError as exc:
            assert exc.code == 404
    finally:
        _stop(proc)
    assert proc.returncode == 0, log.read_text(errors="replace")
