"""A DataComp metadata pool: ``<shard>.parquet`` + ``<shard>.npz`` pairs in one directory (docs/formats.md#the-pool).

The directory may be a local path or any fsspec URL. Shards are listed once, sorted by name (so the order is
deterministic), and read one at a time, only the parquet columns and npz keys that a caller asks for.
Embeddings stay float16 as stored; callers convert when they compute.

Record shape handed to filters (``ShardData``)::

    name: "00000012"   index: 12   num_rows: n
    columns: {"uid": pa.StringArray[n], "text": ..., "clip_b32_similarity_score": np.float32[n], ...}
    embeddings: {"l14_txt": np.float16[n, 768], ...}
    scores: {"kl_l14_txt": np.float32[n], ...}   (derived columns, filled in by the runner)
    uids: np.ndarray[n] of dtype u8,u8   (always present, parsed from the uid column)

``shard[name]`` looks a name up in the parquet columns, the npz keys and the derived scores, in that order.

Every column is read into its canonical type by :mod:`kl_filter.pool.schema` (uid: 32 lowercase hex digits,
scores: float32, sizes: int64, captions: str with nulls and undecodable bytes read as ``""`` and counted in
``ShardData.counts``); npz members are checked from their npy headers (shape against the parquet's row count
and the family's width, a plain float dtype) before any byte is inflated, and stored as float16.

Discovery lists the directory once and refuses, before opening anything, a ``.parquet`` or ``.npz`` entry that
is a dangling symlink, a FIFO, a socket, a device or a directory (opening a FIFO blocks forever).

The pool's fingerprint (:attr:`Pool.fingerprint`) identifies its content cheaply: see its docstring for what a
change must touch to be detected.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import logging
import os
import struct
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from kl_filter.core.errors import KLFilterError
from kl_filter.core.npyfile import NpzReader, check_plain_dtype, local_file_problem, read_errors
from kl_filter.core.half import to_float32
from kl_filter.pool import schema
from kl_filter.pool.paths import child_path, open_dir

log = logging.getLogger(__name__)

# Embedding width of each npz key family; "dedup" is not fixed (about 256).
EMBED_DIMS = {"b32": 512, "l14": 768}
NORM_TOLERANCE = 0.02  # |‖x‖ − 1| allowed for float16 unit vectors (float16 rounding is ~1e-3)
MAX_OTHER_WIDTH = 16384  # widest embedding accepted for a family of unknown width ("dedup" is about 256)
FINGERPRINT_SAMPLES = {"parquet": 4, "npz": 8}  # 4 KiB samples of each file's bytes in the fingerprint
_SAMPLE_BYTES = 4096
_IO_THREADS = 16  # concurrent small reads for the fingerprint (remote stores answer each one slowly)


@dataclass(frozen=True)
class Shard:
    name: str
    index: int
    parquet: str
    npz: str | None


@dataclass
class ShardData:
    shard: Shard
    num_rows: int
    uids: np.ndarray
    columns: dict = field(default_factory=dict)
    embeddings: dict = field(default_factory=dict)
    scores: dict = field(default_factory=dict)
    counts: dict = field(default_factory=dict)  # values read under a policy: {"text": {"null": n, "undecodable": m}}

    def __getitem__(self, name: str):
        """A parquet column (NumPy for numbers, a pyarrow array for strings), an npz key or a derived score."""
        for source in (self.columns, self.embeddings, self.scores):
            if name in source:
                return source[name]
        raise KLFilterError(f"{name!r} was not read: declare it in the plugin's columns, keys or scorers",
                            self.shard.parquet)

    @property
    def name(self) -> str:
        return self.shard.name

    def column(self, name: str) -> np.ndarray:
        """A parquet column as NumPy (strings become an object array)."""
        col = self.columns[name]
        return col.to_numpy(zero_copy_only=False) if isinstance(col, (pa.Array, pa.ChunkedArray)) else col


class Pool:
    """The shards of one metadata directory, in sorted order."""

    def __init__(self, metadata_dir: str):
        self.metadata_dir = metadata_dir
        self.fs, self.root = open_dir(metadata_dir, "metadata directory")
        self.shards = self._discover()
        self._checked: set = set()  # npz members whose rows passed check_unit_rows: (path, key, CRC-32, size)
        if not self.shards:
            raise KLFilterError("empty pool: no .parquet shards found", metadata_dir)

    def _discover(self) -> list[Shard]:
        from fsspec.implementations.local import LocalFileSystem

        local = isinstance(self.fs, LocalFileSystem)
        try:
            entries = self.fs.ls(self.root, detail=not local)
        except OSError as e:
            raise KLFilterError(f"cannot list the metadata directory ({e.strerror or e})", self.metadata_dir) from e
        if local:
            names, dirs = [os.path.basename(p.rstrip("/")) for p in entries], set()
        else:
            names = [os.path.basename(e["name"].rstrip("/")) for e in entries]
            dirs = {os.path.basename(e["name"].rstrip("/")) for e in entries if e.get("type") == "directory"}
        names = sorted(n for n in names if not n.startswith(".") and n.endswith((".parquet", ".npz")))
        # Refuse pool files that are not regular files before anything opens them: a FIFO would block forever,
        # a dangling symlink would pass unnoticed by filters that never read the npz.
        for n in names:
            problem = local_file_problem(self._url(n)) if local else (
                "is a directory, not a regular file" if n in dirs else None)
            if problem:
                raise KLFilterError(problem, self._url(n))
        stems = sorted(n[: -len(".parquet")] for n in names if n.endswith(".parquet"))
        npzs = {n[: -len(".npz")] for n in names if n.endswith(".npz")}
        return [
            Shard(stem, i, self._url(stem + ".parquet"), self._url(stem + ".npz") if stem in npzs else None)
            for i, stem in enumerate(stems)
        ]

    def _url(self, name: str) -> str:
        return child_path(self.fs, self.root, name)

    def __len__(self) -> int:
        return len(self.shards)

    def __iter__(self):
        return iter(self.shards)

    # ---- cheap facts from file metadata --------------------------------------------------------------------
    def num_rows(self, shard: Shard) -> int:
        try:
            with self.fs.open(shard.parquet, "rb") as f:
                return pq.ParquetFile(f).metadata.num_rows
        except (pa.ArrowException, OSError) as e:
            raise KLFilterError(f"unreadable parquet ({_short(e)})", shard.parquet) from e

    @cached_property
    def row_counts(self) -> list[int]:
        return [self.num_rows(s) for s in self.shards]

    @cached_property
    def fingerprint(self) -> str:
        """Identity of the pool's content, read cheaply (a few KiB per file, never a whole file).

        Per shard: its name and row count; the parquet's size, its footer (schema, key-value metadata, the offset,
        size and min/max/null-count statistics of every column chunk) and 4 samples of 4 KiB of its bytes; the
        npz's size, its zip central directory (name, sizes and the CRC-32 of the full uncompressed content of
        every member) and 8 samples of 4 KiB. So any rewrite of an npz member with other values is detected (up
        to a CRC-32 collision), and so is a parquet rewrite that changes a size, a statistic, the schema or a
        sampled byte. Not detected: a parquet rewritten to exactly the same size, footer and sampled bytes (e.g.
        two captions of equal length swapped inside one page, with the same column minimum and maximum), or
        bytes edited in place without updating the zip's CRC-32 (reading such a member fails its CRC check).
        A pure function of the files' bytes: the same for every engine, worker count and machine.
        Two pools with the same fingerprint are treated as the same pool by statistics, scores and resume.
        """
        with cf.ThreadPoolExecutor(max(1, min(_IO_THREADS, len(self.shards)))) as ex:
            parts = list(ex.map(self._shard_identity, self.shards, self.row_counts))
        h = hashlib.sha256()
        for part in parts:
            h.update(json.dumps(part).encode())
        return h.hexdigest()[:16]

    @cached_property
    def temperatures(self) -> dict:
        """``{family: entry}`` of the pool's ``embeddings.json``, validated ({} without one): the embedding models'
        recorded temperatures (:mod:`kl_filter.pool.temperature`)."""
        from kl_filter.pool.temperature import MANIFEST, read_manifest

        return read_manifest(self.fs, self._url(MANIFEST))

    def _shard_identity(self, shard: Shard, rows: int) -> list:
        out = [shard.name, rows]
        for path, kind in ((shard.parquet, "parquet"), (shard.npz, "npz")):
            if path is None:
                out += [-1, None]
                continue
            try:
                size = int(self.fs.size(path))
                out += [size, _content_digest(self.fs, path, size, kind)]
            except (OSError, ValueError) as e:
                raise KLFilterError(f"unreadable {kind} ({_short(e)})", path) from e
        return out

    def __getstate__(self):
        # workers (forked processes, Ray tasks) get the fingerprint and row counts computed once, here; not the
        # checked members (a set as large as the pool's shards, in every task: each process keeps its own)
        self.fingerprint  # noqa: B018
        return {k: v for k, v in self.__dict__.items() if k != "_checked"}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._checked = set()

    # ---- reading ---------------------------------------------------------------------------------------------
    def read(self, shard: Shard, columns=(), keys=(), check_embeddings: bool = True) -> ShardData:
        """Read one shard: the requested parquet columns (uid always) in their canonical types
        (:mod:`kl_filter.pool.schema`) and npz keys, validated."""
        cols = ["uid"] + [c for c in dict.fromkeys(columns) if c != "uid"]
        try:
            with self.fs.open(shard.parquet, "rb") as f:
                pf = pq.ParquetFile(f)
                schema.check_columns(pf.schema_arrow, cols, shard.parquet)
                table = pf.read(columns=cols)
        except KLFilterError:
            raise
        except (pa.ArrowException, OSError) as e:
            raise KLFilterError(f"unreadable parquet ({_short(e)})", shard.parquet) from e
        except KeyError as e:
            raise KLFilterError(f"missing column {e}", shard.parquet) from e
        n = table.num_rows
        uids, uid_column = schema.read_uids(table.column("uid"), shard.parquet)
        data = ShardData(shard, n, uids)
        for c in cols[1:]:
            data.columns[c], counts = schema.normalise(c, table.column(c), shard.parquet)
            if any(counts.values()):
                data.counts[c] = counts
                log.warning("%s: column %r: %d null and %d undecodable (invalid UTF-8) values of %d read as empty "
                            "strings", shard.parquet, c, counts["null"], counts["undecodable"], n)
        data.columns["uid"] = uid_column
        if keys:
            data.embeddings = self.read_embeddings(shard, keys, n, check=check_embeddings)
        return data

    def read_embeddings(self, shard: Shard, keys, num_rows: int, check: bool = True) -> dict:
        """The npz keys, float16 ``(num_rows, width)`` each. Each member's npy header is checked (shape against the
        parquet's row count and the family's width, a plain float dtype) before any of its data is inflated; the
        rows of a known family are checked finite and of unit norm (:func:`check_unit_rows`) once per member
        content: a later read of a member with the same CRC-32 and size (zipfile verifies the CRC of every byte
        read) skips the check (a bucket scorer reads its rows once per pass; the check was a third of a read)."""
        if shard.npz is None:
            raise KLFilterError("npz file missing for this parquet shard", shard.parquet[: -len(".parquet")] + ".npz")
        out, ids = {}, {}
        try:
            with self.fs.open(shard.npz, "rb") as f, NpzReader(f, self.fs.size(shard.npz)) as z:
                for k in keys:
                    if k not in z:
                        raise KLFilterError(f"npz has no key {k!r} (has {sorted(z.files)})", shard.npz)
                    out[k] = z.read(k, check=lambda h, k=k: _check_embedding_header(h, k, num_rows, shard.npz))
                    ids[k] = (shard.npz, k, *z.content_id(k))
        except KLFilterError:
            raise
        except read_errors() as e:
            raise KLFilterError(f"unreadable npz ({_short(e)})", shard.npz) from e
        for k, arr in out.items():
            if arr.dtype != np.float16:
                out[k] = arr = arr.astype(np.float16)  # the canonical embedding type (docs/formats.md#the-pool)
            fam = k.split("_")[0]
            if check and fam in EMBED_DIMS and ids[k] not in self._checked:
                check_unit_rows(arr, k, shard.npz)
                self._checked.add(ids[k])
        return out


def _check_embedding_header(h, key: str, num_rows: int, path: str) -> None:
    """Shape and dtype of an npz member from its header alone (nothing inflated yet)."""
    try:
        check_plain_dtype(h, kinds="f")
    except ValueError as e:
        raise KLFilterError(f"key {key!r}: {e}; embeddings are float16", path) from e
    if len(h.shape) != 2 or h.shape[0] != num_rows:
        raise KLFilterError(f"key {key!r} has shape {h.shape} but the parquet has {num_rows} rows", path)
    fam = key.split("_")[0]
    if fam in EMBED_DIMS and h.shape[1] != EMBED_DIMS[fam]:
        raise KLFilterError(f"key {key!r} has dimension {h.shape[1]}, expected {EMBED_DIMS[fam]}", path)
    if h.shape[1] > MAX_OTHER_WIDTH:
        raise KLFilterError(f"key {key!r} has dimension {h.shape[1]}, more than {MAX_OTHER_WIDTH}", path)


def _content_digest(fs, path: str, size: int, kind: str) -> str:
    """sha256 of a file's self-description (parquet footer / zip central directory) and of fixed samples of its
    bytes; see :attr:`Pool.fingerprint`."""
    h = hashlib.sha256()
    if kind == "parquet":
        if size < 12:
            raise ValueError(f"not a parquet file ({size} bytes)")
        tail = fs.cat_file(path, start=size - 8, end=size)
        footer_len = struct.unpack("<I", tail[:4])[0]
        if tail[4:] != b"PAR1" or footer_len + 12 > size:
            raise ValueError("not a parquet file (no footer)")
        h.update(fs.cat_file(path, start=size - 8 - footer_len, end=size))
    else:
        h.update(_zip_directory(fs, path, size))
    n = FINGERPRINT_SAMPLES[kind]
    for i in range(n):
        start = size * (2 * i + 1) // (2 * n)
        h.update(fs.cat_file(path, start=start, end=min(size, start + _SAMPLE_BYTES)))
    return h.hexdigest()


def _zip_directory(fs, path: str, size: int) -> bytes:
    """The central directory of a zip (with its end records): names, sizes and the CRC-32 of every member."""
    if size == 0:
        raise ValueError("empty file (0 bytes)")
    start = max(0, size - (1 << 16) - 22)  # the end record is within the last 64 KiB + 22 bytes
    tail = fs.cat_file(path, start=start, end=size)
    i = tail.rfind(b"PK\x05\x06")
    if i < 0 or i + 22 > len(tail):
        head = fs.cat_file(path, start=0, end=min(size, 6))
        raise ValueError("not an .npz (zip) archive" + (" but an .npy array" if head == b"\x93NUMPY" else
                                                         " (no end-of-central-directory record)"))
    cd_size, cd_off = struct.unpack("<II", tail[i + 12: i + 20])
    if 0xFFFFFFFF in (cd_size, cd_off):  # zip64: the locator just before the end record points at its record
        loc = tail[i - 20: i] if i >= 20 else b""
        if loc[:4] != b"PK\x06\x07":
            raise ValueError("zip64 archive without its end-of-central-directory locator")
        rec_off = struct.unpack("<Q", loc[8:16])[0]
        rec = fs.cat_file(path, start=rec_off, end=min(size, rec_off + 56))
        if rec[:4] != b"PK\x06\x06" or len(rec) < 56:
            raise ValueError("zip64 end-of-central-directory record missing")
        cd_size, cd_off = struct.unpack("<QQ", rec[40:56])
    if cd_off + cd_size > size:
        raise ValueError("zip central directory lies beyond the end of the file (truncated?)")
    if cd_off >= start:
        return tail[cd_off - start:]
    return fs.cat_file(path, start=cd_off, end=cd_off + cd_size) + tail[i:]


def check_unit_rows(arr: np.ndarray, key: str, path: str, block: int = 2048) -> None:
    """Raise if any row is NaN/inf or far from unit norm (float32 norms, in blocks that stay in cache: 2,048 rows
    through the chunked float16 conversion took half the time of 65,536 through NumPy's, measured on 30k rows)."""
    for i in range(0, len(arr), block):
        x = to_float32(arr[i: i + block])
        sq = np.einsum("ij,ij->i", x, x)
        if not np.isfinite(sq).all():
            r = i + int(np.flatnonzero(~np.isfinite(sq))[0])
            raise KLFilterError(f"key {key!r} row {r} has NaN or inf values", path)
        bad = np.abs(np.sqrt(sq) - 1.0) > NORM_TOLERANCE
        if bad.any():
            r = i + int(np.flatnonzero(bad)[0])
            raise KLFilterError(f"key {key!r} row {r} has norm {np.sqrt(sq[r - i]):.4f}, expected unit norm", path)


def _short(e: Exception) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return msg[:200]
