"""Histogram-flattening down-sampling ("uniform"), as in the KL paper's code, but seeded
(docs/selection.md#selection-semantics-datacomps-exactly).

M = ceil(f·n) rows are wanted; B equal-width bins over the score range (``np.histogram``'s edges); per-bin
cap T = M / B; bins with at most T rows are kept whole, larger bins are randomly subsampled to floor(T)
rows without replacement. Bins are visited in order 1..B with one ``numpy.random.Generator`` seeded by the
run's seed, so the same seed gives the same rows.
"""

from __future__ import annotations

import math

import numpy as np


def uniform_keep(scores: np.ndarray, fraction: float, num_bins: int, seed: int) -> np.ndarray:
    """Boolean mask over ``scores`` (the whole pool, in pool order)."""
    n = len(scores)
    want = math.ceil(fraction * n)
    cap = want / num_bins
    _, edges = np.histogram(scores, bins=num_bins)
    bins = np.digitize(scores, edges[:-1], right=False)  # 1..B, the top edge falls in bin B
    order = np.argsort(bins, kind="stable")
    counts = np.bincount(bins, minlength=num_bins + 1)
    starts = np.concatenate([[0], np.cumsum(counts)])
    keep = np.zeros(n, dtype=bool)
    rng = np.random.default_rng(seed)
    take = int(math.floor(cap))
    for b in range(1, num_bins + 1):
        idx = order[starts[b]: starts[b + 1]]
        if len(idx) == 0:
            continue
        if len(idx) <= cap:
            keep[idx] = True
        elif take:
            keep[rng.choice(idx, size=take, replace=False)] = True
    return keep
