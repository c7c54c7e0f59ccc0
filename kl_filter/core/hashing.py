"""Seeded per-uid hashing: every random draw of the pipeline (reference samples, negCLIPLoss's batches,
SemDeDup's k-means++ seeding) is a pure function of (seed, stream, uid), so any engine, worker count or shard
order draws the same rows."""

from __future__ import annotations

import numpy as np


def splitmix64(x: np.ndarray) -> np.ndarray:
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def sample_keys(uids: np.ndarray, seed: int, stream: int) -> np.ndarray:
    """A uniform 64-bit key per row, a pure function of (seed, stream, uid)."""
    with np.errstate(over="ignore"):
        base = splitmix64(np.uint64(seed & 0xFFFFFFFFFFFFFFFF) * np.uint64(4) + np.uint64(stream))
        return splitmix64(splitmix64(uids["f0"] ^ base) ^ uids["f1"])
