"""Seeded hashed buckets of the pool's rows: the default partition of a BucketScorer
(negCLIPLoss's random batches): equal buckets of about ``size`` rows from the ranks of a seeded 64-bit hash of the
uids, a pure function of (seed, pass, uid), so any shard order, worker count or engine draws the same batches."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from kl_filter.core.errors import KLFilterError
from kl_filter.core.hashing import sample_keys, splitmix64


@dataclass
class Partition:
    """One pass's partition of the pool, per shard (in pool order): each row's bucket and its order key.

    A bucket's rows reach ``score_bucket`` sorted by ``keys`` (uint64; equal keys keep shard order), and
    ``extra`` holds per-row arrays (``{name: [array per shard]}``) carried into the payload beside the npz keys.
    """

    buckets: list            # int32[n_shard] per shard, values in [0, num_buckets)
    num_buckets: int
    keys: list               # uint64[n_shard] per shard
    extra: dict = field(default_factory=dict)


def bucket_keys(uids: np.ndarray, seed: int, pass_index: int) -> np.ndarray:
    """A uniform 64-bit key per row for one pass: a pure function of (seed, pass, uid), drawn from a stream of
    its own (the statistics' samples hash the same uids with other streams)."""
    with np.errstate(over="ignore"):
        salt = splitmix64(np.uint64(seed & 0xFFFFFFFFFFFFFFFF) ^ np.uint64(0x6275636B657473))  # "buckets"
        return sample_keys(uids, int(splitmix64(salt + np.uint64(pass_index))), stream=0)


def num_buckets(rows: int, size: int) -> int:
    """Equal buckets of about ``size`` rows; one bucket (the whole pool) when ``size`` >= rows. Never a bucket of
    fewer than ``min(size, 2)`` rows: rounding alone cut 7 rows into 4 buckets of 2 (one of 1 row, whose
    negCLIPLoss is 0 whatever the pair: always kept), so the count stops at ``rows // 2`` (3 buckets of 2-3)."""
    return max(1, min(round(rows / size), rows // min(size, 2)))


def assign_buckets(keys: list[np.ndarray], uids: list[np.ndarray] | None, buckets: int) -> list[np.ndarray]:
    """Bucket of every row: its rank among all keys (ties by uid) times ``buckets`` // n."""
    flat = np.concatenate(keys) if keys else np.empty(0, np.uint64)
    n = len(flat)
    if uids is None:
        order = np.argsort(flat, kind="stable")
    else:
        u = np.concatenate(uids)
        order = np.lexsort((u["f1"], u["f0"], flat))
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n)
    bucket = (rank * buckets // max(n, 1)).astype(np.int32)
    return np.split(bucket, np.cumsum([len(k) for k in keys])[:-1])


def has_ties(keys: list[np.ndarray]) -> bool:
    flat = np.sort(np.concatenate(keys)) if keys else np.empty(0, np.uint64)
    return bool((flat[1:] == flat[:-1]).any())


def hashed_partition(pool, engine, seed: int, pass_index: int, size: int, name: str = "buckets") -> Partition:
    """Equal buckets of about ``size`` rows from the ranks of a seeded hash of the uids (negCLIPLoss's batches);
    the hash is also the order key within a bucket."""
    rows = sum(pool.row_counts)
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:  # a plugin's bucket_size()
        raise KLFilterError(f"{name}: bucket_size() must be a positive integer, got {size!r:.80}")
    if rows < min(size, 2):  # one row alone in its batch: nothing to normalise over
        raise KLFilterError(f"{name}: the pool has {rows} row(s); a batch needs at least 2 (each row is scored "
                            "against the other rows of its batch): give a pool of 2 rows or more", pool.metadata_dir)
    keys = engine.map(_shard_keys, [(pool, s, seed, pass_index) for s in pool.shards], desc=f"{name}: keys")
    uids = engine.map(_shard_uids, [(pool, s) for s in pool.shards]) if has_ties(keys) else None
    buckets = num_buckets(rows, int(size))
    return Partition(assign_buckets(keys, uids, buckets), buckets, keys)


def _shard_keys(pool, shard, seed: int, pass_index: int) -> np.ndarray:
    return bucket_keys(pool.read(shard).uids, seed, pass_index)


def _shard_uids(pool, shard) -> np.ndarray:
    return pool.read(shard).uids
