"""EVA features of sampled frames, written chunk by chunk to one memory-mappable ``.npy`` per movie.

File protocol (what makes a kill -9 harmless):

1. ``<id>-<fingerprint>.npy.partial`` is created with its full estimated size, fp16, shape
   ``(capacity, 1 + N, C)``; the blocks are reserved with ``posix_fallocate`` so a full disk shows
   up here as an error, not later as a SIGBUS inside the memory map.
2. After each chunk the map is flushed (msync) and only then the number of completed frames is
   committed to SQLite, in the same transaction as their times. A restart resumes from that count;
   rows after it may hold garbage from the killed run and are overwritten.
3. At the end the header is rewritten in place with the real frame count, the file truncated,
   fsync'ed and atomically renamed to ``.npy``. Readers only open the final name, and only when the
   database says the cache is complete, so a partial file is never taken for a complete one.

Each chunk is one EVA batch, so a resumed run sees exactly the batches of an uninterrupted one and
produces bit-identical features.
"""
from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np

from indexer.errors import DiskFull, is_disk_full
from llamavid import storage

DTYPE = np.dtype("<f2")
PARTIAL_SUFFIX = ".partial"


def _read_header(fh) -> tuple[tuple[int, int], tuple, np.dtype, int]:
    """(version, shape, dtype, data offset) of an open .npy file."""
    fh.seek(0)
    version = np.lib.format.read_magic(fh)
    reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, _fortran, dtype = reader(fh)
    return version, shape, dtype, fh.tell()


def _write_header(fh, version: tuple[int, int], shape: tuple, dtype: np.dtype, offset: int) -> None:
    """Rewrite the header for a new shape, padded to the same data offset (the data does not move).

    numpy leaves room in every header for the first axis to grow to 21 digits, so this always fits.
    """
    text = f"{{'descr': {dtype.str!r}, 'fortran_order': False, 'shape': {tuple(shape)!r}, }}"
    preamble = 6 + 2 + (2 if version[0] == 1 else 4)
    room = offset - preamble - 1
    if len(text) > room:
        raise ValueError(f"npy header for shape {shape} does not fit in {room} bytes")
    header = (text + " " * (room - len(text)) + "\n").encode("latin1")
    fh.seek(0)
    fh.write(np.lib.format.magic(*version))
    fh.write(len(header).to_bytes(2 if version[0] == 1 else 4, "little"))
    fh.write(header)


def _reserve(path: Path, size: int) -> None:
    """Allocate the file's blocks now; ENOSPC here is a clean error, in a mmap write a SIGBUS."""
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
    finally:
        os.close(fd)


def check_free_space(folder: Path, needed: int) -> None:
    storage.check_free_space(folder, needed, "the feature cache", "free some space (or move the data folder with "
                             "--data-dir) and run `llamavid index retry`", DiskFull)


class FeatureWriter:
    """The ``.partial`` file of one movie, opened for writing rows ``[0, capacity)``."""

    def __init__(self, final: Path, row_shape: tuple[int, int]):
        self.final = Path(final)
        self.partial = self.final.with_name(self.final.name + PARTIAL_SUFFIX)
        self.row_shape = tuple(row_shape)
        self.array: np.memmap | None = None

    @property
    def capacity(self) -> int:
        return 0 if self.array is None else self.array.shape[0]

    def row_bytes(self) -> int:
        return int(np.prod(self.row_shape)) * DTYPE.itemsize

    def create(self, capacity: int) -> FeatureWriter:
        """Start a new partial file (any older one is discarded)."""
        self.final.parent.mkdir(parents=True, exist_ok=True)
        check_free_space(self.final.parent, capacity * self.row_bytes())
        try:
            self.array = np.lib.format.open_memmap(self.partial, mode="w+", dtype=DTYPE,
                                                   shape=(capacity, *self.row_shape))
            _reserve(self.partial, self.array.offset + self.array.nbytes)
        except OSError as exc:
            self.discard()
            if is_disk_full(exc):
                raise DiskFull(f"no space for the feature cache in {self.final.parent}: {exc.strerror}; "
                               "free some space and run `llamavid index retry`") from exc
            raise
        return self

    def resume(self) -> bool:
        """Reopen an existing partial file; False if there is none or it does not fit."""
        if not self.partial.is_file():
            return False
        try:
            array = np.lib.format.open_memmap(self.partial, mode="r+")
        except (OSError, ValueError):
            return False
        if array.dtype != DTYPE or tuple(array.shape[1:]) != self.row_shape:
            return False
        self.array = array
        return True

    def write(self, start: int, rows: np.ndarray) -> None:
        if start + len(rows) > self.capacity:
            self.grow(max(start + len(rows), int(self.capacity * 1.25) + 16))
        self.array[start:start + len(rows)] = rows

    def flush(self) -> None:
        """Make the written rows durable before their count is committed to the database."""
        if self.array is not None:
            self.array.flush()

    def _reshape_file(self, rows: int) -> None:
        """Close the map, rewrite the header for ``rows`` rows and resize the file to match."""
        self.flush()
        self.array = None
        with open(self.partial, "r+b") as fh:
            version, _shape, dtype, offset = _read_header(fh)
            _write_header(fh, version, (rows, *self.row_shape), dtype, offset)
            fh.truncate(offset + rows * self.row_bytes())
            fh.flush()
            os.fsync(fh.fileno())

    def grow(self, rows: int) -> None:
        """More frames than the probe promised (wrong duration): enlarge the file in place."""
        check_free_space(self.final.parent, (rows - self.capacity) * self.row_bytes())
        self._reshape_file(rows)
        self.array = np.lib.format.open_memmap(self.partial, mode="r+")

    def finalize(self, rows: int) -> Path:
        """Shrink to the real frame count and publish the file under its final name, atomically."""
        self._reshape_file(rows)
        os.replace(self.partial, self.final)
        storage.fsync_dir(self.final.parent)
        return self.final

    def discard(self) -> None:
        self.array = None
        self.partial.unlink(missing_ok=True)

    def close(self) -> None:
        self.flush()
        self.array = None
