"""The exact k-th largest score of a pool too big to gather: radix refinement over distributed partitions.

DataComp's fraction rule needs the value at position ``k = int(n·f)`` of the whole pool's scores sorted in
descending order. Gathering 12.8B floats on one node is not an option, so each partition (a shard's score
column, wherever it lives) answers small questions instead:

1. how many non-NaN values it holds (NaN sorts after every number in DataComp's descending order);
2. for the values whose order-preserving integer key starts with the prefix found so far, a histogram of
   the next 16 bits (65,536 counters).

Float keys are mapped to unsigned integers that sort like the floats (flip all bits of negatives, set the
sign bit of positives), so 2 rounds pin a float32 exactly and 4 a float64. Memory per partition and per
round is 65,536 counters whatever the pool size; the answer equals ``-np.sort(-x)[k]`` bit for bit (up to
the sign of zero, which compares equal).

``mapper(fn, partitions)`` applies ``fn`` to every partition and returns the list of results: ``map`` for
one machine, Ray tasks for a cluster (:mod:`kl_filter.engines.ray_engine`).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

DIGIT_BITS = 16
_UINT = {np.dtype(np.float32): np.uint32, np.dtype(np.float64): np.uint64}


def float_keys(x: np.ndarray) -> np.ndarray:
    """Unsigned integers ordered like the float values of ``x`` (NaN excluded by the caller)."""
    u = _UINT[x.dtype]
    bits = x.view(u)
    sign = u(1) << u(8 * x.dtype.itemsize - 1)
    return np.where(bits & sign, ~bits, bits | sign)


def keys_to_float(key: int, dtype) -> np.generic:
    dtype = np.dtype(dtype)
    u = _UINT[dtype]
    sign = u(1) << u(8 * dtype.itemsize - 1)
    k = u(key)
    bits = (k & ~sign) if (k & sign) else ~k
    return np.array([bits], dtype=u).view(dtype)[0]


def _count(values) -> int:
    x = np.asarray(values)
    return int(np.count_nonzero(~np.isnan(x)))


def _histogram(values, shift: int, prefix: int, prefix_shift: int) -> np.ndarray:
    """Counts of the 16-bit digit at ``shift`` among keys whose bits above ``prefix_shift`` equal ``prefix``."""
    x = np.asarray(values)
    keys = float_keys(x[~np.isnan(x)])
    u = keys.dtype.type
    if prefix_shift < 8 * keys.dtype.itemsize:
        keys = keys[(keys >> u(prefix_shift)) == u(prefix)]
    digits = ((keys >> u(shift)) & u((1 << DIGIT_BITS) - 1)).astype(np.int64)
    return np.bincount(digits, minlength=1 << DIGIT_BITS)


def kth_largest(partitions: Sequence, k: int, dtype=np.float32, mapper: Callable = None) -> np.generic:
    """The value at 0-based position ``k`` of all partitions' values sorted descending (NaN last)."""
    mapper = mapper or (lambda fn, parts: [fn(p) for p in parts])
    dtype = np.dtype(dtype)
    n = sum(mapper(_count, partitions))
    if k >= n:
        return dtype.type(np.nan)
    rank = n - 1 - k  # ascending position among the non-NaN values
    bits = 8 * dtype.itemsize
    prefix, prefix_shift = 0, bits
    for shift in range(bits - DIGIT_BITS, -1, -DIGIT_BITS):
        hists = mapper(lambda p, s=shift, pf=prefix, ps=prefix_shift: _histogram(p, s, pf, ps), partitions)
        hist = np.sum(hists, axis=0)
        cum = np.cumsum(hist)
        digit = int(np.searchsorted(cum, rank, side="right"))
        rank -= int(cum[digit - 1]) if digit else 0
        prefix, prefix_shift = (prefix << DIGIT_BITS) | digit, shift
    return keys_to_float(prefix, dtype)
