"""A few frames of a film at given times, read by seeking: the second family's film frames, at question time.

Qwen3-VL reads a film as a few hundred frames at planned times (``llamavid.prompt.qwen_vl.plan_film``:
546 an hour, one every 6.6 s), at a size fixed before any frame is decoded. Those frames are not
kept at index time: the index stores LLaMA-VID's EVA features, not pixels. They are decoded from
the film when a question needs them, one at a time, so never more than one full-size picture is in
memory (the ``frames`` returned are already small: 320x192 by default, 184 KB each).

For each time the decoder seeks to the keyframe before it (unless that time is only a little ahead
of where the decoder stands: decoding on is then cheaper than a seek) and keeps the first frame
shown at or after it, as the indexer's sampling rule does (``llamavid.media.decode``), skipping
non-reference frames as the indexer does. docs/second-family.md has the time an hour's plan takes.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import av
import numpy as np

from llamavid.errors import BadMedia
from llamavid.media.decode import EPS, upright

__all__ = ["SEEK_AFTER", "frames_at"]

#: Seconds ahead of the last decoded frame beyond which a seek is cheaper than decoding on (a
#: film's GOPs are usually 2 to 10 s long; decoding on through under a second never loses).
SEEK_AFTER = 1.0


def frames_at(path: str | Path, times: Sequence[float], size: tuple[int, int] | None = None, rotation: int = 0,
              check: Callable[[], None] | None = None) -> Iterator[tuple[float, np.ndarray]]:
    """(time shown, upright RGB uint8 frame) for each of ``times`` (seconds from the film's start,
    increasing), resized to ``size`` (width, height, after turning upright) when given. A time past
    the last frame repeats the last frame, so the prompt keeps the planned count. ``check`` runs
    before each frame (it raises to stop)."""
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except (av.error.FFmpegError, OSError) as exc:
        raise BadMedia(f"{path}: cannot open the film ({exc}); is the file still there?") from None
    with container:
        if not container.streams.video:
            raise BadMedia(f"{path}: no video stream")
        stream = container.streams.video[0]
        stream.codec_context.skip_frame = "NONREF"
        start = float(container.start_time or 0) / av.time_base if container.start_time is not None else 0.0
        turns = round(rotation / 90) % 2
        shape = None if size is None else ((size[1], size[0]) if turns else size)  # decoder's (w, h) before turning
        frames: Iterator | None = None
        where, last = -1.0, None
        for target in times:
            if check is not None:
                check()
            if frames is None or target > where + SEEK_AFTER:
                container.seek(int((start + max(0.0, float(target))) / stream.time_base), stream=stream, backward=True)
                frames = container.decode(stream)
            found = None
            for frame in frames:
                t = (frame.time if frame.time is not None else start) - start
                where = t
                if t >= target - EPS:
                    found = frame
                    break
            if found is None:  # past the end: the film's last frame stands for the rest
                if last is None:
                    raise BadMedia(f"{path}: no frame could be decoded at {target:.1f} s")
                yield last
                frames = iter(())
                continue
            image = (found.to_ndarray(format="rgb24") if shape is None else
                     found.to_ndarray(width=shape[0], height=shape[1], format="rgb24"))
            last = (where, upright(image, rotation))
            yield last
