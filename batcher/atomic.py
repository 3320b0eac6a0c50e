"""Write a file so that a reader never sees half of it and a crash never leaves half of it.

Every file batcher writes whole (manifest, summary, report, outcome tables, the metrics
textfile) goes through `atomic_path`: a temporary file beside the target, created with its mode
before any data goes in (owner-only by default: run folders hold customer identifiers), fsynced,
renamed over the target, and the rename made durable by an fsync of the folder. On any error
the temporary file is removed and the target is left as it was.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

OWNER_ONLY = 0o600


@contextlib.contextmanager
def atomic_path(path: Path, *, mode: int = OWNER_ONLY) -> Iterator[Path]:
    """A temporary path to write in full; on leaving the block it replaces `path`.

    The temporary file exists (empty, with `mode` whatever the umask) when the block starts,
    so writers that open it again (polars' sinks, xlsxwriter) keep that mode.
    """
    # Beside the target (a rename within one file system), hidden, and one per process.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)  # the umask may have taken bits `mode` asks for
    finally:
        os.close(fd)
    try:
        yield tmp
        _fsync(tmp, os.O_RDONLY)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):  # some file systems cannot fsync a folder
        _fsync(path.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))


def write_atomic(path: Path, data: bytes | str, *, mode: int = OWNER_ONLY) -> None:
    """Write `data` (text as UTF-8) to `path` atomically, with `mode`."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_path(path, mode=mode) as tmp:
        tmp.write_bytes(raw)


def _fsync(path: Path, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
