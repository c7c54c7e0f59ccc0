"""Atomic output: write to a temporary name beside the target, fsync, then rename.

A reader never sees a half-written file: either the old file (or nothing) or the complete new one.
Works for local paths and for fsspec URLs (remote filesystems write the temp object, then ``mv``).

Temporary names are ``.<name>.<host>-<pid>-<random>.tmp`` beside the target. A run killed while writing leaves
its temp file; the next write of the same target removes every such leftover whose process is gone (same host,
pid not running) or, for another host's, that is older than a day. Several files that belong together (a UID
file and its sidecar) are written by :func:`write_files`: every temp file first, then the renames, in the
order given, under a lock of the directory, so two runs writing the same pair cannot interleave.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import socket
import time
import uuid
from typing import IO, Iterator

from fsspec.implementations.local import LocalFileSystem

from kl_filter.core.errors import KLFilterError
from kl_filter.core.fspath import url_to_fs

_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]
_TMP_TAIL = re.compile(r"^\.(?P<name>.+)\.(?:(?P<host>[0-9a-f]{6})-(?P<pid>\d+)-)?[0-9a-f]{6,8}\.tmp$")
STALE_OTHER_HOST_S = 24 * 3600


def tmp_name(path: str) -> str:
    """A temporary name beside ``path`` that names this process (so a later run can tell a leftover)."""
    head, tail = os.path.split(path)
    return os.path.join(head, f".{tail}.{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:6]}.tmp")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_stale_tmp(dirpath: str, entry: str, target: str | None = None) -> bool:
    """Is ``entry`` (a name in local directory ``dirpath``) a temp file or directory left by a dead writer
    (of ``target``'s name, when given)?"""
    m = _TMP_TAIL.match(entry)
    if m is None or (target is not None and m.group("name") != target):
        return False
    if m.group("host") == _HOST:
        return not _alive(int(m.group("pid")))
    try:  # another host's (shared storage) or an older version's name: only when clearly abandoned
        return time.time() - os.lstat(os.path.join(dirpath, entry)).st_mtime > STALE_OTHER_HOST_S
    except OSError:
        return False


def clean_stale_tmp(dirpath: str, target: str | None = None) -> list[str]:
    """Remove the leftovers of killed writers in local directory ``dirpath`` (of ``target`` only, when given);
    returns what was removed."""
    import shutil

    removed = []
    try:
        names = os.listdir(dirpath)
    except OSError:
        return removed
    for n in names:
        if n.endswith(".tmp") and n.startswith(".") and is_stale_tmp(dirpath, n, target):
            p = os.path.join(dirpath, n)
            with contextlib.suppress(OSError):
                if os.path.isdir(p) and not os.path.islink(p):
                    shutil.rmtree(p)
                else:
                    os.remove(p)
                removed.append(p)
    return removed


def makedirs(path: str) -> None:
    """Create the output directory ``path`` (a local path or fsspec URL) and its parents, if missing."""
    fs, p = url_to_fs(path)
    _makedirs(fs, p)


def _makedirs(fs, p: str) -> None:
    try:
        fs.makedirs(p, exist_ok=True)
    except (OSError, FileExistsError) as e:
        raise KLFilterError(f"cannot create output directory ({getattr(e, 'strerror', None) or e})", p) from e


def _prepare(fs, p: str) -> str:
    """Create the parent directory, remove dead writers' leftovers of ``p``; the temp name to write."""
    parent = os.path.dirname(p)
    if parent:
        _makedirs(fs, parent)
        if isinstance(fs, LocalFileSystem):
            clean_stale_tmp(parent, os.path.basename(p))
    return tmp_name(p)


@contextlib.contextmanager
def _open_tmp(fs, p: str, path: str, mode: str = "wb", sync: bool = True) -> Iterator[tuple[IO, str]]:
    """A complete temp file beside ``p``, synced unless ``sync`` is false (removed again when the body fails)."""
    tmp = _prepare(fs, p)
    try:
        f = fs.open(tmp, mode)
    except OSError as e:
        raise KLFilterError(f"output not writable ({e.strerror or e})", path) from e
    try:
        with f:
            yield f, tmp
            if hasattr(f, "flush"):
                f.flush()
            if sync and isinstance(fs, LocalFileSystem):
                os.fsync(f.fileno())
    except BaseException as e:
        _discard(fs, tmp, path, e)


def _discard(fs, tmp: str, path: str, e: BaseException):
    """Remove a failed write's temp file and re-raise (an OSError as one line naming ``path``)."""
    with contextlib.suppress(Exception):
        fs.rm(tmp)
    if isinstance(e, OSError):
        raise KLFilterError(f"write failed ({e.strerror or e}); nothing was written", path) from e
    raise e


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "wb", sync: bool = True) -> Iterator[IO]:
    """Open ``path`` for writing; on clean exit the content appears at ``path`` all at once. ``sync=False`` skips
    the fsync, for scratch files no later run reads (a temporary work directory removed at the end)."""
    fs, p = url_to_fs(path)
    with _open_tmp(fs, p, path, mode, sync) as (f, tmp):
        yield f
    try:
        _rename(fs, tmp, p)
    except BaseException as e:
        _discard(fs, tmp, path, e)


def _rename(fs, tmp: str, p: str) -> None:
    """Move the complete temp file onto ``p``. Locally ``os.replace``: atomic, and it refuses a directory that
    appeared at ``p`` (fsspec's local ``mv`` is ``shutil.move``, which would move the file INTO it, hidden under
    its temp name)."""
    if isinstance(fs, LocalFileSystem):
        os.replace(tmp, p)
    else:
        fs.mv(tmp, p)


def write_bytes(path: str, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def write_json(path: str, obj) -> None:
    write_bytes(path, json_bytes(obj))


def json_bytes(obj) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n").encode()


@contextlib.contextmanager
def _dir_lock(fs, parent: str):
    """An exclusive lock of a local directory (flock on its descriptor); no lock for remote storage."""
    if not isinstance(fs, LocalFileSystem) or not parent:
        yield
        return
    import fcntl

    fd = os.open(parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


@contextlib.contextmanager
def exclusive(lock_path: str, what: str):
    """Hold an exclusive lock on the local file ``lock_path`` (created if missing; flock) for the body: a second
    process asking for the same lock waits (saying so once, naming ``what``) until the first leaves. The file
    is removed on leaving, while still held; a waiter that then holds a lock on the removed file sees that its
    inode is no longer at ``lock_path`` and locks the new one, so two holders never overlap."""
    import fcntl
    import logging

    while True:
        os.makedirs(os.path.dirname(lock_path) or ".", exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                logging.getLogger(__name__).warning("%s: another run holds %s; waiting for it to finish",
                                                    lock_path, what)
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError as e:  # a filesystem without locks (some network mounts)
                raise KLFilterError(f"cannot lock {what} ({e.strerror or e}); use a local --scores_dir",
                                    lock_path) from e
            held = os.fstat(fd)
            try:
                now = os.stat(lock_path)
            except FileNotFoundError:
                now = None
        except BaseException:
            os.close(fd)
            raise
        if now is not None and (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino):
            break
        os.close(fd)  # the previous holder removed it as it left: lock the file now at lock_path
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.remove(lock_path)
        os.close(fd)


def write_files(items: list[tuple[str, bytes]]) -> None:
    """Write several files as one output: every file to its temp name first (a failure, e.g. a full disk,
    removes them all and replaces nothing), then the renames in the order given, under a lock of the first
    file's directory. Put last the file whose presence says the others are complete."""
    done: list[tuple[object, str, str]] = []
    try:
        for path, data in items:
            fs, p = url_to_fs(path)
            with _open_tmp(fs, p, path) as (f, tmp):
                f.write(data)
            done.append((fs, tmp, p))
    except BaseException:
        for fs, tmp, _ in done:
            with contextlib.suppress(Exception):
                fs.rm(tmp)
        raise
    fs0, _, p0 = done[0]
    with _dir_lock(fs0, os.path.dirname(p0)):
        for i, (fs, tmp, p) in enumerate(done):
            try:
                _rename(fs, tmp, p)
            except OSError as e:
                for fs_, tmp_, _ in done[i:]:
                    with contextlib.suppress(Exception):
                        fs_.rm(tmp_)
                moved = ", ".join(q for _, _, q in done[:i])
                raise KLFilterError(f"rename failed ({e.strerror or e}); "
                                    + (f"already replaced: {moved}" if moved else "nothing was written"), p) from e


def _json_default(o):
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
