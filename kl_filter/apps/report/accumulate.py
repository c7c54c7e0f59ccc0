"""Streaming accumulators for the report: each one sees the pool shard by shard and holds O(bins + k + sample)
memory, whatever the pool's size. They are fed in shard order by one thread, so every float64 sum is added in
the same order on every run (the figures are bit-identical for any number of loader threads).

* :class:`Moments` — count, NaN count, sum, min, max per column (pass 1; gives the histogram edges and means).
* :class:`Histogram` — exact counts of every finite value in fixed bins (pass 2).
* :class:`CoMoments` — pairwise-complete Pearson correlations from sums of values centred at the pass-1 means.
* :class:`Extremes` — the ``k`` highest and lowest rows of a column, ties broken by uid (ascending).
* :class:`BottomKSample` — the ``size`` rows with the smallest seeded hash keys: a uniform sample without
  replacement whose membership depends on the uid only (so on no shard order or worker count).
"""

from __future__ import annotations

import numpy as np


class Moments:
    def __init__(self, columns: list[str]):
        c = len(columns)
        self.columns = columns
        self.count = np.zeros(c, np.int64)
        self.nan = np.zeros(c, np.int64)
        self.sum = np.zeros(c, np.float64)
        self.min = np.full(c, np.inf)
        self.max = np.full(c, -np.inf)

    def update(self, values: dict) -> None:
        for i, name in enumerate(self.columns):
            x = np.asarray(values[name], np.float64)
            ok = np.isfinite(x)
            self.nan[i] += len(x) - int(ok.sum())
            x = x[ok]
            if len(x):
                self.count[i] += len(x)
                self.sum[i] += x.sum()
                self.min[i] = min(self.min[i], x.min())
                self.max[i] = max(self.max[i], x.max())

    @property
    def mean(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.count > 0, self.sum / np.maximum(self.count, 1), np.nan)

    def edges(self, i: int, bins: int) -> np.ndarray:
        """``bins + 1`` equal-width edges over [min, max] (a unit-wide bin around a constant column)."""
        lo, hi = self.min[i], self.max[i]
        if not np.isfinite(lo):
            lo, hi = 0.0, 1.0
        if hi <= lo:
            lo, hi = lo - 0.5, lo + 0.5
        return np.linspace(lo, hi, bins + 1)


class Histogram:
    """``np.histogram`` semantics: bins closed on the left, the last bin closed on both sides."""

    def __init__(self, edges):
        self.edges = np.asarray(edges, np.float64)
        self.counts = np.zeros(len(self.edges) - 1, np.int64)

    def update(self, x) -> None:
        x = np.asarray(x, np.float64)
        x = x[np.isfinite(x)]
        self.counts += np.histogram(x, bins=self.edges)[0]


class CountHistogram:
    """Counts of non-negative integers (caption words, image sides) in bins ``[e_i, e_{i+1})``; the last edge
    may be ``inf``. Unlike :class:`Histogram`, the last bin is open on the right."""

    def __init__(self, edges):
        self.edges = np.asarray(edges, np.float64)
        self.counts = np.zeros(len(self.edges) - 1, np.int64)

    def update(self, x) -> None:
        x = np.asarray(x, np.float64)
        idx = np.searchsorted(self.edges, x, side="right") - 1
        ok = (idx >= 0) & (idx < len(self.counts))
        self.counts += np.bincount(idx[ok], minlength=len(self.counts))


class CoMoments:
    """Pearson correlation of every pair of columns over the rows where both are finite.

    Values are centred at the pass-1 means before summing, so the float64 sums do not cancel."""

    def __init__(self, columns: list[str], means: np.ndarray):
        c = len(columns)
        self.columns, self.means = columns, np.nan_to_num(np.asarray(means, np.float64))
        self.n = np.zeros((c, c), np.float64)
        self.sxy = np.zeros((c, c), np.float64)
        self.sx = np.zeros((c, c), np.float64)   # sx[i, j]: sum of x_i over rows where x_j is finite too
        self.sxx = np.zeros((c, c), np.float64)  # sxx[i, j]: sum of x_i² over those rows

    def update(self, values: dict) -> None:
        if not self.columns:
            return
        x = np.stack([np.asarray(values[c], np.float64) for c in self.columns], axis=1) - self.means
        ok = np.isfinite(x)
        z = np.where(ok, x, 0.0)
        m = ok.astype(np.float64)
        self.n += m.T @ m
        self.sxy += z.T @ z
        self.sx += z.T @ m
        self.sxx += (z * z).T @ m

    def pearson(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            n = self.n
            cov = self.sxy - self.sx * self.sx.T / n
            var_i = self.sxx - self.sx ** 2 / n
            r = cov / np.sqrt(var_i * var_i.T)
        r[(n < 2) | ~np.isfinite(r)] = np.nan
        return np.clip(r, -1.0, 1.0)


def _order_desc(score: np.ndarray, f0: np.ndarray, f1: np.ndarray) -> np.ndarray:
    """Row order: score descending, then uid ascending."""
    return np.lexsort((f1, f0, -score))


class Extremes:
    """The ``k`` highest and ``k`` lowest finite rows of one column, as (score, uid, caption) records."""

    def __init__(self, k: int):
        self.k = k
        self.top: list = []
        self.bottom: list = []

    @staticmethod
    def _local(score, uids, texts, k: int, highest: bool) -> list:
        ok = np.flatnonzero(np.isfinite(score))
        if not len(ok) or k <= 0:
            return []
        s = score[ok] if highest else -score[ok]
        if len(s) > k:  # every row at or past the k-th value, ties included, then an exact order
            kth = np.partition(s, len(s) - k)[len(s) - k]
            ok, s = ok[s >= kth], s[s >= kth]
        u = uids[ok]
        order = _order_desc(s, u["f0"], u["f1"])[:k]
        rows = ok[order]
        return [(float(score[r]), int(uids[r]["f0"]), int(uids[r]["f1"]), r) for r in rows]

    def update(self, score, uids, texts) -> None:
        score = np.asarray(score, np.float64)
        for highest in (True, False):
            local = [(s, a, b, texts[r]) for s, a, b, r in self._local(score, uids, texts, self.k, highest)]
            merged = (self.top if highest else self.bottom) + local
            sign = -1.0 if highest else 1.0
            merged.sort(key=lambda t: (sign * t[0], t[1], t[2]))
            if highest:
                self.top = merged[: self.k]
            else:
                self.bottom = merged[: self.k]


class BottomKSample:
    """Rows with the ``size`` smallest keys; a row is a dict of equal-length arrays (one entry per field)."""

    def __init__(self, size: int):
        self.size = size
        self.keys = np.zeros(0, np.uint64)
        self.rows: dict | None = None

    def update(self, keys: np.ndarray, rows: dict) -> None:
        if self.size <= 0:
            return
        take = np.flatnonzero(keys < self.cutoff) if len(self.keys) >= self.size else np.arange(len(keys))
        if len(take) > self.size:
            take = take[np.argpartition(keys[take], self.size - 1)[: self.size]]
        if not len(take) and self.rows is not None:
            return
        new = {k: np.asarray(v)[take] for k, v in rows.items()}
        keys = np.concatenate([self.keys, keys[take]])
        merged = new if self.rows is None else {k: np.concatenate([self.rows[k], new[k]]) for k in self.rows}
        keep = np.argsort(keys, kind="stable")[: self.size]
        self.keys = keys[keep]
        self.rows = {k: v[keep] for k, v in merged.items()}

    @property
    def cutoff(self) -> np.uint64:
        return self.keys[-1] if len(self.keys) else np.uint64(np.iinfo(np.uint64).max)
