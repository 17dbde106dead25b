"""Subtitles: sidecar naming, encodings, malformed files, embedded text and image tracks."""
from __future__ import annotations

from pathlib import Path

import pytest

from indexer.subtitle_sources import embedded_tracks, parse_sidecar_name, read_sidecar, sidecar_files
from llamavid.media.probe import probe
from tests.support.media import make_video, write_srt


@pytest.mark.parametrize("name, expected", [
    ("Film.srt", (None, False, False)),
    ("Film.en.srt", ("en", False, False)),
    ("Film.en.forced.srt", ("en", True, False)),
    ("Film.eng.sdh.srt", ("eng", False, True)),
    ("Film.default.German.hi.ass", ("german", False, True)),
    ("Film.foreign.fr.srt", ("fr", True, False)),
])
def test_sidecar_names(name, expected):
    assert parse_sidecar_name(Path("/m/Film.mkv"), Path("/m") / name) == expected


def test_sidecar_discovery(tmp_path):
    video = tmp_path / "Film (1999).mkv"
    video.write_bytes(b"")
    for name in ("Film (1999).srt", "Film (1999).en.forced.srt", "Film (1999).de.ass", "Film (1999).sup",
                 "Film (1999) - extras.srt", "Other.srt", "Film (1999).txt"):
        (tmp_path / name).write_text("x")
    (tmp_path / "Subs").mkdir()
    (tmp_path / "Subs" / "Film (1999).fr.srt").write_text("x")
    names = sorted(p.name for p in sidecar_files(video))
    assert names == ["Film (1999).de.ass", "Film (1999).en.forced.srt", "Film (1999).fr.srt",
                     "Film (1999).srt", "Film (1999).sup"]


LINES = {
    "fr": ["Où est le café ? Déjà vu, très élégant.", "À bientôt, garçon, c'était génial !",
           "Je ne sais pas où il est allé.", "Nous étions là-bas hier soir.", "Ça va bien, merci beaucoup."],
    "cs": ["Příliš žluťoučký kůň úpěl ďábelské ódy.", "Dobrý den, jak se máte?", "Děkuji, mám se dobře.",
           "To je opravdu krásný večer.", "Nevím, co mám dělat."],
    "ru": ["Привет, как дела?", "Это очень хороший фильм.", "Спасибо, до свидания, мой друг.",
           "Где находится вокзал?", "Я не знаю, что делать."],
    "mixed": ["Café crème", "naïve", "Ελληνικά", "日本語のテキスト", "Straße"],
}


@pytest.mark.parametrize("encoding, language", [
    ("utf-8", "mixed"), ("utf-8-sig", "fr"), ("utf-16", "mixed"),
    ("cp1252", "fr"), ("latin-1", "fr"), ("cp1250", "cs"), ("cp1251", "ru"),
])
def test_sidecar_encodings_are_detected(tmp_path, encoding, language):
    lines = LINES[language]
    text = "".join(f"{i + 1}\n00:00:{i:02d},000 --> 00:00:{i:02d},900\n{line}\n\n" for i, line in enumerate(lines))
    (tmp_path / "Film.srt").write_bytes(text.encode(encoding))
    track = read_sidecar(tmp_path / "Film.mkv", tmp_path / "Film.srt")
    assert track.status == "ok", track.message
    assert [c.text for c in track.cues] == lines
    assert [(c.start_time, c.end_time) for c in track.cues][:2] == [(0.0, 0.9), (1.0, 1.9)]


def test_two_line_srt_parses(tmp_path):
    track = read_sidecar(tmp_path / "Film.mkv", write_srt(tmp_path / "Film.srt", "One", "Two <b>bold</b>"))
    assert [(c.start_time, c.end_time, c.text) for c in track.cues] == [(0.5, 1.5, "One"), (2.0, 3.0, "Two bold")]


def test_ass_and_vtt_sidecars(tmp_path):
    video = tmp_path / "Film.mkv"
    (tmp_path / "Film.vtt").write_text("WEBVTT\n\n00:00:01.000 --> 00:00:02.500\n<i>Hello</i> there\n")
    track = read_sidecar(video, tmp_path / "Film.vtt")
    assert [(c.start_time, c.end_time, c.text) for c in track.cues] == [(1.0, 2.5, "Hello there")]
    ass = tmp_path / "Film.en.ass"
    ass.write_text("[Script Info]\nScriptType: v4.00+\n\n[Events]\n"
                   "Format: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text\n"
                   "Dialogue: 0,0:00:03.00,0:00:04.00,Default,,0,0,0,,{\\b1}Bold{\\b0} line\\Nsecond\n"
                   "Comment: 0,0:00:05.00,0:00:06.00,Default,,0,0,0,,not shown\n")
    track = read_sidecar(video, ass)
    assert [(c.start_time, c.text) for c in track.cues] == [(3.0, "Bold line\nsecond")]
    assert track.language == "en"


@pytest.mark.parametrize("content", [b"", b"\x00\x01\x02garbage\xff" * 20, b"1\nnot a time\nhello\n"])
def test_malformed_sidecars_are_reported(tmp_path, content):
    (tmp_path / "Film.srt").write_bytes(content)
    track = read_sidecar(tmp_path / "Film.mkv", tmp_path / "Film.srt")
    assert track.status == "error" and "Film.srt" in track.message and not track.cues


def test_image_sidecar_is_reported(tmp_path):
    (tmp_path / "Film.en.sup").write_bytes(b"PG" + bytes(100))
    track = read_sidecar(tmp_path / "Film.mkv", tmp_path / "Film.en.sup")
    assert (track.kind, track.status) == ("image", "image-based") and "OCR" in track.message


CUES = [(0.5, 1.5, "First line"), (2.0, 3.0, "Second line")]


@pytest.mark.parametrize("name, codec, expected", [
    ("a.mkv", "subrip", ["First line", "Second line"]),
    ("b.mp4", "mov_text", ["First line", "Second line"]),
    ("c.mkv", "webvtt", ["First line", "Second line"]),
])
def test_embedded_text_tracks(tmp_path, name, codec, expected):
    path = make_video(tmp_path / name, seconds=4, subtitles=CUES, sub_codec=codec, sub_language="fre")
    (track,) = embedded_tracks(path, probe(path))
    assert (track.source, track.language, track.status) == ("embedded", "fre", "ok")
    assert [c.text for c in track.cues] == expected
    assert [(c.start_time, c.end_time) for c in track.cues] == [(0.5, 1.5), (2.0, 3.0)]


def test_embedded_ass_loses_its_tags(tmp_path):
    path = make_video(tmp_path / "a.mkv", subtitles=[(1, 2, "{\\i1}Styled{\\i0} text\\Nline two")],
                      sub_codec="ass")
    (track,) = embedded_tracks(path, probe(path))
    assert [c.text for c in track.cues] == ["Styled text\nline two"]


def test_embedded_image_track_is_reported(tmp_path):
    path = make_video(tmp_path / "a.mkv", subtitles=[(1, 2, "x")], sub_codec="hdmv_pgs_subtitle")
    (track,) = embedded_tracks(path, probe(path))
    assert (track.kind, track.status, track.cues) == ("image", "image-based", [])
    assert "PGS" in track.message
