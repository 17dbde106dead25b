"""The quick chat's uploads are kept per session and deleted with it (issue 24).

Gradio stores an upload at a path made from a hash of its content, so two browser sessions that
upload the same picture get the same file. Each session therefore asks about its own copy
(``<upload dir>/sessions/<id>/<name>``, :meth:`Handlers.keep_upload`), and replacing, removing or
ending deletes that copy alone (:meth:`Handlers.forget_upload`); Gradio's cached file is left to its
own sweep. The two-browser version of this is in test_server_ui.py."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from app.server.security import SESSION_UPLOADS, Guard
from app.server.settings import ServerSettings
from app.server.ui import Handlers, copy_for_session, session_copy_of

PICTURE = b"\x89PNG the same picture, uploaded by two browsers"


def gradio_upload(upload_dir: Path, content: bytes, name: str = "picture.png") -> Path:
    """Where Gradio keeps an upload: a folder named by the content's hash, the file's own name in it."""
    path = upload_dir / hashlib.sha256(content).hexdigest() / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


@pytest.fixture
def handlers(tmp_path: Path) -> Handlers:
    return Handlers(service=None, indexer=None, upload_dir=tmp_path)


def test_two_sessions_uploading_the_same_picture_each_keep_their_own_copy(handlers: Handlers,
                                                                          tmp_path: Path) -> None:
    cached = gradio_upload(tmp_path, PICTURE)
    first, chat = handlers.keep_upload(str(cached), None)  # one browser session
    second, _ = handlers.keep_upload(str(cached), None)  # another one, the same picture
    assert chat == [], "a new picture starts a new quick chat"
    assert first != second, "the same content, yet each session has a path of its own"
    for copy in (Path(first), Path(second)):
        assert copy.parent.parent == tmp_path / SESSION_UPLOADS and copy.name == "picture.png"
        assert copy.read_bytes() == PICTURE

    handlers.forget_upload(first)  # the first session removes its picture (or ends)
    assert not Path(first).exists() and not Path(first).parent.exists(), "its copy and its folder are gone"
    assert Path(second).read_bytes() == PICTURE, "the other session's picture is still there"
    assert cached.read_bytes() == PICTURE, "Gradio's cached file is left to Gradio's sweep"


def test_a_replaced_or_removed_upload_deletes_that_sessions_previous_copy_only(handlers: Handlers,
                                                                               tmp_path: Path) -> None:
    cached = gradio_upload(tmp_path, PICTURE)
    mine, _ = handlers.keep_upload(str(cached), None)
    theirs, _ = handlers.keep_upload(str(cached), None)
    replaced, chat = handlers.keep_upload(str(gradio_upload(tmp_path, b"another picture")), mine)
    assert chat == [] and not Path(mine).exists() and Path(replaced).read_bytes() == b"another picture"
    assert handlers.keep_upload(None, replaced) == (None, [])  # removed: nothing to ask about
    assert not Path(replaced).exists()
    assert Path(theirs).read_bytes() == PICTURE
    assert [p.name for p in (tmp_path / SESSION_UPLOADS).iterdir()] == [Path(theirs).parent.name]


def test_the_copy_is_a_hard_link_where_possible_else_a_copy(tmp_path: Path, monkeypatch) -> None:
    cached = gradio_upload(tmp_path, PICTURE)
    linked = copy_for_session(tmp_path, cached)
    assert os.stat(linked).st_ino == os.stat(cached).st_ino, "same file system: no bytes copied"

    def no_links(src: object, dst: object) -> None:
        raise OSError("hard links not supported")

    monkeypatch.setattr(os, "link", no_links)
    copied = copy_for_session(tmp_path, cached)
    assert copied.read_bytes() == PICTURE and os.stat(copied).st_ino != os.stat(cached).st_ino
    cached.unlink()  # Gradio's sweep
    assert linked.read_bytes() == copied.read_bytes() == PICTURE


def test_forget_upload_deletes_nothing_but_a_sessions_own_copy(handlers: Handlers, tmp_path: Path) -> None:
    cached = gradio_upload(tmp_path, PICTURE)
    theirs = Path(handlers.keep_upload(str(cached), None)[0])
    sessions = tmp_path / SESSION_UPLOADS
    outside = tmp_path.parent / f"{tmp_path.name}-outside.txt"
    outside.write_text("not an upload")
    (sessions / "loose.png").write_bytes(PICTURE)  # directly in sessions/, not in a session's folder
    (sessions / "a" / "b").mkdir(parents=True)
    (sessions / "a" / "b" / "deep.png").write_bytes(PICTURE)
    (sessions / "link").mkdir()
    (sessions / "link" / "picture.png").symlink_to(theirs)  # a link to another session's copy
    (sessions / "out").symlink_to(tmp_path.parent, target_is_directory=True)  # a folder that leads out
    around = theirs.parent / ".." / ".." / cached.parent.name / cached.name  # Gradio's file, by way of sessions/
    refused = [None, "", str(cached), str(outside), str(sessions), str(theirs.parent), str(sessions / "loose.png"),
               str(sessions / "a" / "b" / "deep.png"), str(sessions / "link" / "picture.png"),
               str(sessions / "out" / outside.name), str(around)]
    for path in refused:
        assert session_copy_of(tmp_path, path) is None, path
        handlers.forget_upload(path)
    assert cached.exists() and outside.exists() and theirs.read_bytes() == PICTURE
    assert (sessions / "loose.png").exists() and (sessions / "a" / "b" / "deep.png").exists()
    assert (sessions / "link" / "picture.png").is_symlink()
    assert session_copy_of(tmp_path, str(theirs)) == theirs.resolve()
    outside.unlink()


def test_the_guard_serves_gradios_uploads_but_never_a_sessions_copy(tmp_path: Path) -> None:
    """The page shows Gradio's cached upload (``/gradio_api/file=``); a session's copy is read by the
    server alone, so no browser gets it, even one that learnt its path."""
    guard = Guard(app=None, settings=ServerSettings(data_dir=tmp_path / "data"), upload_dir=tmp_path)
    cached = gradio_upload(tmp_path, PICTURE)
    copy = copy_for_session(tmp_path, cached)

    def status(path: Path | str) -> int | None:
        url = f"/gradio_api/file={path}"
        problem = guard.refusal({"type": "http", "method": "GET", "path": url, "raw_path": url.encode()},
                                {"host": "127.0.0.1:7860"})
        return None if problem is None else problem.status

    assert status(cached) is None
    for path in (copy, copy.parent, tmp_path / SESSION_UPLOADS, f"{cached.parent}/../{SESSION_UPLOADS}/"
                 f"{copy.parent.name}/{copy.name}", f"{cached.parent}/..%2f{SESSION_UPLOADS}%2f{copy.parent.name}"):
        assert status(path) == 404, path
