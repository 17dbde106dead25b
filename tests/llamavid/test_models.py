"""`llamavid models` and the model manager behind it, against a real HTTP server on 127.0.0.1.

The server (http.server in a thread) plays three roles: a plain file host (for eva_vit_g.pth),
a Hugging Face hub (the endpoints huggingface-hub calls: ``/api/models/...`` with file sizes and
hashes, ``HEAD/GET /<repo>/resolve/<rev>/<file>`` with ``X-Repo-Commit`` / ETag headers, and a
302 to a "CDN" on another host name for LFS files) and that CDN. It honours ``Range``, can drop
a connection after N bytes, ignore ranges, or serve corrupted bytes. Nothing leaves the machine.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import cli
from llamavid.errors import UserError
from llamavid.files import MANIFEST
from llamavid.hub import catalog, download, verify
from llamavid.hub.installed import add_model, list_models, resolve_model, search_dirs
from llamavid.paths import DataDir

VIDEO_MODEL = "llama-vid-7b-full-224-video-fps-1"


@dataclass
class Seen:
    method: str
    path: str
    range: str | None
    auth: bool
    host: str


@dataclass
class Fake:
    """What the server serves and what it saw."""

    port: int = 0
    files: dict[str, bytes] = field(default_factory=dict)  # plain paths -> content
    repos: dict[str, dict] = field(default_factory=dict)  # repo id -> {"commit", "files", "lfs"}
    drop_first: dict[str, int] = field(default_factory=dict)  # path -> bytes sent before hanging up (once)
    ignore_range: set[str] = field(default_factory=set)
    corrupt: set[str] = field(default_factory=set)  # repo file names served with one byte flipped
    seen: list[Seen] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add_repo(self, repo_id: str, files: dict[str, bytes], lfs: set[str]) -> str:
        commit = hashlib.sha1(repo_id.encode()).hexdigest()
        self.repos[repo_id] = {"commit": commit, "files": files, "lfs": lfs}
        return commit

    def gets(self, pattern: str = "") -> list[Seen]:
        return [s for s in self.seen if s.method == "GET" and pattern in s.path]


def _git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    server: ThreadingHTTPServer

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def do_HEAD(self) -> None:
        self._handle(head=True)

    def do_GET(self) -> None:
        self._handle(head=False)

    @property
    def fake(self) -> Fake:
        return self.server.fake  # type: ignore[attr-defined]

    def _handle(self, head: bool) -> None:
        path = urllib.parse.urlparse(self.path).path
        self.fake.seen.append(Seen(self.command, path, self.headers.get("Range"),
                                   "authorization" in {k.lower() for k in self.headers}, self.headers.get("Host", "")))
        if m := re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?", path):
            return self._api(m.group(1))
        if m := re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path):
            return self._resolve(m.group(1), urllib.parse.unquote(m.group(3)), head, path)
        if m := re.fullmatch(r"/cdn/([^/]+)/(.+)", path):
            repo = self.fake.repos.get(urllib.parse.unquote(m.group(1)))
            name = urllib.parse.unquote(m.group(2))
            if repo and name in repo["files"]:
                return self._content(self._bytes(repo, name), head, path, {})
        if path in self.fake.files:
            return self._content(self.fake.files[path], head, path, {})
        self._status(404, {"X-Error-Code": "EntryNotFound"})

    def _bytes(self, repo: dict, name: str) -> bytes:
        data = repo["files"][name]
        if name in self.fake.corrupt:
            data = data[:-1] + bytes([data[-1] ^ 0xFF])
        return data

    def _status(self, code: int, headers: dict[str, str]) -> None:
        self.send_response(code)
        for k, v in {**headers, "Content-Length": "0"}.items():
            self.send_header(k, v)
        self.end_headers()

    def _api(self, repo_id: str) -> None:
        repo = self.fake.repos.get(repo_id)
        if repo is None:
            return self._status(404, {"X-Error-Code": "RepoNotFound"})
        siblings = []
        for name, data in repo["files"].items():
            s = {"rfilename": name, "size": len(data), "blobId": _git_sha1(data)}
            if name in repo["lfs"]:
                s["lfs"] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "pointerSize": 134}
            siblings.append(s)
        body = json.dumps({"id": repo_id, "sha": repo["commit"], "siblings": siblings}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _resolve(self, repo_id: str, name: str, head: bool, path: str) -> None:
        repo = self.fake.repos.get(repo_id)
        if repo is None:
            return self._status(404, {"X-Error-Code": "RepoNotFound"})
        if name not in repo["files"]:
            return self._status(404, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": repo["commit"]})
        data = repo["files"][name]
        if name in repo["lfs"]:  # like the hub: redirect to a CDN host, metadata in X-Linked-* headers
            sha = hashlib.sha256(data).hexdigest()
            cdn = f"http://localhost:{self.fake.port}/cdn/{urllib.parse.quote(repo_id, safe='')}/{name}"
            return self._status(302, {"Location": cdn, "X-Repo-Commit": repo["commit"], "ETag": f'"{sha}"',
                                      "X-Linked-Etag": f'"{sha}"', "X-Linked-Size": str(len(data))})
        self._content(self._bytes(repo, name), head, path,
                      {"X-Repo-Commit": repo["commit"], "ETag": f'"{_git_sha1(data)}"'})

    def _content(self, data: bytes, head: bool, key: str, extra: dict[str, str]) -> None:
        start, status = 0, 200
        rng = self.headers.get("Range")
        if rng and key not in self.fake.ignore_range:
            start = int(re.match(r"bytes=(\d+)-", rng).group(1))
            if start >= len(data):
                return self._status(416, {"Content-Range": f"bytes */{len(data)}"})
            status = 206
        body = data[start:]
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        for k, v in extra.items():
            self.send_header(k, v)
        self.end_headers()
        if head:
            return
        if self.command == "GET" and key in self.fake.drop_first:
            self.wfile.write(body[: self.fake.drop_first.pop(key)])  # then hang up mid-body
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def fake() -> Iterator[Fake]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    state = Fake(port=server.server_address[1])
    server.fake = state  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture
def hub(fake: Fake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Fake:
    """Point huggingface-hub at the fake server, as HF_ENDPOINT would (it is read at import time)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", fake.url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", fake.url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    monkeypatch.setenv(catalog.EVA_URL_ENV, fake.url + "/lavis/eva_vit_g.pth")
    return fake


def _serve_checkpoint(fake: Fake, ckpt: Path, name: str = VIDEO_MODEL) -> dict[str, bytes]:
    """The tiny checkpoint as hub repos: the model repo (+ files pull must skip), bert vocab, EVA."""
    files = {p.name: p.read_bytes() for p in ckpt.iterdir() if p.name not in ("eva_vit_g.pth", "bert_vocab.txt")}
    extra = {".gitattributes": b"*.bin filter=lfs\n", "training_args.bin": b"unsafe pickle",
             "trainer_state.json": b"{}"}
    lfs = {n for n in files if n.endswith(".bin") or n == "tokenizer.model"} | {"training_args.bin"}
    fake.add_repo(f"YanweiLi/{name}", {**files, **extra}, lfs)
    fake.add_repo("google-bert/bert-base-uncased", {"vocab.txt": (ckpt / "bert_vocab.txt").read_bytes()}, set())
    fake.files["/lavis/eva_vit_g.pth"] = (ckpt / "eva_vit_g.pth").read_bytes()
    return files


def _cli(*argv: str) -> int:
    return cli.main([str(a) for a in argv])


def test_catalogue_lists_the_released_checkpoints_without_invented_hashes() -> None:
    finetuned = ["llama-vid-7b-full-224", "llama-vid-7b-full-336", "llama-vid-13b-full-336",
                 "llama-vid-7b-full-224-video-fps-1", "llama-vid-13b-full-224-video-fps-1",
                 "llama-vid-7b-full-224-long-video"]
    pretrain = ["llama-vid-7b-pretrain-224", "llama-vid-7b-pretrain-336", "llama-vid-13b-pretrain-336",
                "llama-vid-7b-pretrain-224-video-fps-1", "llama-vid-13b-pretrain-224-video-fps-1"]
    assert [e.name for e in catalog.MODELS] == finetuned + pretrain
    for e in catalog.MODELS:
        assert e.repo_id == f"YanweiLi/{e.name}" and e.kind in catalog.KINDS
        assert set(e.shared) == {"eva_vit_g.pth", "bert_vocab.txt"}
        assert (e.kind == "pretrain") == (e.base_model is not None)
        if e.base_model:
            assert catalog.get(e.base_model).repo_id == f"lmsys/{e.base_model}"
    assert catalog.get("llama-vid-7b-full-224-long-video").kind == "long-video"
    assert catalog.get("llama-vid-7b-full-224-long-video").approx_size == 15_890_000_000
    assert catalog.get("YanweiLi/llama-vid-7b-full-336").name == "llama-vid-7b-full-336"
    assert catalog.EVA.url.startswith("https://storage.googleapis.com/sfr-vision-language-research/LAVIS/")
    assert (catalog.BERT_VOCAB.repo_id, catalog.BERT_VOCAB.repo_file) == ("google-bert/bert-base-uncased", "vocab.txt")
    assert all(p.sha256 is None for p in catalog.SHARED_PARTS.values()), "no hash is published: keep None"


def test_pull_selects_only_the_files_that_are_used_config_last() -> None:
    repo = [".gitattributes", "README.md", "config.json", "pytorch_model-00001-of-00002.bin",
            "pytorch_model-00002-of-00002.bin", "pytorch_model.bin.index.json", "tokenizer.model",
            "training_args.bin", "trainer_state.json", "sub/x.bin"]
    chosen = catalog.select_repo_files(repo)
    assert chosen[-1] == "config.json"
    assert not {"training_args.bin", "trainer_state.json", ".gitattributes", "sub/x.bin"} & set(chosen)
    both = catalog.select_repo_files(["config.json", "model.safetensors", "pytorch_model.bin"])
    assert both == ["model.safetensors", "config.json"], "one weight format only"


def _remote(fake: Fake, path: str, dest: Path, data: bytes, **kw) -> download.Remote:
    fake.files[path] = data
    url = fake.url + path
    kw.setdefault("size", len(data))
    kw.setdefault("sha256", hashlib.sha256(data).hexdigest())
    return download.Remote(dest, url, download.http_resolver(url), **kw)


def test_fetch_verifies_and_renames(fake: Fake, tmp_path: Path) -> None:
    data = os.urandom(300_000)
    result = download.fetch(_remote(fake, "/a.bin", tmp_path / "a.bin", data), progress=False)
    assert (tmp_path / "a.bin").read_bytes() == data and result.sha256 == hashlib.sha256(data).hexdigest()
    assert not download.part_path(tmp_path / "a.bin").exists()


def test_dropped_connection_resumes_with_range_in_the_same_run(fake: Fake, tmp_path: Path) -> None:
    data = os.urandom(250_000)
    fake.drop_first["/big.bin"] = 100_000
    download.fetch(_remote(fake, "/big.bin", tmp_path / "big.bin", data), progress=False, retry_wait=0)
    assert (tmp_path / "big.bin").read_bytes() == data
    assert [s.range for s in fake.gets("/big.bin")] == [None, "bytes=100000-"]


def test_interrupted_download_keeps_the_part_and_the_next_run_resumes(fake: Fake, tmp_path: Path, capsys) -> None:
    data = os.urandom(250_000)
    dest = tmp_path / "w.bin"
    fake.drop_first["/w.bin"] = 64_000
    remote = _remote(fake, "/w.bin", dest, data)
    calls = []

    def interrupted_after_first_attempt() -> tuple[str, dict[str, str]]:
        calls.append(1)
        if len(calls) > 1:
            raise KeyboardInterrupt  # the user presses Ctrl-C while it reconnects
        return fake.url + "/w.bin", {}

    remote.resolve = interrupted_after_first_attempt
    with pytest.raises(KeyboardInterrupt):
        download.fetch(remote, progress=False, retry_wait=0)
    assert "run the same command again to resume" in capsys.readouterr().err
    assert not dest.exists(), "no file under the final name until it is complete"
    assert download.part_path(dest).read_bytes() == data[:64_000]
    remote.resolve = download.http_resolver(fake.url + "/w.bin")
    download.fetch(remote, progress=False)  # "the next run"
    assert dest.read_bytes() == data and not download.part_path(dest).exists()
    assert fake.gets("/w.bin")[-1].range == "bytes=64000-"


def test_giving_up_keeps_the_part_for_the_next_run(fake: Fake, tmp_path: Path) -> None:
    dest = tmp_path / "g.bin"
    download.part_path(dest).write_bytes(b"k" * 1000)
    url = "http://127.0.0.1:9/nothing-listens-here"
    remote = download.Remote(dest, url, download.http_resolver(url), size=5000)
    with pytest.raises(download.DownloadError, match="1.0 kB kept in .*g.bin.part, run the same command again"):
        download.fetch(remote, progress=False, retries=1, retry_wait=0)
    assert download.part_path(dest).stat().st_size == 1000 and not dest.exists()


def test_a_second_writer_of_the_same_file_is_refused(fake: Fake, tmp_path: Path) -> None:
    from filelock import FileLock

    dest = tmp_path / "l.bin"
    remote = _remote(fake, "/l.bin", dest, b"z" * 1000)
    with FileLock(str(download.part_path(dest)) + ".lock"):  # another process is downloading it
        with pytest.raises(download.DownloadError, match="another llamavid process is downloading l.bin"):
            download.fetch(remote, progress=False)
    download.fetch(remote, progress=False)
    assert dest.read_bytes() == b"z" * 1000


def test_server_ignoring_range_restarts_cleanly(fake: Fake, tmp_path: Path) -> None:
    data = os.urandom(120_000)
    dest = tmp_path / "n.bin"
    download.part_path(dest).write_bytes(data[:50_000])
    fake.ignore_range.add("/n.bin")
    download.fetch(_remote(fake, "/n.bin", dest, data), progress=False)
    assert dest.read_bytes() == data


def test_sha256_mismatch_is_refused_and_leaves_no_file(fake: Fake, tmp_path: Path) -> None:
    dest = tmp_path / "s.bin"
    remote = _remote(fake, "/s.bin", dest, b"x" * 5000, sha256="0" * 64)
    with pytest.raises(download.RefusedContent, match="sha256 mismatch"):
        download.fetch(remote, progress=False)
    assert not dest.exists() and not download.part_path(dest).exists()


def test_size_mismatch_is_refused_and_leaves_no_file(fake: Fake, tmp_path: Path) -> None:
    dest = tmp_path / "z.bin"
    remote = _remote(fake, "/z.bin", dest, b"y" * 5000, size=4000, sha256=None)
    with pytest.raises(download.RefusedContent, match="5000 bytes, but 4000"):
        download.fetch(remote, progress=False)
    assert not dest.exists() and not download.part_path(dest).exists()


def test_http_errors_say_what_to_check(fake: Fake, tmp_path: Path) -> None:
    url = fake.url + "/missing.bin"
    with pytest.raises(download.DownloadError, match="HTTP 404"):
        download.fetch(download.Remote(tmp_path / "m", url, download.http_resolver(url)), progress=False)
    with pytest.raises(download.DownloadError, match="HTTP 404"):
        download.http_size(url)


def test_free_space_is_checked_first(fake: Fake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(UserError) as err:
        download.check_free_space(tmp_path / "not-yet", 5_000_000, "pulling x")
    assert "needs 5.0 MB more" in str(err.value) and "only 1.0 kB is free" in str(err.value)


def test_pull_from_a_hub_endpoint_installs_a_loadable_model(hub: Fake, tiny_checkpoint: Path, tmp_path: Path,
                                                            capsys) -> None:
    files = _serve_checkpoint(hub, tiny_checkpoint)
    first_shard = sorted(n for n in files if n.startswith("pytorch_model-"))[0]
    cdn_path = f"/cdn/{urllib.parse.quote('YanweiLi/' + VIDEO_MODEL, safe='')}/{first_shard}"
    hub.drop_first[cdn_path] = 10_000
    data = tmp_path / "data"
    assert _cli("--data-dir", data, "models", "pull", VIDEO_MODEL, "--retries", "1") == 0
    dd = DataDir(data)
    folder = dd.models / VIDEO_MODEL
    for name, content in files.items():
        assert (folder / name).read_bytes() == content, name
    assert not (folder / "training_args.bin").exists() and not (folder / "trainer_state.json").exists()
    assert not list(folder.glob("*.part")) and not list(folder.glob("*.lock"))
    assert (dd.models / "shared" / "eva_vit_g.pth").read_bytes() == (tiny_checkpoint / "eva_vit_g.pth").read_bytes()
    assert (dd.models / "shared" / "bert_vocab.txt").read_bytes() == (tiny_checkpoint / "bert_vocab.txt").read_bytes()
    # the interrupted shard was resumed, not restarted
    assert [s.range for s in hub.gets(cdn_path)] == [None, "bytes=10000-"]
    # the token goes to the hub, never to the CDN host
    assert all(s.auth for s in hub.seen if "/resolve/" in s.path)
    assert not any(s.auth for s in hub.seen if s.path.startswith("/cdn/"))
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["complete"] and manifest["commit"] == hub.repos[f"YanweiLi/{VIDEO_MODEL}"]["commit"]
    assert manifest["files"][first_shard]["sha256"] == hashlib.sha256(files[first_shard]).hexdigest()
    shared = json.loads((dd.models / "shared" / MANIFEST).read_text())["files"]
    assert shared["eva_vit_g.pth"]["sha256"] == hashlib.sha256(hub.files["/lavis/eva_vit_g.pth"]).hexdigest()
    assert shared["eva_vit_g.pth"]["sha256_source"].startswith("computed")

    capsys.readouterr()
    assert _cli("--data-dir", data, "models", "list", "--json") == 0
    listed = json.loads(capsys.readouterr().out)["models"]
    assert [(m["name"], m["kind"], m["status"], m["repo_id"]) for m in listed] == \
        [(VIDEO_MODEL, "video", "complete", f"YanweiLi/{VIDEO_MODEL}")]
    assert _cli("--data-dir", data, "models", "verify", VIDEO_MODEL, "--hash", "--deep") == 0

    # what every --model command does: resolve, then load with the shared folder as search dir
    from llamavid.runtime.api import LlamaVid

    lv = LlamaVid.load(resolve_model(VIDEO_MODEL, dd), device="cpu", search_dirs=search_dirs(dd))
    assert lv.report.eva_file == dd.models / "shared" / "eva_vit_g.pth"
    assert lv.report.vocab_file == dd.models / "shared" / "bert_vocab.txt"

    # a second pull downloads nothing
    def content_gets() -> int:
        return sum(not s.path.startswith("/api/") for s in hub.gets())

    before = content_gets()
    capsys.readouterr()
    assert _cli("--data-dir", data, "models", "pull", VIDEO_MODEL) == 0
    assert "0 file(s) to fetch" in capsys.readouterr().out
    assert content_gets() == before


def test_pull_of_a_chat_model_offers_its_llama_cpp_conversion(hub: Fake, tiny_checkpoint: Path, tmp_path: Path,
                                                             capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    from llamavid.runtime import llm_choice
    from llamavid.runtime import load as load_module
    from llamavid.runtime.llm_choice import is_complete_conversion

    monkeypatch.setattr(llm_choice, "MIN_LLAMACPP_BYTES", 0)  # the tiny checkpoint stands for a 7B
    monkeypatch.setattr(load_module, "_gpu_bytes", lambda options: (None, False))  # a computer without a GPU
    _serve_checkpoint(hub, tiny_checkpoint)
    data = tmp_path / "data"
    target = DataDir(data).models / f"{VIDEO_MODEL}-gguf"
    capsys.readouterr()
    assert _cli("--data-dir", data, "models", "pull", VIDEO_MODEL) == 0  # no terminal to ask on: it says the command
    out = capsys.readouterr().out
    assert f"note: {VIDEO_MODEL} chats through llama.cpp on this computer (no GPU), from a q4_K_M copy" in out
    assert f"run `llamavid models convert-gguf {VIDEO_MODEL}` (or pull with --convert)" in out and "free)" in out
    assert not target.exists()
    assert _cli("--data-dir", data, "models", "pull", VIDEO_MODEL, "--no-convert") == 0
    assert "convert" not in capsys.readouterr().out and not target.exists()

    assert _cli("--data-dir", data, "models", "pull", VIDEO_MODEL, "--convert") == 0
    out = capsys.readouterr().out
    assert f"{VIDEO_MODEL} -> {target}: q4_K_M; about " in out
    assert is_complete_conversion(target, DataDir(data).models / VIDEO_MODEL)
    lv = load_module.load_model(VIDEO_MODEL, data, device="cpu", load_vision=False)
    assert (lv.backend.name, Path(lv.backend.path).name) == ("llama.cpp", "llm-q4_K_M.gguf")
    assert lv.backend.kv_type == "f16"  # head size 16: no q8_0 blocks fit it, so the default cache stays f16
    lv.backend.close()
    assert _cli("--data-dir", data, "models", "pull", VIDEO_MODEL) == 0
    assert "convert" not in capsys.readouterr().out  # converted: nothing more to offer


def test_pull_of_a_speech_model_for_the_indexer(hub: Fake, tmp_path: Path, capsys) -> None:
    from indexer.whisper import speech_model_folder

    files = {"config.json": b'{"alignment_heads": [[1, 0]], "lang_ids": [], "suppress_ids": []}',
             "model.bin": bytes(range(256)) * 40, "tokenizer.json": b'{"model": {}}',
             "vocabulary.json": b'["a"]', "README.md": b"# faster-whisper tiny"}
    hub.add_repo("Systran/faster-whisper-tiny", {**files, ".gitattributes": b"*.bin filter=lfs\n"}, {"model.bin"})
    data = tmp_path / "data"
    with pytest.raises(UserError, match="models pull whisper-tiny"):
        speech_model_folder("tiny", data)
    assert _cli("--data-dir", data, "models", "pull", "whisper-tiny") == 0
    folder = DataDir(data).models / "whisper-tiny"
    assert {n: (folder / n).read_bytes() for n in files} == files
    assert not (DataDir(data).models / "shared").exists()  # no EVA, no BERT vocabulary for this one
    capsys.readouterr()
    assert _cli("--data-dir", data, "models", "list", "--json") == 0
    listed = json.loads(capsys.readouterr().out)["models"]
    assert [(m["name"], m["kind"], m["status"]) for m in listed] == [("whisper-tiny", "speech", "complete")]
    assert _cli("--data-dir", data, "models", "verify", "whisper-tiny", "--hash") == 0
    assert speech_model_folder("tiny", data) == speech_model_folder("whisper-tiny", data) == folder
    (folder / "model.bin").write_bytes(b"cut")
    assert _cli("--data-dir", data, "models", "verify", "whisper-tiny") == 1


def test_pull_refuses_a_hub_file_whose_hash_does_not_match(hub: Fake, tiny_checkpoint: Path, tmp_path: Path,
                                                           capsys) -> None:
    files = _serve_checkpoint(hub, tiny_checkpoint)
    bad = sorted(n for n in files if n.startswith("pytorch_model-"))[-1]
    hub.corrupt.add(bad)
    data = tmp_path / "data"
    assert _cli("--data-dir", data, "models", "pull", VIDEO_MODEL) == 1
    err = capsys.readouterr().err
    assert f"{bad}: sha256 mismatch" in err and "was not written" in err
    folder = data / "models" / VIDEO_MODEL
    assert not (folder / bad).exists() and not download.part_path(folder / bad).exists()
    assert not (folder / "config.json").exists(), "config.json comes last: no half model looks installed"
    with pytest.raises(UserError, match="incomplete.*models pull"):
        resolve_model(VIDEO_MODEL, data)
    assert [m.status for m in list_models(data)] == ["incomplete"]


def test_pull_refuses_when_the_disk_is_too_small(hub: Fake, tiny_checkpoint: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    _serve_checkpoint(hub, tiny_checkpoint)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    assert _cli("--data-dir", tmp_path / "data", "models", "pull", VIDEO_MODEL) == 1
    err = capsys.readouterr().err
    assert "not enough disk space" in err and "only 1.0 kB is free" in err and "Nothing was downloaded" in err
    assert not hub.gets("/cdn/") and not hub.gets("/lavis/"), "no download before the space check"


def test_pull_reuses_files_from_the_hub_cache(hub: Fake, tiny_checkpoint: Path, tmp_path: Path) -> None:
    files = _serve_checkpoint(hub, tiny_checkpoint)
    repo = hub.repos[f"YanweiLi/{VIDEO_MODEL}"]
    # a hub-cache layout as huggingface-hub writes it (HF_HUB_CACHE), holding the largest shard
    shard = max((n for n in files if n.startswith("pytorch_model-")), key=lambda n: len(files[n]))
    snap = tmp_path / "hf-cache" / f"models--YanweiLi--{VIDEO_MODEL}" / "snapshots" / repo["commit"]
    snap.mkdir(parents=True)
    (snap / shard).write_bytes(files[shard])
    assert _cli("--data-dir", tmp_path / "data", "models", "pull", VIDEO_MODEL) == 0
    assert (tmp_path / "data" / "models" / VIDEO_MODEL / shard).read_bytes() == files[shard]
    assert not hub.gets(f"/{shard}"), "taken from the cache, not downloaded"


def test_pull_of_a_projector_with_its_base_llm(hub: Fake, tiny_checkpoint: Path, tmp_path: Path, capsys) -> None:
    import io

    import torch
    from safetensors.torch import save

    buf = io.BytesIO()
    torch.save({"model.mm_projector.0.weight": torch.zeros(4, 4)}, buf)
    hub.add_repo("YanweiLi/llama-vid-7b-pretrain-224",
                 {"config.json": (tiny_checkpoint / "config.json").read_bytes(), "mm_projector.bin": buf.getvalue(),
                  "trainer_state.json": b"{}"}, {"mm_projector.bin"})
    weights = save({"model.embed_tokens.weight": torch.zeros(8, 4)})
    hub.add_repo("lmsys/vicuna-7b-v1.5", {"config.json": b'{"model_type": "llama"}', "model.safetensors": weights,
                                          "pytorch_model.bin": b"same weights, other format",
                                          "tokenizer.model": b"sp"}, {"model.safetensors", "pytorch_model.bin"})
    _serve_checkpoint(hub, tiny_checkpoint)  # the shared parts
    data = tmp_path / "data"
    assert _cli("--data-dir", data, "models", "pull", "llama-vid-7b-pretrain-224") == 0
    assert "needs the base Vicuna LLM" in capsys.readouterr().out
    assert _cli("--data-dir", data, "models", "verify", "llama-vid-7b-pretrain-224") == 0
    assert re.search(r"WARNING\s+base LLM: .*models pull vicuna-7b-v1.5", capsys.readouterr().out)
    assert _cli("--data-dir", data, "models", "pull", "llama-vid-7b-pretrain-224", "--with-base") == 0
    base = data / "models" / "vicuna-7b-v1.5"
    assert (base / "model.safetensors").is_file() and not (base / "pytorch_model.bin").exists()
    assert _cli("--data-dir", data, "models", "verify", "vicuna-7b-v1.5") == 0
    assert _cli("--data-dir", data, "models", "verify", "llama-vid-7b-pretrain-224") == 0
    assert "vicuna-7b-v1.5 installed" in capsys.readouterr().out
    kinds = {m.name: (m.kind, m.status) for m in list_models(data)}
    assert kinds == {"llama-vid-7b-pretrain-224": ("pretrain", "complete"), "vicuna-7b-v1.5": ("base-llm", "complete")}
    (base / "model.safetensors").write_bytes(weights[:-3])
    assert _cli("--data-dir", data, "models", "verify", "vicuna-7b-v1.5") == 1
    assert "model.safetensors: truncated" in capsys.readouterr().out


def test_offline_mode_downloads_nothing(tmp_path: Path, capsys) -> None:
    # conftest sets HF_HUB_OFFLINE=1 for the whole suite
    assert _cli("--data-dir", tmp_path, "models", "pull", VIDEO_MODEL) == 1
    assert "HF_HUB_OFFLINE is set" in capsys.readouterr().err


def test_unknown_repo_and_unknown_name_are_user_errors(hub: Fake, tmp_path: Path, capsys) -> None:
    assert _cli("--data-dir", tmp_path, "models", "pull", VIDEO_MODEL) == 1
    assert "repository not found" in capsys.readouterr().err
    assert _cli("--data-dir", tmp_path, "models", "pull", "llama-vid-99b") == 1
    err = capsys.readouterr().err
    assert "not in the catalogue" in err and "llama-vid-7b-full-224-long-video" in err


def test_pull_through_the_environment_variables(fake: Fake, tiny_checkpoint: Path, tmp_path: Path,
                                                llamavid_cmd: list[str]) -> None:
    """The real thing: a separate process configured only by HF_ENDPOINT & co."""
    _serve_checkpoint(fake, tiny_checkpoint, name="llama-vid-7b-full-224-long-video")
    env = {**os.environ, "HF_ENDPOINT": fake.url, "HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0",
           "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_CACHE": str(tmp_path / "hf-home" / "hub"),
           catalog.EVA_URL_ENV: fake.url + "/lavis/eva_vit_g.pth", "LLAMAVID_DATA_DIR": str(tmp_path / "data")}
    env.pop("HF_TOKEN", None)
    proc = subprocess.run([*llamavid_cmd, "models", "pull", "llama-vid-7b-full-224-long-video"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "ready in" in proc.stdout
    assert (tmp_path / "data" / "models" / "llama-vid-7b-full-224-long-video" / "config.json").is_file()
    assert any(s.path.startswith("/api/models/YanweiLi/") for s in fake.seen)


def test_add_list_path_rm_of_a_registered_folder(tiny_checkpoint: Path, tmp_path: Path, capsys) -> None:
    data = tmp_path / "data"
    assert _cli("--data-dir", data, "models", "add", "mine", tiny_checkpoint) == 0
    assert "registered mine" in capsys.readouterr().out
    assert _cli("--data-dir", data, "models", "list") == 0
    out = capsys.readouterr().out
    assert re.search(r"mine\s+video\s+[\d.]+ MB\s+complete\s+.*\(registered\)", out), out
    assert _cli("--data-dir", data, "models", "path", "mine") == 0
    assert capsys.readouterr().out.strip() == str(tiny_checkpoint)
    assert resolve_model("mine", data) == tiny_checkpoint
    assert _cli("--data-dir", data, "models", "add", "mine", tiny_checkpoint) == 1
    assert "already registered" in capsys.readouterr().err
    assert _cli("--data-dir", data, "models", "rm", "mine") == 0  # no confirmation: nothing is deleted
    assert "was not touched" in capsys.readouterr().out
    assert (tiny_checkpoint / "config.json").is_file()
    assert list_models(data) == []


def test_add_refuses_what_is_not_a_checkpoint(tmp_path: Path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    assert _cli("--data-dir", tmp_path / "d", "models", "add", "x", tmp_path / "empty") == 1
    assert "no config.json" in capsys.readouterr().err
    assert _cli("--data-dir", tmp_path / "d", "models", "add", "bad/name", tmp_path / "empty") == 1
    assert _cli("--data-dir", tmp_path / "d", "models", "add", "shared", tmp_path / "empty") == 1


def test_rm_of_a_pulled_model_asks_first(tiny_checkpoint: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    data = tmp_path / "data"
    folder = data / "models" / "tiny"
    shutil.copytree(tiny_checkpoint, folder)
    monkeypatch.setattr(sys, "stdin", open(os.devnull))  # not a terminal: cannot ask
    assert _cli("--data-dir", data, "models", "rm", "tiny") == 1
    assert "pass --yes" in capsys.readouterr().err and folder.is_dir()
    assert _cli("--data-dir", data, "models", "rm", "tiny", "--yes") == 0
    assert not folder.exists()


def test_rm_of_a_symlinked_model_keeps_its_target(tiny_checkpoint: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "models").mkdir(parents=True)
    (data / "models" / "linked").symlink_to(tiny_checkpoint)
    assert [m.name for m in list_models(data)] == ["linked"]
    assert _cli("--data-dir", data, "models", "rm", "linked") == 0
    assert not (data / "models" / "linked").exists() and (tiny_checkpoint / "config.json").is_file()


def test_list_empty_and_available(tmp_path: Path, capsys) -> None:
    assert _cli("--data-dir", tmp_path, "models") == 0
    assert "No models installed" in capsys.readouterr().out
    assert _cli("--data-dir", tmp_path, "models", "list", "--available", "--json") == 0
    listed = json.loads(capsys.readouterr().out)
    # LLaMA-VID checkpoints and base LLMs, Qwen3-VL (3 sizes, transformers and GGUF), speech, scenes
    assert len(listed["models"]) == 13 + 6 + 5 + 1 and not any(m["installed"] for m in listed["models"])
    assert [m["name"] for m in listed["models"] if m["kind"] == "speech"][-1] == "whisper-large-v3"
    assert {p["file"] for p in listed["shared_parts"]} == {"eva_vit_g.pth", "bert_vocab.txt"}


# ----------------------------------------------------------------------------- resolve_model
def test_resolve_model(tiny_checkpoint: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    installed = data / "models" / "inst"
    shutil.copytree(tiny_checkpoint, installed)
    assert resolve_model("inst", data) == installed
    assert resolve_model(str(tiny_checkpoint), data) == tiny_checkpoint
    assert resolve_model(tiny_checkpoint, data) == tiny_checkpoint
    assert search_dirs(data) == [data / "models" / "shared"]
    with pytest.raises(UserError) as err:
        resolve_model("nope", data)
    assert "installed: inst" in str(err.value) and "llamavid models list --available" in str(err.value)
    with pytest.raises(UserError, match="not installed.*models pull llama-vid-7b-full-224-long-video"):
        resolve_model("llama-vid-7b-full-224-long-video", data)
    with pytest.raises(UserError, match="no such folder"):
        resolve_model(str(tmp_path / "gone"), data)
    (tmp_path / "plain").mkdir()
    with pytest.raises(UserError, match="not a checkpoint"):
        resolve_model(str(tmp_path / "plain"), data)
    moved = tmp_path / "moved"
    shutil.copytree(tiny_checkpoint, moved)
    add_model(data, "ext", moved)
    shutil.rmtree(moved)
    with pytest.raises(UserError, match="that folder is gone.*models rm ext"):
        resolve_model("ext", data)
    assert [(m.name, m.status) for m in list_models(data)] == [("ext", "missing"), ("inst", "complete")]


@pytest.fixture
def installed(tiny_checkpoint: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A tiny model pulled-style: its shared parts in models/shared, not in the folder."""
    data = tmp_path / "data"
    folder = data / "models" / "tiny"
    shutil.copytree(tiny_checkpoint, folder)
    shared = data / "models" / "shared"
    shared.mkdir()
    for name in ("eva_vit_g.pth", "bert_vocab.txt"):
        shutil.move(folder / name, shared / name)
    return data, folder


def _shard(folder: Path) -> Path:
    return sorted(folder.glob("pytorch_model-*.bin"))[0]


def test_verify_a_sound_model(installed, capsys) -> None:
    data, _folder = installed
    assert _cli("--data-dir", data, "models", "verify", "tiny") == 0
    out = capsys.readouterr().out
    assert "all files present and sound" in out and "shared/eva_vit_g.pth" in out


def test_verify_catches_a_truncated_shard(installed, capsys) -> None:
    data, folder = installed
    shard = _shard(folder)
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    assert _cli("--data-dir", data, "models", "verify", "tiny", "--json") == 1
    report = json.loads(capsys.readouterr().out)
    errors = [f for f in report["findings"] if f["level"] == "error"]
    assert [f["file"] for f in errors] == [shard.name]
    assert "truncated or corrupt" in errors[0]["message"]


def test_verify_uses_the_pull_manifest_sizes(installed, capsys) -> None:
    data, folder = installed
    shard = _shard(folder)
    (folder / MANIFEST).write_text(json.dumps({"files": {shard.name: {"size": shard.stat().st_size + 10},
                                                           "tokenizer.model": {"size": 1}}}))
    assert _cli("--data-dir", data, "models", "verify", "tiny") == 1
    out = capsys.readouterr().out
    assert re.search(rf"ERROR\s+{re.escape(shard.name)}: truncated: .* expected {shard.stat().st_size + 10} bytes", out)
    assert re.search(r"ERROR\s+tokenizer.model: too large", out)
    assert "2 problem(s) found" in out


def test_verify_deep_finds_flipped_bits_that_sizes_miss(installed, capsys) -> None:
    data, folder = installed
    shard = _shard(folder)
    raw = bytearray(shard.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # inside tensor data: same size, zip directory intact
    shard.write_bytes(bytes(raw))
    assert _cli("--data-dir", data, "models", "verify", "tiny") == 0
    assert _cli("--data-dir", data, "models", "verify", "tiny", "--deep") == 1
    assert "CRC check failed" in capsys.readouterr().out


def test_verify_hash_finds_a_same_size_corrupt_file(installed, capsys) -> None:
    data, folder = installed
    shard = _shard(folder)
    good = shard.read_bytes()
    (folder / MANIFEST).write_text(json.dumps({"files": {shard.name: {
        "size": len(good), "sha256": hashlib.sha256(good).hexdigest()}}}))
    shard.write_bytes(good[:100] + bytes([good[100] ^ 1]) + good[101:])  # inside the zip header area
    assert _cli("--data-dir", data, "models", "verify", "tiny") == 0, "sizes alone cannot see it"
    assert _cli("--data-dir", data, "models", "verify", "tiny", "--hash") == 1
    assert f"{shard.name}: sha256 mismatch" in capsys.readouterr().out
    missing = folder / "nope"
    assert verify.verify_model(missing, data) == [verify.Finding("error", str(missing), "folder does not exist")]


def test_verify_reports_missing_shared_parts_and_shards(installed, capsys) -> None:
    data, folder = installed
    (data / "models" / "shared" / "bert_vocab.txt").unlink()
    (data / "models" / "shared" / "eva_vit_g.pth").unlink()
    _shard(folder).unlink()
    assert _cli("--data-dir", data, "models", "verify", "tiny") == 1
    out = capsys.readouterr().out
    assert re.search(r"ERROR\s+pytorch_model-00001-of-\d+\.bin: missing", out)
    assert re.search(r"ERROR\s+bert_vocab.txt: not found", out)
    assert re.search(r"WARNING\s+eva_vit_g.pth: .*bf16 copy inside the shards", out)
    assert [m.status for m in list_models(data)] == ["incomplete"]
