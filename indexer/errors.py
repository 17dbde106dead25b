"""Why a movie could not be indexed, as exception types the job runner treats differently.

* ``llamavid.errors.BadMedia`` (raised by probing and decoding): the file itself is unusable (empty,
  truncated, no video, unknown codec). Retrying cannot help, so the job fails at once with the
  message and the rest of the library goes on.
* ``FileChanged``: the file was removed or replaced while it was being indexed. The scan that
  notices it decides what happens next (mark missing, or index the new content).
* ``DiskFull``: the cache or database could not be written. Every later job would fail the same
  way, so the runner stops the queue and says how much space is needed.
* ``Interrupted``: pause/cancel asked for from another process, checked between chunks.
Any other exception is a transient or unexpected failure: kept as the job's last error and retried.
"""
from __future__ import annotations

import errno

DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


class IndexingError(Exception):
    """Base of the failures the indexer explains to the user."""


class FileChanged(IndexingError):
    """The file was removed or replaced during indexing."""


class DiskFull(IndexingError):
    """No space left for the feature cache or the database."""


class Interrupted(IndexingError):
    """The job was paused or cancelled from outside; ``state`` is the requested job state."""

    def __init__(self, state: str):
        super().__init__(f"job {state}")
        self.state = state


def is_disk_full(exc: BaseException) -> bool:
    """True for OSErrors meaning "no space" (ENOSPC, quota, file size limit) and SQLite's "full"."""
    if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
        return True
    return "database or disk is full" in str(exc)
