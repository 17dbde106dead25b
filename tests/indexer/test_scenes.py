"""The scene stage (indexer/scenes.py): optional and never a download, one vector per sampled frame made
by the scene model's image side from the frames EVA gets, stored under 10 MB per film hour, resumed at
the last chunk after a pause, and removed with its film. Real films (PyAV), a real library database,
the tiny EVA and a tiny CLIP in the released layout (random weights, written here)."""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from indexer.library import frame_times
from indexer.pipeline import IndexOptions
from indexer.runner import run_queue
from indexer.scene_model import SceneImages, write_tiny_scene_model
from indexer.scenes import NOT_INSTALLED, SceneOptions, open_scenes
from indexer.store import LibraryStore
from llamavid.media.decode import SampleStream, video_spec
from llamavid.media.probe import probe
from llamavid.paths import DataDir
from tests.support.media import make_video


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> Path:
    return write_tiny_scene_model(tmp_path_factory.mktemp("clip") / "clip")


def _row(cli, name: str) -> dict:
    with LibraryStore.open(cli.data_dir / "library.db") as store:
        return next(r for r in store.movie_views() if r["rel_path"] == name)


def test_the_stage_waits_for_the_model_and_then_adds_vectors_without_reading_the_film_again(
        cli, movies, tiny_eva, tiny_clip, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # a download attempt would fail loudly
    film = make_video(movies / "Harbor.mp4", seconds=6)
    cli("add", movies)
    code, _, err = cli("run", "--vision", tiny_eva, "--quiet", "--speech", "never")
    assert code == 0, err
    assert cli.status()["Harbor.mp4"]["scenes"] == {"state": NOT_INSTALLED, "frames": 0, "bytes": 0}
    code, out, _ = cli("status")
    assert "no scene model is installed: `llamavid models pull clip-vit-b-32`, then `llamavid index run`" in out
    features = Path(_row(cli, "Harbor.mp4")["feature_path"])
    before = (features.stat().st_ino, features.stat().st_mtime_ns)

    shutil.copytree(tiny_clip, cli.data_dir / "models" / "clip-vit-b-32")  # as `models pull` leaves it
    code, _, err = cli("run", "--vision", tiny_eva, "--quiet", "--speech", "never")
    assert code == 0, err
    status = cli.status()["Harbor.mp4"]
    assert status["state"] == "done" and status["scenes"]["state"] == "done" and status["scenes"]["frames"] == 6
    assert (features.stat().st_ino, features.stat().st_mtime_ns) == before  # EVA's features were kept
    row = _row(cli, "Harbor.mp4")
    vectors = open_scenes(row["scenes_path"])
    assert vectors.shape == (6, 16) and vectors.dtype == np.float16
    assert row["scenes_bytes"] == Path(row["scenes_path"]).stat().st_size < 10e6 / 3600 * 6
    assert np.allclose(np.linalg.norm(vectors.astype(np.float32), axis=1), 1, atol=2e-3)
    # each row is the image side of the frame sampled at its time, preprocessed as for EVA
    images = SceneImages(tiny_clip, "cpu", "fp32")
    samples = list(SampleStream(video_spec(film, probe(film)), 1.0, 0, images.image_size))
    assert np.array_equal(vectors, images(np.stack([s.pixels for s in samples])))
    with LibraryStore.open(cli.data_dir / "library.db") as store:
        assert store.scene_times(row["id"]) == [s.time for s in samples] == list(frame_times(store, _movie(store)))
    code, out, _ = cli("status")
    assert "scene search: 1 of 1 films" in out

    code, _, _ = cli("rm", film)
    assert code == 0 and not Path(row["scenes_path"]).exists()  # removed with its film


def _movie(store):
    from indexer.library import list_movies

    return list_movies(store)[0]


def test_a_film_paused_in_the_scene_stage_resumes_at_its_last_chunk_with_the_same_vectors(
        tmp_path, tiny_eva, tiny_clip):
    film = make_video(tmp_path / "films" / "Long.mp4", seconds=14)
    options = IndexOptions(vision=str(tiny_eva), speech="never", yield_to_chat=False,
                           scenes=SceneOptions(batch_size=4))

    def indexed(name: str, on_progress=None) -> tuple[DataDir, int]:
        data = DataDir(tmp_path / name).create()
        shutil.copytree(tiny_clip, data.models / "clip-vit-b-32")
        with LibraryStore.open(data.database) as store:
            from indexer.controls import add_folders

            add_folders(store, [str(film.parent)])
            movie_id = store.movie_views()[0]["id"]
        run_queue(data, options, on_progress)
        return data, movie_id

    whole, whole_id = indexed("whole")
    paused_at: list[int] = []

    def pause_after_the_first_chunk(movie: dict, stage: str, done: int, total) -> None:
        if stage == "scenes" and not paused_at:
            paused_at.append(done)
            with LibraryStore.open(data.database) as store:
                store.control_jobs([movie["id"]], "pause")

    data = DataDir(tmp_path / "paused")
    data, movie_id = indexed("paused", pause_after_the_first_chunk)
    with LibraryStore.open(data.database) as store:
        row = store.movie(movie_id)
        assert store.movie_view(movie_id)["job_state"] == "paused"
        assert paused_at == [4] and row["scenes_done"] == 4 and row["scenes_state"] is None
        assert Path(row["scenes_path"] + ".partial").is_file()
        store.control_jobs([movie_id], "resume")
    run_queue(data, options)
    with LibraryStore.open(data.database) as store, LibraryStore.open(whole.database) as reference:
        row, ref = store.movie(movie_id), reference.movie(whole_id)
        assert row["scenes_state"] == ref["scenes_state"] == "done" and row["scenes_done"] == ref["scenes_done"] == 14
        assert np.array_equal(open_scenes(row["scenes_path"]), open_scenes(ref["scenes_path"]))
        assert store.scene_times(movie_id) == reference.scene_times(whole_id)
        assert json.loads(row["feature_shape"])[0] == 14


def test_the_scene_model_in_the_model_manager(tiny_clip, tmp_path, capsys):
    from cli import main
    from llamavid.hub import catalog
    from llamavid.hub.installed import list_models
    from llamavid.hub.verify import verify_model

    entry = catalog.get("clip-vit-b-32")
    assert (entry.repo_id, entry.kind, entry.shared) == ("openai/clip-vit-base-patch32", "scenes", ())
    assert catalog.get("openai/clip-vit-base-patch32") is entry and not catalog.can_chat("scenes")
    shutil.copytree(tiny_clip, tmp_path / "models" / "clip-vit-b-32")
    (installed,) = list_models(tmp_path)
    assert (installed.name, installed.kind, installed.status) == ("clip-vit-b-32", "scenes", "complete")
    findings = verify_model(installed.path, tmp_path, name="clip-vit-b-32")
    assert {f.file for f in findings} == {"config.json", "model.safetensors", "tokenizer.json"}
    assert all(f.level == "ok" for f in findings)
    (installed.path / "model.safetensors").unlink()
    assert list_models(tmp_path)[0].status == "incomplete"
    assert any(f.level == "error" and "model.safetensors" in f.file for f in verify_model(installed.path, tmp_path))
    assert main(["--data-dir", str(tmp_path), "models", "list", "--available"]) == 0
    assert "clip-vit-b-32" in capsys.readouterr().out


def test_the_released_layout_with_pytorch_model_bin_gives_the_same_vectors(tiny_clip, tmp_path):
    """openai/clip-vit-base-patch32 ships pytorch_model.bin (with old position_ids buffers), not safetensors."""
    import torch
    from safetensors.torch import load_file

    from indexer.scene_model import SceneTexts

    released = tmp_path / "released"
    shutil.copytree(tiny_clip, released)
    weights = load_file(released / "model.safetensors")
    weights["text_model.embeddings.position_ids"] = torch.arange(77)[None]
    torch.save(weights, released / "pytorch_model.bin")
    (released / "model.safetensors").unlink()
    pixels = np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32)
    assert np.array_equal(SceneImages(released, "cpu", "fp32")(pixels), SceneImages(tiny_clip, "cpu", "fp32")(pixels))
    assert np.array_equal(SceneTexts(released)(["a red kite"]), SceneTexts(tiny_clip)(["a red kite"]))


def test_the_text_side_runs_on_the_thread_count_that_was_faster_here() -> None:
    """A dozen tokens through a small encoder can lose more to threads waiting on each other than
    they gain: the count is measured on the machine, not fixed."""
    from indexer.scene_model import fastest_threads, torch_threads

    with torch_threads(2):
        slower_with_threads = fastest_threads(lambda: time.sleep(0.02 * torch.get_num_threads()), rounds=2)
        faster_with_threads = fastest_threads(lambda: time.sleep(0.04 / torch.get_num_threads()), rounds=2)
        assert torch.get_num_threads() == 2  # put back after measuring
    assert (slower_with_threads, faster_with_threads) == (1, 2)
