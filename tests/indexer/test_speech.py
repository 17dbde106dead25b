"""Speech recognition, offline, with a tiny random Whisper converted in the test session."""
from __future__ import annotations

import numpy as np
import pytest

from indexer import library
from indexer.whisper import SAMPLE_RATE, audio_windows
from tests.support.media import make_video


def test_audio_windows_resume_at_a_window(tmp_path):
    path = make_video(tmp_path / "a.mp4", seconds=5, audio=True)
    full = dict(audio_windows(path, 0.0, 2.0))
    assert sorted(full) == [0, 1, 2]
    assert [len(full[i]) for i in (0, 1)] == [2 * SAMPLE_RATE] * 2
    assert 0.9 * SAMPLE_RATE < len(full[2]) < 1.2 * SAMPLE_RATE
    tail = dict(audio_windows(path, 0.0, 2.0, start_window=1))
    assert sorted(tail) == [1, 2] and len(tail[1]) == 2 * SAMPLE_RATE
    # a 440 Hz tone: the resumed window holds the same signal (AAC priming aside)
    assert np.abs(tail[1][4000:] - full[1][4000:]).max() < 0.05
    assert abs(np.sqrt((full[1] ** 2).mean()) - 0.2 / np.sqrt(2)) < 0.02


@pytest.mark.slow
def test_speech_where_no_text_subtitles_exist(cli, movies, tiny_eva, tiny_whisper):
    make_video(movies / "Talk.mp4", seconds=4, audio=True)                       # no subtitles: ASR
    make_video(movies / "Subbed.mkv", seconds=3, audio=True, subtitles=[(0.5, 1.5, "Hi")])  # has text
    make_video(movies / "Silent.mkv", seconds=2)                                  # no audio track
    cli("add", movies)
    code, _, err = cli("run", "--vision", tiny_eva, "--whisper-model", tiny_whisper, "--no-vad",
                        "--whisper-beam", "1", "--quiet")
    assert code == 0, err
    status = cli.status()
    assert {p: s["state"] for p, s in status.items()} == {"Talk.mp4": "done", "Subbed.mkv": "done",
                                                           "Silent.mkv": "done"}
    talk = status["Talk.mp4"]
    (track,) = talk["subtitle_tracks"]
    assert track["source"] == "asr" and track["language"] == "en" and track["cue_count"] == talk["cues"] > 0
    assert talk["subtitle_sources"] == ["asr"]
    db = library.open_library(cli.data_dir)
    movie = library.find_movie(db, "Talk.mp4")
    cues = library.subtitles(db, movie)
    assert all(0 <= c.start_time <= c.end_time <= 4.1 and c.source == "asr" and c.language == "en" for c in cues)
    indexed = db.execute("SELECT COUNT(*) FROM cues_fts WHERE rowid IN (SELECT id FROM cues WHERE source = 'asr')")
    assert indexed.fetchone()[0] == len(cues)  # ASR text is in the full-text index too
    assert status["Subbed.mkv"]["subtitle_sources"] == ["embedded"]
    rows = dict(db.execute("SELECT rel_path, speech_state FROM movies").fetchall())
    assert rows["Subbed.mkv"] == "skipped: text subtitles present"
    assert rows["Silent.mkv"] == "skipped: no audio track"
    assert rows["Talk.mp4"] == "done"


def test_vad_keeps_whisper_from_inventing_text_in_a_tone(cli, movies, tiny_eva, tiny_whisper):
    make_video(movies / "Tone.mp4", seconds=4, audio=True)
    cli("add", movies)
    code, _, err = cli("run", "--vision", tiny_eva, "--whisper-model", tiny_whisper, "--quiet")
    assert code == 0, err
    status = cli.status()["Tone.mp4"]
    assert status["state"] == "done" and status["cues"] == 0
    assert [t["source"] for t in status["subtitle_tracks"]] == ["asr"]


def test_an_unusable_speech_model_is_a_warning_not_a_failure(cli, movies, tiny_eva, tmp_path):
    make_video(movies / "Talk.mp4", seconds=2, audio=True)
    cli("add", movies)
    code, _, err = cli("run", "--vision", tiny_eva, "--whisper-model", tmp_path / "no-such-model", "--quiet")
    assert code == 0, err
    status = cli.status()["Talk.mp4"]
    assert status["state"] == "done" and status["frames"] == 2
    assert "speech recognition failed" in status["warning"] and "--whisper-model" in status["warning"]


def test_a_speech_model_that_is_not_installed_is_never_downloaded(cli, movies, tiny_eva, tiny_whisper,
                                                                   monkeypatch):
    import shutil

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # a download attempt would fail loudly
    make_video(movies / "Talk.mp4", seconds=2, audio=True)
    cli("add", movies)
    code, _, err = cli("run", "--vision", tiny_eva, "--whisper-model", "tiny", "--quiet")
    assert code == 0, err
    status = cli.status()["Talk.mp4"]
    assert status["state"] == "done" and status["frames"] == 2 and status["subtitle_tracks"] == []
    assert "llamavid models pull whisper-tiny" in status["warning"]
    assert "llamavid index retry" in status["warning"] and "127.0.0.1:9" not in status["warning"]
    # the user installs it (as `models pull` would leave it), retries, and the film is transcribed
    shutil.copytree(tiny_whisper, cli.data_dir / "models" / "whisper-tiny")
    code, out, _ = cli("retry")
    assert code == 0 and "1 queued" in out
    code, _, err = cli("run", "--vision", tiny_eva, "--whisper-model", "tiny", "--no-vad", "--whisper-beam", "1",
                       "--quiet")
    assert code == 0, err
    status = cli.status()["Talk.mp4"]
    assert [t["source"] for t in status["subtitle_tracks"]] == ["asr"]
    assert "speech recognition failed" not in (status["warning"] or "")


def test_speech_models_in_the_model_manager(tiny_whisper, tmp_path, capsys):
    import shutil

    from cli import main
    from llamavid.hub import catalog
    from llamavid.hub.installed import list_models
    from llamavid.hub.verify import verify_model

    assert catalog.get("whisper-small").repo_id == "Systran/faster-whisper-small"
    assert catalog.get("whisper-small").kind == "speech"
    shutil.copytree(tiny_whisper, tmp_path / "models" / "whisper-small")
    (entry,) = list_models(tmp_path)
    assert (entry.name, entry.kind, entry.status) == ("whisper-small", "speech", "complete")
    findings = verify_model(entry.path, tmp_path, name="whisper-small")
    assert {f.file for f in findings} >= {"config.json", "model.bin", "tokenizer.json"}
    assert all(f.level == "ok" for f in findings)
    (entry.path / "model.bin").unlink()
    assert list_models(tmp_path)[0].status == "incomplete"
    assert any(f.level == "error" and f.file == "model.bin" for f in verify_model(entry.path, tmp_path))
    assert main(["--data-dir", str(tmp_path), "models", "list", "--available"]) == 0
    assert "whisper-large-v3" in capsys.readouterr().out


@pytest.mark.parametrize("mode, tracks", [("always", ["embedded", "asr"]), ("never", ["embedded"])])
def test_speech_modes(cli, movies, tiny_eva, tiny_whisper, mode, tracks):
    make_video(movies / "A.mkv", seconds=3, audio=True, subtitles=[(0.5, 1.5, "Hi")])
    cli("add", movies)
    cli("run", "--vision", tiny_eva, "--whisper-model", tiny_whisper, "--speech", mode, "--quiet")
    assert [t["source"] for t in cli.status()["A.mkv"]["subtitle_tracks"]] == tracks
