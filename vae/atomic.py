"""Atomic file writes: a reader, or a crash at any moment, sees the old file or the whole new one.

Every file the library and the app write in place (checkpoints, classifiers, job records,
projection and score caches, data caches, downloads) goes through `atomic_path`: the bytes go to
a temporary file in the same folder (`.<name>.<random>.tmp`, a name the job registry's clean-up
knows), which is flushed to disk and then renamed over the target with `os.replace`.

The file's mode is given, never read from the umask: os.umask is process-wide, and changing it
from one thread, even for a moment, would change the mode of any file another thread creates
meanwhile (mkstemp's own mode is 0600).
"""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

SHARED = 0o644  # artefacts every reader may open: checkpoints, caches, scores
PRIVATE = 0o600  # owner only


@contextmanager
def atomic_path(path: str | Path, mode: int = SHARED) -> Iterator[Path]:
    """Yield a temporary path to write the new file to; on a normal exit it gets `mode`, is
    fsynced and replaces `path`; on an exception it is deleted and `path` is left as it was.
    Writers that append a suffix to names they are given (np.savez adds ".npz") should write
    to an open file object instead."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, mode)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # gone already after os.replace


def write_bytes(path: str | Path, data: bytes, mode: int = SHARED) -> Path:
    with atomic_path(path, mode) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_json(path: str | Path, record, mode: int = SHARED, **dumps_kwargs) -> Path:
    """`record` as JSON (json.dumps's keyword arguments pass through: indent, sort_keys)."""
    return write_bytes(path, json.dumps(record, **dumps_kwargs).encode(), mode)


def write_npz(path: str | Path, arrays: dict, mode: int = SHARED) -> Path:
    """np.savez of `arrays` (through a file object: np.savez adds ".npz" to names it is given)."""
    import numpy as np  # here, not at the top: the module's other writers need no numpy

    with atomic_path(path, mode) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)
    return Path(path)


__all__ = ["PRIVATE", "SHARED", "atomic_path", "write_bytes", "write_json", "write_npz"]
