"""End to end through the CLI: a library of good and broken files, features, subtitles, read API."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from indexer import library as lib
from tests.support.indexer_cli import TINY_WIDTH
from tests.support.media import make_audio_only, make_undecodable, make_video, rotate_mp4, truncate, write_srt

CUES = [(0.5, 1.5, "The hero enters"), (2.0, 3.0, "Nobody expected the llama")]


@pytest.fixture
def library(movies):
    """Films the indexer must handle, each with the state it must end in."""
    make_video(movies / "Good.mkv", seconds=5, subtitles=CUES, audio=True)
    write_srt(movies / "Good.fr.forced.srt", "Le héros entre", "Personne n'attendait le lama", "cp1252")
    (movies / "Good.de.srt").write_bytes(b"\x00\xff garbage \x00" * 10)  # malformed sidecar
    make_video(movies / "sub" / "Clip.mp4", seconds=3, subtitles=CUES)
    make_video(movies / "Short.mkv", seconds=1.2)
    rotate_mp4(make_video(movies / "Phone.mp4", seconds=2), 90)
    make_video(movies / "Still.mkv", fps=10, frame_times=[0, 0.1, 0.2, 4.0, 4.1])  # variable frame rate
    truncate(make_video(movies / "Cut.mkv", seconds=8, size=(160, 120)), 0.5)
    (movies / "Empty.mkv").write_bytes(b"")
    make_audio_only(movies / "Audio only.mkv")
    make_undecodable(movies / "Exotic.ts")
    (movies / "Fake.avi").write_text("not a video at all")
    return movies


def test_a_mixed_library(cli, library, tiny_eva):
    code, out, _ = cli("add", library)
    assert code == 0 and "10 new" in out
    code, out, err = cli("run", "--vision", tiny_eva, "--speech", "never", "--quiet")
    assert code == 0, err
    status = cli.status()
    assert {p: s["state"] for p, s in status.items()} == {
        "Good.mkv": "done", "sub/Clip.mp4": "done", "Short.mkv": "done", "Phone.mp4": "done",
        "Still.mkv": "done", "Cut.mkv": "done", "Empty.mkv": "failed", "Audio only.mkv": "failed",
        "Exotic.ts": "failed", "Fake.avi": "failed"}
    assert "empty (0 bytes)" in status["Empty.mkv"]["error"]
    assert "no video stream" in status["Audio only.mkv"]["error"]
    assert "unsupported video codec" in status["Exotic.ts"]["error"]
    assert "not a readable video" in status["Fake.avi"]["error"]
    assert "truncated" in status["Cut.mkv"]["warning"]
    assert "rotated" in status["Phone.mp4"]["warning"]
    assert "variable frame rate" in status["Still.mkv"]["warning"]

    good = status["Good.mkv"]
    assert good["frames"] == 5 and good["feature_shape"] == [5, 257, TINY_WIDTH]
    assert good["subtitle_sources"] == ["embedded", "sidecar"] and good["cues"] == 4
    tracks = {(t["source"], t["language"]): t for t in good["subtitle_tracks"]}
    assert tracks[("sidecar", "fr")]["forced"] == 1 and tracks[("sidecar", "fr")]["cue_count"] == 2
    assert tracks[("sidecar", "de")]["status"] == "error" and "Good.de.srt" in tracks[("sidecar", "de")]["message"]
    assert tracks[("embedded", "eng")]["cue_count"] == 2
    assert status["Short.mkv"]["frames"] == 2
    assert status["Still.mkv"]["frames"] == 2
    assert status["sub/Clip.mp4"]["subtitle_sources"] == ["embedded"]
    assert all(s["cache_bytes"] > 0 for s in status.values() if s["state"] == "done")

    # text status and the cache total
    code, out, _ = cli("status")
    assert "Empty.mkv" in out and "error: the file is empty" in out and "cache" in out


def test_read_api(cli, movies, tiny_eva):
    make_video(movies / "Good.mkv", seconds=4, subtitles=CUES)
    write_srt(movies / "Good.en.srt", "Where is the llama?", "Behind you")
    cli("add", movies)
    cli("run", "--vision", tiny_eva, "--speech", "never", "--quiet")
    db = lib.open_library(cli.data_dir)
    (movie,) = lib.list_movies(db)
    feats = lib.open_features(movie)
    assert isinstance(feats, np.memmap) and feats.dtype == np.float16 and feats.shape == (4, 257, TINY_WIDTH)
    assert not feats.flags.writeable and np.isfinite(feats).all() and feats.astype(np.float32).std() > 0
    assert lib.frame_times(db, movie).tolist() == [0.0, 1.0, 2.0, 3.0]
    cues = lib.subtitles(db, movie)
    assert [c.start_time for c in cues] == [0.5, 0.5, 2.0, 2.0]
    assert {c.source for c in cues} == {"embedded", "sidecar"}
    assert [c.text for c in lib.subtitles(db, movie, sources=["sidecar"])] == ["Where is the llama?", "Behind you"]
    hits = lib.search_subtitles(db, "llama")
    assert sorted(h.text for h in hits) == ["Nobody expected the llama", "Where is the llama?"]
    assert lib.search_subtitles(db, 'llama" OR "x') == []  # queries are literal, never FTS syntax errors
    assert lib.get_movie(db, movie.id).rel_path == "Good.mkv"
    assert lib.find_movie(db, str(movies / "Good.mkv")).id == movie.id
    code, out, _ = cli("search", "llama")
    assert code == 0 and "Good.mkv  0:00:02-0:00:03  Nobody expected the llama" in out.splitlines()


def test_features_match_a_direct_encoding(cli, movies, tiny_eva):
    """The cache holds exactly what EVA gives for the sampled, preprocessed frames (decoded here by
    two worker processes, as on a GPU machine)."""
    import torch

    from llamavid.media.decode import DecodeStats, decode_segment, video_spec
    from llamavid.media.preprocess import preprocess_images
    from llamavid.media.probe import probe
    from llamavid.model.eva import EvaVisionTower

    path = make_video(movies / "A.mp4", seconds=3, size=(128, 72))
    cli("add", movies)
    code, _, err = cli("run", "--vision", tiny_eva, "--speech", "never", "--quiet", "--batch-size", "2",
                       "--decode-workers", "2")
    assert code == 0, err
    frames = [img for _, img in decode_segment(video_spec(path, probe(path)), 1.0, 0, None, DecodeStats())]
    tower = EvaVisionTower.from_file(tiny_eva)
    expected = tower(preprocess_images(frames[:2])).to(torch.float16).numpy()
    db = lib.open_library(cli.data_dir)
    feats = lib.open_features(lib.list_movies(db)[0])
    np.testing.assert_allclose(feats[:2].astype(np.float32), expected.astype(np.float32), rtol=0, atol=1e-3)


def test_incomplete_features_are_not_served(cli, movies, tiny_eva):
    make_video(movies / "A.mkv", seconds=2)
    cli("add", movies)
    db = lib.open_library(cli.data_dir)
    with pytest.raises(lib.FeaturesNotReady, match="not complete"):
        lib.open_features(lib.list_movies(db)[0])


def test_rerun_changes_nothing_and_other_weights_reindex(cli, movies, tiny_eva, tmp_path):
    from llamavid.model.eva import write_tiny_eva

    make_video(movies / "A.mkv", seconds=2)
    cli("add", movies)
    cli("run", "--vision", tiny_eva, "--speech", "never", "--quiet")
    before = cli.status()["A.mkv"]
    code, out, _ = cli("run", "--vision", tiny_eva, "--quiet")
    assert "nothing to do" in out
    other = write_tiny_eva(tmp_path / "other.pth", width=88, seed=3)
    cli("retry", "A.mkv")
    cli("run", "--vision", other, "--speech", "never", "--quiet")
    after = cli.status()["A.mkv"]
    assert before["feature_shape"] == [2, 257, TINY_WIDTH] and after["feature_shape"] == [2, 257, 88]


def test_sidecar_added_later_is_picked_up(cli, movies, tiny_eva):
    make_video(movies / "A.mkv", seconds=2)
    cli("add", movies)
    cli("run", "--vision", tiny_eva, "--speech", "never", "--quiet")
    assert cli.status()["A.mkv"]["cues"] == 0
    write_srt(movies / "A.en.srt", "Hello", "World")
    code, out, _ = cli("scan")
    assert "1 with new subtitle files" in out
    cli("run", "--vision", tiny_eva, "--speech", "never", "--quiet")
    status = cli.status()["A.mkv"]
    assert status["cues"] == 2 and status["subtitle_sources"] == ["sidecar"] and status["state"] == "done"


def test_missing_vision_weights_is_a_clear_error(cli, movies):
    make_video(movies / "A.mkv", seconds=1)
    cli("add", movies)
    code, _, err = cli("run", "--quiet")
    assert code == 1 and "no vision weights installed" in err and "--vision" in err
    assert cli.status()["A.mkv"]["state"] == "queued"


def test_installed_weights_are_found(cli, movies, tiny_eva):
    make_video(movies / "A.mkv", seconds=1)
    (cli.data_dir / "models" / "llama-vid-7b").mkdir(parents=True)
    shutil.copy(tiny_eva, cli.data_dir / "models" / "llama-vid-7b" / "eva_vit_g.pth")
    cli("add", movies)
    code, _, err = cli("run", "--speech", "never", "--quiet")
    assert code == 0, err
    assert cli.status()["A.mkv"]["state"] == "done"


def test_remove_from_index(cli, movies, tiny_eva):
    make_video(movies / "A.mkv", seconds=1)
    make_video(movies / "B.mkv", seconds=1)
    cli("add", movies)
    cli("run", "--vision", tiny_eva, "--speech", "never", "--quiet")
    cache = cli.data_dir / "cache" / "features"
    assert len(list(cache.iterdir())) == 2
    code, out, _ = cli("rm", movies / "A.mkv")
    assert code == 0 and list(cli.status()) == ["B.mkv"] and len(list(cache.iterdir())) == 1
    assert (movies / "A.mkv").exists()  # the film itself is never touched
    code, out, _ = cli("rm", movies)
    assert code == 0 and cli.status() == {} and not list(cache.iterdir())
    code, _, err = cli("rm", movies / "nothing")
    assert code == 1 and "neither a library folder nor a movie" in err


def test_status_json_is_one_object_per_line(cli, movies, tiny_eva):
    make_video(movies / "A.mkv", seconds=1)
    cli("add", movies)
    _, out, _ = cli("status", "--json")
    (row,) = [json.loads(line) for line in out.splitlines()]
    assert row["state"] == "queued" and row["frames"] == 0 and row["error"] is None
    assert set(row) >= {"path", "state", "error", "frames", "cues", "subtitle_sources"}
    os.remove(movies / "A.mkv")
    cli("scan")
    assert cli.status()["A.mkv"]["state"] == "missing"


@pytest.mark.slow
def test_llamavid_index_console_script(llamavid_cmd, movies, tmp_path):
    """The command is registered in `llamavid` (subprocess, the installed console script)."""
    import subprocess

    make_video(movies / "A.mkv", seconds=1)
    base = [*llamavid_cmd, "index"]
    data = ["--data-dir", str(tmp_path / "data")]
    add = subprocess.run([*base, "add", str(movies), *data], capture_output=True, text=True, timeout=120)
    assert add.returncode == 0, add.stderr
    status = subprocess.run([*base, "status", "--json", *data], capture_output=True, text=True, timeout=120)
    assert [json.loads(line)["state"] for line in status.stdout.splitlines()] == ["queued"]
    bad = subprocess.run([*base, "add", str(tmp_path / "nowhere"), *data], capture_output=True, text=True)
    assert bad.returncode == 1 and bad.stderr.startswith("llamavid: error:") and "not a folder" in bad.stderr


@pytest.mark.slow
def test_a_film_of_several_hours(cli, movies, tiny_eva):
    """3 hours (at 1 frame/s, tiny pictures, so the file is quick to make): probe, preallocation,
    times and the sampling all hold at that length; sampled every 50 s to keep the test short."""
    hours = 3
    make_video(movies / "Epic.mkv", fps=1, size=(32, 32), frame_times=[float(i) for i in range(hours * 3600)])
    cli("add", movies)
    code, _, err = cli("run", "--vision", tiny_eva, "--speech", "never", "--quiet", "--fps", "0.02",
                       "--batch-size", "16")
    assert code == 0, err
    status = cli.status()["Epic.mkv"]
    assert status["state"] == "done" and status["duration"] == pytest.approx(hours * 3600, abs=2)
    assert status["frames"] == hours * 72 and status["feature_shape"] == [hours * 72, 257, TINY_WIDTH]
    db = lib.open_library(cli.data_dir)
    times = lib.frame_times(db, lib.list_movies(db)[0])
    assert times[-1] == pytest.approx(hours * 3600 - 50) and np.allclose(np.diff(times), 50)
