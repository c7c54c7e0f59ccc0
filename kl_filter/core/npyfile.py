"""NumPy files read defensively: ``.npy`` and ``.npz`` whose headers are checked before any data is read.

A file may not be what it claims: zero bytes, an ``.npz`` where a ``.npy`` belongs, a header promising a
petabyte shape, a zip member that inflates far beyond its size (a deflate bomb), a structured, complex or
object dtype, a FIFO that would block the reader forever. Everything here reads the npy header first
(``numpy.lib.format``; inside a zip member, only the first bytes of the member are inflated), lets the caller
check the shape and dtype against what it expects, checks that the header's byte count equals what the file
(or the zip directory's uncompressed size) holds, and only then reads exactly that many bytes. The CRC-32 of a
member is verified by :mod:`zipfile` when its last byte is read.

Errors are :class:`ValueError` with a one-line reason (callers wrap them into
:class:`~kl_filter.core.errors.KLFilterError` with the file's name), except :func:`check_regular_file`, which raises
:class:`~kl_filter.core.errors.KLFilterError` itself.
"""

from __future__ import annotations

import os
import stat
import zipfile
from dataclasses import dataclass

import numpy as np
import numpy.lib.format as npformat

from kl_filter.core.errors import KLFilterError

ZIP_MAGIC = b"PK\x03\x04"
NPY_MAGIC = b"\x93NUMPY"
# Bytes per read when copying a member's data: a chunk stays in L2 while zipfile's CRC and the copy into the
# array pass over it (16 MiB chunks went through memory three times: 22 ms for an 11.5 MB member, 6 ms at 1 MiB)
_CHUNK = 1 << 20
MAX_DEFLATE_RATIO = 1100  # deflate inflates at most ~1032x; a zip directory claiming more is lying


# ---- what a path is ----------------------------------------------------------------------------------------
def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


def local_file_problem(path: str) -> str | None:
    """Why a local ``path`` cannot be read as a regular file (dangling symlink, FIFO, directory, ...), or None.

    Never opens the file: opening a FIFO blocks until a writer appears."""
    try:
        st = os.stat(path)  # follows symlinks
    except FileNotFoundError:
        if os.path.islink(path):
            return f"dangling symlink (points to {os.readlink(path)!r}, which does not exist)"
        return "no such file"
    except OSError as e:
        return f"cannot stat ({e.strerror or e})"
    if not stat.S_ISREG(st.st_mode):
        return f"is {_kind(st.st_mode)}, not a regular file"
    return None


def check_regular_file(fs, path: str, what: str = "file") -> int:
    """The size of ``path`` on filesystem ``fs`` (fsspec); a one-line error when it is missing, a dangling
    symlink, a FIFO, a device or a directory (local paths are checked with ``stat``, never opened)."""
    from fsspec.implementations.local import LocalFileSystem

    if isinstance(fs, LocalFileSystem):
        problem = local_file_problem(path)
        if problem:
            raise KLFilterError(f"no such {what}" if problem == "no such file" else problem, path)
        return os.stat(path).st_size
    try:
        info = fs.info(path)
    except FileNotFoundError as e:
        raise KLFilterError(f"no such {what}", path) from e
    except OSError as e:
        raise KLFilterError(f"cannot read ({e})", path) from e
    if info.get("type") == "directory":
        raise KLFilterError("is a directory, not a regular file", path)
    return int(info.get("size") or 0)


# ---- npy headers -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NpyHeader:
    shape: tuple
    dtype: np.dtype
    fortran: bool
    offset: int  # bytes before the data (magic + header)

    @property
    def nbytes(self) -> int:
        n = 1
        for s in self.shape:
            n *= int(s)
        return n * self.dtype.itemsize


def read_header(f) -> NpyHeader:
    """The npy header at the current position of ``f`` (reads only the header). ValueError if there is none."""
    start = f.tell() if hasattr(f, "tell") else 0
    head = f.read(len(NPY_MAGIC))
    if head[:4] == ZIP_MAGIC:
        raise ValueError("is an .npz (zip) archive, not an .npy array")
    if len(head) < len(NPY_MAGIC) or head != NPY_MAGIC:
        raise ValueError("not an .npy array (no NumPy magic bytes)" if head else "empty (0 bytes)")
    major = f.read(2)
    if len(major) < 2:
        raise ValueError("truncated npy header")
    if major[0] == 1:
        shape, fortran, dtype = npformat.read_array_header_1_0(f)
    elif major[0] in (2, 3):
        shape, fortran, dtype = npformat.read_array_header_2_0(f)
    else:
        raise ValueError(f"unknown npy format version {major[0]}.{major[1]}")
    offset = (f.tell() - start) if hasattr(f, "tell") else None
    if any(int(s) < 0 for s in shape):
        raise ValueError(f"header has a negative shape {shape}")
    return NpyHeader(tuple(int(s) for s in shape), np.dtype(dtype), bool(fortran), offset)


def check_plain_dtype(h: NpyHeader, kinds: str = "biuf", allowed=()) -> None:
    """ValueError unless the dtype is a plain number of one of ``kinds`` (or exactly one of ``allowed``):
    object (pickled), structured, complex, string and subarray dtypes are refused."""
    dt = h.dtype
    if any(dt == np.dtype(a) for a in allowed):
        return
    if dt.hasobject:
        raise ValueError(f"dtype {dt} holds Python objects (pickle), refused")
    if dt.names is not None or dt.subdtype is not None or dt.kind not in kinds:
        raise ValueError(f"dtype {dt} is not a plain {_kinds_words(kinds)} type")


def _kinds_words(kinds: str) -> str:
    words = {"b": "bool", "i": "integer", "u": "unsigned", "f": "float", "U": "string"}
    return "/".join(words.get(k, k) for k in kinds)


def _read_into(f, h: NpyHeader) -> np.ndarray:
    """Exactly ``h.nbytes`` bytes from ``f`` into a new writable array (ValueError when the file ends early)."""
    arr = np.empty(h.shape, dtype=h.dtype, order="F" if h.fortran else "C")
    flat = arr.ravel(order="K").view(np.uint8) if arr.size else np.zeros(0, np.uint8)
    pos, n = 0, h.nbytes
    while pos < n:
        chunk = f.read(min(_CHUNK, n - pos))
        if not chunk:
            raise ValueError(f"truncated: the header promises {n} bytes of data, the file ends after {pos}")
        flat[pos: pos + len(chunk)] = np.frombuffer(chunk, np.uint8)
        pos += len(chunk)
    return arr


# ---- .npy files ----------------------------------------------------------------------------------------------
def load_npy(f, size: int, check=None) -> np.ndarray:
    """A whole ``.npy`` from the binary file ``f`` of ``size`` bytes. ``check(header)`` may raise before any data
    is read. The header's byte count must equal what the file holds."""
    if size == 0:
        raise ValueError("empty file (0 bytes)")
    h = read_header(f)
    if check is not None:
        check(h)
    if h.offset is not None and h.offset + h.nbytes != size:
        raise ValueError(f"header claims shape {h.shape} of {h.dtype} ({h.nbytes:,} bytes) but the file holds "
                         f"{size - h.offset:,} bytes of data")
    return _read_into(f, h)


# ---- .npz archives --------------------------------------------------------------------------------------------
class NpzReader:
    """The members of an ``.npz`` (``zipfile`` on an open binary file), header first.

    ``header(key)`` inflates only the member's first bytes; ``read(key, header)`` reads exactly the bytes the
    header promises after checking that the zip directory records that many (so a member can never inflate to
    more than its header, already checked by the caller, says)."""

    def __init__(self, f, size: int | None = None):
        if size == 0:
            raise ValueError("empty file (0 bytes)")
        head = f.read(4)
        f.seek(0)
        if head[:2] != b"PK":
            raise ValueError("not an .npz (zip) archive" + (" but an .npy array" if head[:4] == NPY_MAGIC[:4] else ""))
        self.zip = zipfile.ZipFile(f)
        self.infos = {i.filename[: -len(".npy")] if i.filename.endswith(".npy") else i.filename: i
                      for i in self.zip.infolist()}
        self._headers: dict = {}

    @property
    def files(self) -> list[str]:
        return list(self.infos)

    def __contains__(self, key: str) -> bool:
        return key in self.infos

    def header(self, key: str) -> NpyHeader:
        if key not in self._headers:
            info = self.infos[key]
            if info.file_size > MAX_DEFLATE_RATIO * info.compress_size + (1 << 16):
                raise ValueError(f"member {key!r} claims to inflate {info.compress_size:,} bytes to {info.file_size:,}, "
                                 "more than deflate can (a zip bomb?)")
            with self.zip.open(info) as m:
                try:
                    self._headers[key] = read_header(m)
                except ValueError as e:
                    raise ValueError(f"member {key!r}: {e}") from e
        return self._headers[key]

    def read(self, key: str, check=None) -> np.ndarray:
        """The member ``key``; ``check(header)`` runs before any data is inflated, then the header's byte count is
        compared with the zip directory's."""
        h = self.header(key)
        if check is not None:
            check(h)
        info = self.infos[key]
        if h.offset + h.nbytes != info.file_size:
            raise ValueError(f"member {key!r}: header claims shape {h.shape} of {h.dtype} ({h.nbytes:,} bytes) "
                             f"but the zip directory records {max(0, info.file_size - h.offset):,}")
        with self.zip.open(info) as m:
            read_header(m)
            return _read_into(m, h)

    def content_id(self, key: str) -> tuple[int, int]:
        """(CRC-32, uncompressed size) of member ``key`` from the zip directory: what :meth:`read` verifies."""
        info = self.infos[key]
        return info.CRC, info.file_size

    def close(self) -> None:
        self.zip.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_errors() -> tuple:
    """Exceptions that mean "this file is not what it claims" while reading npy/npz data."""
    import zlib

    return (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error, MemoryError,
            zipfile.LargeZipFile, NotImplementedError)
