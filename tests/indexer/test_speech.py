"""Speech recognition, offline, with a tiny random Whisper converted in the test session."""
from __future__ import annotations

import numpy as np
import pytest

import indexer
from indexer.whisper import SAMPLE_RATE, audio_windows
from media import make_video


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
    db = indexer.open_library(cli.data_dir)
    movie = indexer.find_movie(db, "Talk.mp4")
    cues = indexer.subtitles(db, movie)
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


@pytest.mark.parametrize("mode, tracks", [("always", ["embedded", "asr"]), ("never", ["embedded"])])
def test_speech_modes(cli, movies, tiny_eva, tiny_whisper, mode, tracks):
    make_video(movies / "A.mkv", seconds=3, audio=True, subtitles=[(0.5, 1.5, "Hi")])
    cli("add", movies)
    cli("run", "--vision", tiny_eva, "--whisper-model", tiny_whisper, "--speech", mode, "--quiet")
    assert [t["source"] for t in cli.status()["A.mkv"]["subtitle_tracks"]] == tracks
