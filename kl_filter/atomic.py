"""Atomic output: write to a temporary name beside the target, fsync, then rename.

A reader never sees a half-written file: either the old file (or nothing) or the complete new one.
Works for local paths and for fsspec URLs (remote filesystems write the temp object, then ``mv``).
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from typing import IO, Iterator

import fsspec
from fsspec.implementations.local import LocalFileSystem

from .errors import KLFilterError


def _tmp_name(path: str) -> str:
    head, tail = os.path.split(path)
    return os.path.join(head, f".{tail}.{uuid.uuid4().hex[:8]}.tmp")


def makedirs(path: str) -> None:
    """Create the output directory ``path`` (a local path or fsspec URL) and its parents, if missing."""
    try:
        fs, p = fsspec.core.url_to_fs(path)
    except (ValueError, ImportError) as e:
        raise KLFilterError(f"cannot open output directory ({e})", path) from e
    _makedirs(fs, p)


def _makedirs(fs, p: str) -> None:
    try:
        fs.makedirs(p, exist_ok=True)
    except OSError as e:
        raise KLFilterError(f"cannot create output directory ({e.strerror or e})", p) from e


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "wb") -> Iterator[IO]:
    """Open ``path`` for writing; on clean exit the content appears at ``path`` all at once."""
    fs, p = fsspec.core.url_to_fs(path)
    parent = os.path.dirname(p)
    if parent:
        _makedirs(fs, parent)
    tmp = _tmp_name(p)
    try:
        f = fs.open(tmp, mode)
    except OSError as e:
        raise KLFilterError(f"output not writable ({e.strerror or e})", path) from e
    try:
        with f:
            yield f
            if hasattr(f, "flush"):
                f.flush()
            if isinstance(fs, LocalFileSystem):
                os.fsync(f.fileno())
        fs.mv(tmp, p)
    except BaseException as e:
        with contextlib.suppress(Exception):
            fs.rm(tmp)
        if isinstance(e, OSError):
            raise KLFilterError(f"write failed ({e.strerror or e}); nothing was written", path) from e
        raise


def write_bytes(path: str, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def write_json(path: str, obj) -> None:
    write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n").encode())


def _json_default(o):
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
