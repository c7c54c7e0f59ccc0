"""Fraction → threshold exactly as DataComp computes it, plus tie accounting
(docs/selection.md#selection-semantics-datacomps-exactly).

DataComp: ``threshold = -np.sort(-scores)[int(n * fraction)]`` over the whole pool, keep ``scores >= threshold``.
We take the same order statistic with ``np.partition`` (O(n) instead of a sort) on ``-scores``, so NaNs land
where DataComp's sort puts them (after every number). ``fraction = 1`` keeps every row (DataComp's index
would run off the end); reverse follows the KL paper's code: index from ``1 − fraction``, keep ``<=``.
"""

from __future__ import annotations

import numpy as np


def kth_index(n: int, fraction: float) -> int:
    """Position in the descending order whose value becomes the threshold."""
    return min(int(n * fraction), n - 1)


def fraction_threshold(scores: np.ndarray, fraction: float, reverse: bool = False):
    """The value DataComp's rule keeps down to (``>=``), or up to (``<=``) when ``reverse``, for scores in
    memory. The run loop finds the same order statistic without gathering (:func:`.kth.kth_largest`)."""
    n = len(scores)
    if n == 0:
        raise ValueError("no scores")
    k = kth_index(n, 1.0 - fraction if reverse else fraction)
    neg = -np.asarray(scores)
    return -np.partition(neg, k)[k]  # a NumPy scalar of the scores' dtype, compared exactly as DataComp does


def keep_mask(scores: np.ndarray, threshold, reverse: bool = False) -> np.ndarray:
    return scores <= threshold if reverse else scores >= threshold


def exact_count(n: int, fraction: float) -> int:
    """Rows the ``>=`` rule keeps when nothing ties: positions 0..int(n·f) of the descending order."""
    return kth_index(n, fraction) + 1
