"""A DataComp metadata pool: ``<shard>.parquet`` + ``<shard>.npz`` pairs in one directory (SPEC section 4).

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
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import KLFilterError
from .paths import child_path, open_dir
from ..uids import hex_to_u8u8

# Embedding width of each npz key family; "dedup" is not fixed (about 256).
EMBED_DIMS = {"b32": 512, "l14": 768}
NORM_TOLERANCE = 0.02  # |‖x‖ − 1| allowed for float16 unit vectors (float16 rounding is ~1e-3)


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
        if not self.shards:
            raise KLFilterError("empty pool: no .parquet shards found", metadata_dir)

    def _discover(self) -> list[Shard]:
        names = [os.path.basename(p) for p in self.fs.ls(self.root, detail=False)]
        stems = sorted(n[: -len(".parquet")] for n in names if n.endswith(".parquet") and not n.startswith("."))
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
        """Identity of the pool: shard names, row counts and file sizes (not contents: that would read 75 TB).

        Two pools with the same fingerprint are treated as the same pool by statistics, scores and resume.
        """
        h = hashlib.sha256()
        for s, n in zip(self.shards, self.row_counts):
            sizes = [self.fs.size(s.parquet), self.fs.size(s.npz) if s.npz else -1]
            h.update(json.dumps([s.name, n, sizes]).encode())
        return h.hexdigest()[:16]

    # ---- reading ---------------------------------------------------------------------------------------------
    def read(self, shard: Shard, columns=(), keys=(), check_embeddings: bool = True) -> ShardData:
        """Read one shard: the requested parquet columns (uid always) and npz keys, validated."""
        cols = ["uid"] + [c for c in dict.fromkeys(columns) if c != "uid"]
        try:
            with self.fs.open(shard.parquet, "rb") as f:
                table = pq.ParquetFile(f).read(columns=cols)
        except (pa.ArrowException, OSError) as e:
            raise KLFilterError(f"unreadable parquet ({_short(e)})", shard.parquet) from e
        except KeyError as e:
            raise KLFilterError(f"missing column {e}", shard.parquet) from e
        missing = [c for c in cols if c not in table.column_names]
        if missing:
            raise KLFilterError(f"missing column(s) {missing}", shard.parquet)
        n = table.num_rows
        try:
            uids = hex_to_u8u8(table.column("uid"))
        except ValueError as e:
            raise KLFilterError(str(e), shard.parquet) from e
        data = ShardData(shard, n, uids)
        for c in cols[1:]:
            col = table.column(c)
            data.columns[c] = col.to_numpy() if pa.types.is_floating(col.type) or pa.types.is_integer(col.type) else col.combine_chunks()
        data.columns["uid"] = table.column("uid").combine_chunks()
        if keys:
            data.embeddings = self.read_embeddings(shard, keys, n, check=check_embeddings)
        return data

    def read_embeddings(self, shard: Shard, keys, num_rows: int, check: bool = True) -> dict:
        if shard.npz is None:
            raise KLFilterError("npz file missing for this parquet shard", shard.parquet[: -len(".parquet")] + ".npz")
        out = {}
        try:
            with self.fs.open(shard.npz, "rb") as f:
                with np.load(f, allow_pickle=False) as z:
                    for k in keys:
                        if k not in z.files:
                            raise KLFilterError(f"npz has no key {k!r} (has {sorted(z.files)})", shard.npz)
                        out[k] = z[k]
        except KLFilterError:
            raise
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib_error()) as e:
            raise KLFilterError(f"unreadable npz ({_short(e)})", shard.npz) from e
        for k, arr in out.items():
            if arr.ndim != 2 or arr.shape[0] != num_rows:
                raise KLFilterError(f"key {k!r} has shape {arr.shape} but the parquet has {num_rows} rows", shard.npz)
            fam = k.split("_")[0]
            if fam in EMBED_DIMS and arr.shape[1] != EMBED_DIMS[fam]:
                raise KLFilterError(f"key {k!r} has dimension {arr.shape[1]}, expected {EMBED_DIMS[fam]}", shard.npz)
            if check and fam in EMBED_DIMS:
                check_unit_rows(arr, k, shard.npz)
        return out


def check_unit_rows(arr: np.ndarray, key: str, path: str, block: int = 65536) -> None:
    """Raise if any row is NaN/inf or far from unit norm (float32 norms, blocked to bound memory)."""
    for i in range(0, len(arr), block):
        x = arr[i: i + block].astype(np.float32)
        sq = np.einsum("ij,ij->i", x, x)
        if not np.isfinite(sq).all():
            r = i + int(np.flatnonzero(~np.isfinite(sq))[0])
            raise KLFilterError(f"key {key!r} row {r} has NaN or inf values", path)
        bad = np.abs(np.sqrt(sq) - 1.0) > NORM_TOLERANCE
        if bad.any():
            r = i + int(np.flatnonzero(bad)[0])
            raise KLFilterError(f"key {key!r} row {r} has norm {np.sqrt(sq[r - i]):.4f}, expected unit norm", path)


def zlib_error():
    import zlib

    return zlib.error


def _short(e: Exception) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return msg[:200]
