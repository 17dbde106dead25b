"""Subtitles of a movie: embedded text tracks, sidecar files, and image-based tracks reported as such.

Sidecar files are matched the way Jellyfin, Plex and Kodi do it: same base name as the video,
then optional dot-separated tags, then the extension: ``Film.srt``, ``Film.en.srt``,
``Film.en.forced.srt``, ``Film.en.sdh.srt``, ``Film.English.ass``; also inside a ``Subs`` or
``Subtitles`` folder next to the video. Tags ``forced``/``foreign`` mark forced tracks,
``sdh``/``cc``/``hi`` hearing-impaired ones, ``default`` is ignored; the remaining tag is the
language (the last one wins, as in Jellyfin), kept as written (``en``, ``eng``, ``english``).

Text is decoded as UTF-8 (with or without BOM) when it is valid UTF-8, otherwise with the encoding
charset-normalizer detects (cp1252, latin-1, cp1251, GB18030...), and parsed with pysubs2. A file
that cannot be read becomes a track with status "error" and a message; it never stops the movie.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import av
import pysubs2
from charset_normalizer import from_bytes

from llamavid.media.probe import IMAGE_SUBTITLE_CODECS, TEXT_SUBTITLE_CODECS
from llamavid.prompt.subtitles import Cue

TEXT_EXTENSIONS = {".srt": "srt", ".ass": "ass", ".ssa": "ssa", ".vtt": "vtt", ".sub": "microdvd",
                   ".smi": "sami", ".sami": "sami", ".ttml": "ttml"}
IMAGE_EXTENSIONS = {".sup": "PGS", ".idx": "VobSub"}
FORCED_TAGS = {"forced", "foreign"}
SDH_TAGS = {"sdh", "cc", "hi"}
IGNORED_TAGS = {"default"}
SUBTITLE_FOLDERS = {"subs", "subtitles"}
# legacy code pages of subtitle files, most common first (tie-break for charset detection)
COMMON_ENCODINGS = ["cp1252", "cp1250", "cp1251", "cp1253", "cp1254", "cp1256", "cp1255", "gb18030",
                    "big5", "shift_jis", "euc_kr", "cp1257", "iso8859_15", "latin_1"]
_ASS_TAG = re.compile(r"\{[^}]*\}")


@dataclass
class Track:
    """One subtitle source of a movie, as stored in ``subtitle_tracks``."""

    source: str                      # embedded | sidecar | asr
    ref: str                         # stream index, file path or model name
    codec: str | None = None
    language: str | None = None
    forced: bool = False
    sdh: bool = False
    kind: str = "text"               # text | image
    status: str = "ok"               # ok | image-based | error
    message: str | None = None
    cues: list[Cue] = field(default_factory=list)


def clean_text(ass_text: str) -> str:
    """Plain text of an ASS/SSA event (tags and drawing commands removed, line breaks kept)."""
    text = pysubs2.SSAEvent(text=ass_text).plaintext
    text = _ASS_TAG.sub("", text)
    return "\n".join(line.strip() for line in text.splitlines() if line.strip())


def sidecar_files(video: Path) -> list[Path]:
    """Subtitle files that belong to ``video``, next to it or in a Subs/Subtitles folder."""
    stem = video.stem.lower()
    folders = [video.parent] + [p for p in _subdirs(video.parent) if p.name.lower() in SUBTITLE_FOLDERS]
    found = []
    for folder in folders:
        for path in sorted(folder.iterdir()):
            name = path.name.lower()
            ext = path.suffix.lower()
            if ext not in TEXT_EXTENSIONS and ext not in IMAGE_EXTENSIONS:
                continue
            if ext == ".sub" and path.with_suffix(".idx").exists():
                continue  # the binary half of a VobSub pair; reported through its .idx
            if (name[:-len(ext)] == stem or name.startswith(stem + ".")) and path.is_file():
                found.append(path)
    return found


def sidecar_signature(video: Path) -> str:
    """Names, sizes and mtimes of the sidecar files: a scan re-reads subtitles when it changes."""
    parts = []
    for path in sidecar_files(video):
        st = path.stat()
        parts.append(f"{path.name}:{st.st_size}:{st.st_mtime_ns}")
    return "|".join(parts)


def _subdirs(folder: Path) -> list[Path]:
    try:
        return [p for p in folder.iterdir() if p.is_dir()]
    except OSError:
        return []


def parse_sidecar_name(video: Path, path: Path) -> tuple[str | None, bool, bool]:
    """(language, forced, sdh) from the tags between the video's name and the extension."""
    middle = path.name[len(video.stem):-len(path.suffix)]
    tags = [t.lower() for t in middle.split(".") if t]
    language = None
    for tag in tags:
        if tag not in FORCED_TAGS | SDH_TAGS | IGNORED_TAGS:
            language = tag
    return language, any(t in FORCED_TAGS for t in tags), any(t in SDH_TAGS for t in tags)


def decode_text(raw: bytes) -> tuple[str, str]:
    """(text, encoding): UTF-8/UTF-16 by BOM or validity first, else charset-normalizer's guess."""
    for bom, encoding in ((b"\xef\xbb\xbf", "utf-8-sig"), (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16")):
        if raw.startswith(bom):
            return raw.decode(encoding), encoding
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    matches = list(from_bytes(raw))
    if not matches:
        raise ValueError("cannot tell the text encoding (binary file?)")
    # Near-ties are common for Latin text (cp1257 and cp1252 both read French "plausibly"); among
    # candidates about as clean as the best, prefer the code pages subtitles are actually written in.
    floor = min(m.chaos for m in matches) + 0.05
    close = [m for m in matches if m.chaos <= floor]
    best = min(close, key=lambda m: (COMMON_ENCODINGS.index(m.encoding) if m.encoding in COMMON_ENCODINGS
                                     else len(COMMON_ENCODINGS), m.chaos))
    return str(best), best.encoding


def read_sidecar(video: Path, path: Path, frame_rate: float | None = None) -> Track:
    """Parse one sidecar file into a Track (status "error" with a message if it cannot be read)."""
    language, forced, sdh = parse_sidecar_name(video, path)
    ext = path.suffix.lower()
    track = Track(source="sidecar", ref=str(path), language=language, forced=forced, sdh=sdh)
    if ext in IMAGE_EXTENSIONS:
        track.kind, track.status, track.codec = "image", "image-based", IMAGE_EXTENSIONS[ext]
        track.message = f"{path.name}: image-based subtitles ({track.codec}) need OCR; not used"
        return track
    track.codec = TEXT_EXTENSIONS[ext]
    try:
        text, encoding = decode_text(path.read_bytes())
        track.cues = parse_subtitle_text(text, ext, frame_rate)
    except Exception as exc:  # noqa: BLE001 - any parse failure is reported per file
        track.status = "error"
        track.message = f"{path.name}: cannot read subtitles ({exc}); fix or re-download the file"
        return track
    if not track.cues:
        track.status = "error"
        track.message = f"{path.name}: no subtitle cues found (malformed or empty file)"
    elif encoding not in ("utf-8", "utf-8-sig", "ascii"):
        track.message = f"{path.name}: read as {encoding}"
    return track


def parse_subtitle_text(text: str, ext: str, frame_rate: float | None = None) -> list[Cue]:
    """Cues of a subtitle document; the format comes from the content (pysubs2), the extension decides
    only between look-alikes."""
    fps = frame_rate or 23.976  # MicroDVD counts frames
    forced = {".sub": "microdvd", ".vtt": "vtt"}.get(ext)
    try:
        subs = pysubs2.SSAFile.from_string(text, format_=forced, fps=fps)
    except pysubs2.exceptions.FormatAutodetectionError:
        # e.g. an ASS file without a styles section: trust the extension
        subs = pysubs2.SSAFile.from_string(text, format_=TEXT_EXTENSIONS[ext], fps=fps)
    cues = []
    for event in subs.events:
        if event.is_comment or event.is_drawing:
            continue
        body = clean_text(event.text)
        if body and event.end > event.start >= 0:
            cues.append(Cue(event.start / 1000, event.end / 1000, body))
    cues.sort(key=lambda c: (c.start_time, c.end_time))
    return cues


def embedded_tracks(path: Path, probe_info) -> list[Track]:
    """Every subtitle stream of the container: text ones with their cues, image ones reported."""
    tracks: dict[int, Track] = {}
    for info in probe_info.streams:
        if info.type != "subtitle":
            continue
        track = Track(source="embedded", ref=str(info.index), codec=info.codec, language=info.language,
                      forced=info.forced, sdh=info.hearing_impaired)
        if info.codec in IMAGE_SUBTITLE_CODECS:
            track.kind, track.status = "image", "image-based"
            track.message = (f"stream {info.index}: image-based subtitles "
                             f"({IMAGE_SUBTITLE_CODECS[info.codec]}) need OCR; not used")
        elif info.codec not in TEXT_SUBTITLE_CODECS:
            track.status = "error"
            track.message = f"stream {info.index}: unsupported subtitle codec {info.codec!r}"
        tracks[info.index] = track
    wanted = [i for i, t in tracks.items() if t.kind == "text" and t.status == "ok"]
    if wanted:
        _read_text_streams(path, probe_info.start_time, {i: tracks[i] for i in wanted})
    return list(tracks.values())


def _read_text_streams(path: Path, origin: float, tracks: dict[int, Track]) -> None:
    """One demux pass over the file, decoding only the wanted subtitle streams."""
    with av.open(str(path), metadata_errors="ignore") as container:
        streams = [container.streams[i] for i in tracks]
        for packet in container.demux(streams):
            if packet.size == 0 or packet.pts is None:
                continue
            track = tracks[packet.stream.index]
            try:
                decoded = packet.stream.decode(packet)
            except av.error.FFmpegError as exc:
                track.message = f"stream {packet.stream.index}: skipped a damaged cue ({exc})"
                continue
            start = float(packet.pts * packet.time_base) - origin
            duration = float((packet.duration or 0) * packet.time_base)
            for sub in decoded:
                text = clean_text(_ass_body(sub))
                if text:
                    track.cues.append(Cue(start, start + (duration or 2.0), text))
    for track in tracks.values():
        track.cues.sort(key=lambda c: (c.start_time, c.end_time))


def _ass_body(sub) -> str:
    """Text field of FFmpeg's decoded ASS event ("ReadOrder,Layer,Style,...,Effect,Text")."""
    raw = bytes(sub.ass).decode("utf-8", "replace")
    if raw.startswith("Dialogue:"):
        raw = raw.split(",", 9)[-1]
        return raw
    return raw.split(",", 8)[-1]
