"""The server's safety rules against a real uvicorn server on 127.0.0.1: no file outside the
library's films reaches a client (path traversal on every route, encoded variants, Gradio's file
routes), the key guards the API and the web UI, a web page elsewhere cannot use a local server
(Host, Origin, CORS), bodies are bounded, and no server starts off loopback without a key."""
from __future__ import annotations

import http.client
import os
import subprocess
import uuid
from pathlib import Path
from urllib.parse import quote

import httpx
import openai
import pytest
from fastapi.testclient import TestClient

from app.server.app import Running, create_app, start, upload_dir
from app.server.sample import FILM, MODEL, make_library
from app.server.settings import ServerSettings
from llamavid.runtime.options import LoadOptions

pytestmark = pytest.mark.slow

KEY = "correct-horse-battery"
CPU = LoadOptions(device="cpu", dtype="fp32")


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> tuple[Path, Path]:
    return make_library(tmp_path_factory.mktemp("guarded"), seconds=12)


@pytest.fixture(scope="module")
def secret(tmp_path_factory) -> tuple[Path, str]:
    """A file outside the library, holding a marker no response may contain."""
    marker = f"CANARY-{uuid.uuid4().hex}"
    path = tmp_path_factory.mktemp("private") / "secret.txt"
    path.write_text(marker)
    return path, marker


@pytest.fixture(scope="module")
def keyed(library) -> Running:
    data, _ = library
    running = start(ServerSettings(data_dir=data, port=0, api_key=KEY, load_options=CPU, max_upload_bytes=2**20))
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def open_local(library) -> Running:
    """No key, on loopback: the default."""
    data, _ = library
    running = start(ServerSettings(data_dir=data, port=0, ui=False, load_options=CPU, max_upload_bytes=2**20))
    try:
        yield running
    finally:
        running.stop()


def raw_get(server: Running, path: str, headers: dict | None = None, method: str = "GET",
            body: bytes | None = None) -> tuple[int, dict, bytes]:
    """A request with the path exactly as written (clients normalise ``..``; an attacker does not)."""
    port = int(server.url.rstrip("/").rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        given = {name.lower() for name in headers or {}}
        conn.putrequest(method, path, skip_host="host" in given, skip_accept_encoding=True)
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def film_id(server: Running, headers: dict | None = None) -> int:
    return httpx.get(server.url + "v1/movies", headers=headers).json()["data"][0]["id"]


def traversal_paths(library, secret, upload_dir: Path) -> list[str]:
    data, films = library
    target, _ = secret
    (films / "notes.txt").write_text("private notes beside the film")
    s = str(target)
    up = "../" * 12
    enc = quote(up + s.lstrip("/"), safe="")
    double = enc.replace("%", "%25")
    return [
        f"/v1/movies/1/video/{up}{s.lstrip('/')}", f"/v1/movies/{enc}/video", f"/v1/movies/1%2f..%2f..{quote(s)}",
        f"/v1/movies/{double}/video", "/v1/movies/-1/video",
        f"/gradio_api/file={s}", f"/gradio_api/file={quote(s, safe='')}", f"/gradio_api/file={enc}",
        f"/gradio_api/file={double}", f"/gradio_api/file={data}/library.db", f"/gradio_api/file={films / FILM}",
        f"/gradio_api/file={films}/notes.txt", f"/gradio_api/file={upload_dir}/{up}{s.lstrip('/')}",
        f"/gradio_api/file={upload_dir}/..%2f..%2f..{quote(s)}", f"/gradio_api/file=file://{s}",
        f"/file={s}", f"/file/{s}", f"/gradio_api/file/{s}", f"/file={data}/settings.json",
        f"/gradio_api/file={data}/models/{MODEL}/config.json",
        f"/assets/{enc}", f"/static/{enc}", f"/static/{up}{s.lstrip('/')}", f"/assets/..%5c..%5c{quote(s)}",
        f"/gradio_api/file=..%5c..%5c..%5c{quote(s)}", f"/theme.css/{up}{s.lstrip('/')}",
        f"/{up}{s.lstrip('/')}", f"/{enc}",
    ]


def test_no_route_serves_a_file_outside_the_library_films(keyed, library, secret) -> None:
    data, films = library
    _, marker = secret
    auth = {"Authorization": f"Bearer {KEY}"}
    film_bytes = (films / FILM).read_bytes()[:64]
    served = []
    for path in traversal_paths(library, secret, upload_dir()):
        status, headers, body = raw_get(keyed, path, auth)
        leaked = marker.encode() in body or b"SQLite format 3" in body or b"private notes" in body \
            or film_bytes in body or b'"model_type"' in body
        if leaked or status == 200:
            served.append((path, status, body[:80]))
    assert served == [], f"served what it must not: {served}"
    # while the film itself, by id, is served, whatever a query says
    status, headers, body = raw_get(keyed, f"/v1/movies/{film_id(keyed, auth)}/video?path={quote(str(secret[0]))}",
                                    auth)
    assert status == 200 and body[:64] == film_bytes and marker.encode() not in body


def test_remote_urls_are_never_fetched(keyed) -> None:
    auth = {"Authorization": f"Bearer {KEY}"}
    for path in ("/gradio_api/proxy=https://example.com/x.png", "/proxy=https://example.com/",
                 "/gradio_api/file=https://example.com/x.png", "/gradio_api/file=http%3A%2F%2Fexample.com%2Fa",
                 "/gradio_api/file=//example.com/x.png", f"/gradio_api/file={quote('http://127.0.0.1:1/')}"):
        status, _, _ = raw_get(keyed, path, auth)
        assert status == 404, path


def test_gradio_routes_the_page_does_not_use_are_closed(keyed) -> None:
    auth = {"Authorization": f"Bearer {KEY}"}
    for path in ("/gradio_api/process_recording", "/gradio_api/deep_link", "/gradio_api/call/ask_movie",
                 "/gradio_api/run/predict", "/gradio_api/api/predict", "/monitoring"):
        status, _, _ = raw_get(keyed, path, auth)
        assert status == 404, path
    status, _, _ = raw_get(keyed, "/config", auth)
    assert status == 200  # negative control: the page's own routes stay open


def test_the_film_is_served_with_range_requests(keyed, library) -> None:
    _, films = library
    auth = {"Authorization": f"Bearer {KEY}"}
    whole = (films / FILM).read_bytes()
    movie = film_id(keyed, auth)
    status, headers, body = raw_get(keyed, f"/v1/movies/{movie}/video", {**auth, "Range": "bytes=100-199"})
    assert status == 206 and body == whole[100:200]
    assert headers["content-range"] == f"bytes 100-199/{len(whole)}" and headers["accept-ranges"] == "bytes"
    assert headers["content-type"] == "video/mp4"
    status, headers, _ = raw_get(keyed, f"/v1/movies/{movie}/video", {**auth, "Range": f"bytes={len(whole) + 10}-"})
    assert status == 416
    status, _, body = raw_get(keyed, "/v1/movies/999/video", auth)
    assert status == 404 and b"no movie 999" in body


def test_the_key_guards_the_api_and_the_web_ui(keyed) -> None:
    for path in ("/v1/models", "/health", "/v1/movies", "/v1/movies/1/video", "/config", "/gradio_api/info",
                 "/v1/conversations"):
        status, headers, body = raw_get(keyed, path)
        assert status == 401, path
        assert headers["www-authenticate"] == "Bearer" and b'"invalid_api_key"' in body
        status, _, _ = raw_get(keyed, path, {"Authorization": "Bearer wrong-key-123"})
        assert status == 401, path
    status, _, _ = raw_get(keyed, "/gradio_api/queue/join", method="POST", body=b"{}")
    assert status == 401
    status, headers, _ = raw_get(keyed, "/", {"Accept": "text/html"})
    assert status == 303 and headers["location"] == "/login?next=/"
    for path in ("/v1/models", "/config"):
        assert raw_get(keyed, path, {"Authorization": f"Bearer {KEY}"})[0] == 200, path
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=keyed.url + "v1", api_key="wrong-key-123", max_retries=0).models.list()
    models = openai.OpenAI(base_url=keyed.url + "v1", api_key=KEY, max_retries=0).models.list()
    assert [m.id for m in models] == [MODEL]


def test_a_browser_signs_in_once_with_the_key(keyed) -> None:
    with httpx.Client(base_url=keyed.url, follow_redirects=False) as browser:
        page = browser.get("/login")
        assert page.status_code == 200 and 'type="password"' in page.text
        wrong = browser.post("/login", data={"key": "not-the-key", "next": "/"})
        assert wrong.status_code == 401 and "not the key" in wrong.text and "llamavid_session" not in browser.cookies
        right = browser.post("/login", data={"key": KEY, "next": "//evil.example/"})
        assert right.status_code == 303 and right.headers["location"] == "/"
        cookie = right.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict") and KEY not in cookie
        assert browser.get("/", headers={"Accept": "text/html"}).status_code == 200
        assert browser.get("/config").status_code == 200
        assert browser.get("/v1/models").status_code == 200


def test_a_web_page_elsewhere_cannot_use_a_local_server(open_local) -> None:
    ok = raw_get(open_local, "/v1/models", {"Host": open_local.url.split("/")[2]})
    assert ok[0] == 200
    status, _, body = raw_get(open_local, "/v1/models", {"Host": "attacker.example"})
    assert status == 403 and b"host_not_allowed" in body, "a DNS name rebound to 127.0.0.1 is refused"
    status, _, body = raw_get(open_local, "/v1/chat/completions", {"Origin": "http://attacker.example",
                                                                    "Content-Type": "text/plain"},
                              method="POST", body=b'{"messages": [{"role": "user", "content": "hi"}]}')
    assert status == 403 and b"origin_not_allowed" in body
    status, headers, _ = raw_get(open_local, "/v1/chat/completions", {
        "Origin": "http://attacker.example", "Access-Control-Request-Method": "POST"}, method="OPTIONS")
    assert status >= 400 and "access-control-allow-origin" not in headers, "no CORS unless asked for"


def test_cors_only_for_the_origins_given(library) -> None:
    data, _ = library
    settings = ServerSettings(data_dir=data, ui=False, load_options=CPU, cors_origins=("http://app.example",))
    client = TestClient(create_app(settings), base_url="http://127.0.0.1:7860")
    allowed = client.options("/v1/models", headers={"Origin": "http://app.example",
                                                    "Access-Control-Request-Method": "GET"})
    assert allowed.headers["access-control-allow-origin"] == "http://app.example"
    other = client.options("/v1/models", headers={"Origin": "http://other.example",
                                                  "Access-Control-Request-Method": "GET"})
    assert "access-control-allow-origin" not in other.headers
    assert client.get("/v1/models", headers={"Origin": "http://app.example"}).status_code == 200
    client.app.state.service.close()


def test_bodies_and_uploads_over_the_limit_are_refused(open_local, keyed) -> None:
    big = b'{"messages": [{"role": "user", "content": "' + b"x" * (4 * 2**20) + b'"}]}'
    status, _, body = raw_get(open_local, "/v1/chat/completions", {"Content-Type": "application/json"},
                              method="POST", body=big)
    assert status == 413 and b"too_large" in body
    port = int(open_local.url.rstrip("/").rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.request("POST", "/v1/chat/completions", body=iter([big[i:i + 65536] for i in range(0, len(big), 65536)]),
                 headers={"Content-Type": "application/json"}, encode_chunked=True)
    assert conn.getresponse().status == 413, "a chunked body without a length is counted too"
    conn.close()
    files = {"files": ("big.png", b"\0" * (3 * 2**20), "image/png")}
    upload = httpx.post(keyed.url + "gradio_api/upload", files=files, headers={"Authorization": f"Bearer {KEY}"})
    assert upload.status_code in (400, 413), upload.text[:200]


@pytest.mark.parametrize("command", ["serve", "web"])
def test_a_non_loopback_address_without_a_key_is_refused(llamavid_cmd, data_dir, command) -> None:
    env = {k: v for k, v in os.environ.items() if k != "LLAMAVID_API_KEY"}
    proc = subprocess.run([*llamavid_cmd, command, "--host", "0.0.0.0", "--port", "0"], capture_output=True,
                          text=True, timeout=120, env=env)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("llamavid: error: --host 0.0.0.0 opens the server"), proc.stderr
    assert "--api-key" in lines[0]
