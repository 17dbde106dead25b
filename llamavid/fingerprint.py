"""Fast content fingerprints: recognise a film (or a checkpoint's weights) after a rename or move
without reading it all.

Hashing a whole film (several GB) would make every scan as slow as copying the library.
Size plus three 64 KiB samples (start, middle, end) tells files apart in practice: two
different encodes differ in the container header at the start, and a re-mux or an edit changes
the size. A file whose size and mtime are unchanged is not even opened (see scan.py).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

SAMPLE_BYTES = 64 * 1024


def fingerprint(path: str | Path, sample_bytes: int = SAMPLE_BYTES) -> str:
    """Hex digest of the size and the first, middle and last ``sample_bytes`` of the file."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        digest.update(size.to_bytes(8, "little"))
        if size <= 3 * sample_bytes:  # small file: the samples would overlap, read it whole
            digest.update(handle.read())
            return digest.hexdigest()
        for offset in (0, size // 2 - sample_bytes // 2, size - sample_bytes):
            handle.seek(offset)
            digest.update(handle.read(sample_bytes))
    return digest.hexdigest()
