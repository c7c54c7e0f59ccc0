"""Importance weights over the whole pool: self-normalisation, effective sample size, systematic resampling.

A weight column is stored as LOG-weights ``l_i`` (float32, e.g. ``a·<u_i, p>`` for IWL), never as ``exp(l_i)``:
``exp(100·0.9)`` already overflows float32. Every whole-pool quantity is reduced in float64 from per-shard
pieces, in shard order, so it is identical for any engine and worker count::

    per shard j  ──shard_sums──▶ WeightSums(rows, max m_j, s1_j = Σ exp(l − m_j), s2_j = Σ exp(2(l − m_j)), Σl, Σl²)
    all shards   ──combine────▶ M = max_j m_j,  S = Σ_j exp(m_j − M)·s1_j  (shard order),  S2 likewise
    normalised weight  w_i = exp(l_i − M) · n / S        (mean 1 over the n rows)
    effective sample size  ESS = (Σw)² / Σw² = S² / S2    (n when all weights are equal, 1 when one row has all)

Resampling is SYSTEMATIC (one uniform draw u in [0, 1), then the N points u, u+1, ..., u+N−1 on the scale where
the cumulative weight runs from 0 to N): row i is drawn ``ceil(B_i − u) − ceil(B_{i−1} − u)`` times, B_i = N·C_i
and C_i the cumulative probability in pool order. Why systematic rather than N i.i.d. multinomial draws (the
authors' ``WeightedRandomSampler``): it is unbiased (E[count_i] = N·p_i) and its counts are floor(N·p_i) or
ceil(N·p_i), so the subset carries the weighted distribution with no Monte-Carlo noise beyond rounding (a
multinomial count has variance N·p_i(1 − p_i): rows with N·p_i = 3 would be drawn 0 times 5% of the time); and it
is a function of the pool order and ONE seeded number, so it is reproducible and cheap to compute per shard
(the shard boundaries B_j come from the per-shard sums; nothing is gathered). The price: neighbouring rows'
counts are dependent (it is not i.i.d.), which matters only if pool order carried meaning (DataComp's does not).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from kl_filter.core.errors import KLFilterError

log = logging.getLogger(__name__)

FLOAT32_EXP_MAX = math.log(float(np.finfo(np.float32).max))  # 88.72: exp() of more overflows float32
MIN_ESS = 10.0            # fewer effective rows than this: the weights are degenerate (an error)
WARN_ESS_SHARE = 0.01     # an effective sample under 1% of the rows: a warning
TARGET_ESS_SHARE = 0.1    # the logit scale suggested aims at about this share (Gaussian log-weights)


@dataclass(frozen=True)
class WeightSums:
    """Float64 sums of one shard's (eligible, finite) log-weights; ``max`` is -inf when there is none."""

    rows: int            # eligible rows with a finite log-weight
    max: float
    s1: float            # Σ exp(l − max)
    s2: float            # Σ exp(2(l − max))
    t1: float = 0.0      # Σ l    (for the spread of the log-weights, behind the suggested logit scale)
    t2: float = 0.0      # Σ l²
    nan: int = 0         # eligible rows whose log-weight is NaN (weight 0, never drawn)


@dataclass(frozen=True)
class PoolSums:
    rows: int
    max: float
    s1: float            # Σ exp(l − max) over the pool
    s2: float
    std: float           # standard deviation of the log-weights
    nan: int

    @property
    def ess(self) -> float:
        return self.s1 * self.s1 / self.s2 if self.s2 > 0 else 0.0

    @property
    def ess_share(self) -> float:
        return self.ess / self.rows if self.rows else 0.0


def log_weights(column: np.ndarray, log: bool = True) -> np.ndarray:
    """Float64 log-weights of a weight column (``log=False``: the column holds weights >= 0; 0 -> -inf)."""
    x = np.asarray(column, dtype=np.float64)
    if log:
        return x
    if (x < 0).any():
        raise KLFilterError(f"a weight column holds negative values (min {np.nanmin(x):.6g})")
    with np.errstate(divide="ignore"):
        return np.log(x)


def shard_sums(logw: np.ndarray, eligible: np.ndarray | None = None) -> WeightSums:
    """The sums of one shard (rows outside ``eligible`` weigh 0). +inf is an error; NaN weighs 0 (counted)."""
    l = np.asarray(logw, dtype=np.float64)
    if eligible is not None:
        l = l[eligible]
    nan = int(np.isnan(l).sum())
    if np.isposinf(l).any():
        raise KLFilterError("a log-weight is +inf: the weights cannot be normalised")
    l = l[np.isfinite(l)]
    if not len(l):
        return WeightSums(0, -math.inf, 0.0, 0.0, nan=nan)
    m = float(l.max())
    e = np.exp(l - m)
    return WeightSums(len(l), m, float(e.sum()), float(np.dot(e, e)), float(l.sum()), float(np.dot(l, l)), nan)


def combine(parts: list[WeightSums]) -> PoolSums:
    """The pool's sums from the shards' sums, in shard order (the same floats for any engine)."""
    rows = sum(p.rows for p in parts)
    m = max((p.max for p in parts), default=-math.inf)
    s1 = s2 = t1 = t2 = 0.0
    for p in parts:
        if p.rows:
            f = math.exp(p.max - m)
            s1 += f * p.s1
            s2 += f * f * p.s2
            t1 += p.t1
            t2 += p.t2
    mean = t1 / rows if rows else 0.0
    var = max(0.0, t2 / rows - mean * mean) if rows else 0.0
    return PoolSums(rows, m, s1, s2, math.sqrt(var), sum(p.nan for p in parts))


def normalised(logw: np.ndarray, total: PoolSums) -> np.ndarray:
    """Weights with mean 1 over the pool's eligible rows (float64): ``exp(l − M)·n/S``."""
    return np.exp(np.asarray(logw, dtype=np.float64) - total.max) * (total.rows / total.s1)


def suggested_scale(total: PoolSums, logit_scale: float) -> float:
    """A logit scale that would give an effective sample of about ``TARGET_ESS_SHARE`` of the rows, taking the
    log-weights as Gaussian (ESS/n ≈ exp(−σ²)); never more than half the current one."""
    want = math.sqrt(math.log(1 / TARGET_ESS_SHARE))
    k = want / total.std if total.std > 0 else 0.5
    return logit_scale * min(0.5, k)


def check_weights(total: PoolSums, column: str, logit_scale: float | None = None, flag: str = "--logit_scale") -> None:
    """Refuse degenerate weights (an effective sample under ``MIN_ESS`` rows, or under half of a tiny pool) in
    one line that says which logit scale to lower and to what; warn under ``WARN_ESS_SHARE`` of the rows."""
    if not total.rows:
        raise KLFilterError(f"no row has a finite weight in {column!r}")
    ess = total.ess
    if logit_scale is not None:
        hint = f"lower {flag} from {logit_scale:g} to about {suggested_scale(total, logit_scale):.3g}"
    else:
        hint = f"lower the logit scale by a factor of about {1 / suggested_scale(total, 1.0):.3g}"
    over = (f"; exp() of the largest log-weight {total.max:.4g} overflows float32 (> {FLOAT32_EXP_MAX:.2f})"
            if total.max > FLOAT32_EXP_MAX else "")
    where = (f"effective sample size (Σw)²/Σw² = {ess:.3g} of {total.rows:,} rows "
             f"(log-weights spread {total.std:.3g}{over})")
    if ess < min(MIN_ESS, total.rows / 2):
        raise KLFilterError(f"importance weights of {column!r} are dominated by very few rows: {where}: {hint} "
                            f"(the IWL authors use 10)")
    if ess < WARN_ESS_SHARE * total.rows:
        log.warning("importance weights of %r are concentrated: %s; %s for a smoother weighting", column, where, hint)


# ---- systematic resampling ------------------------------------------------------------------------------------
def boundaries(parts: list[WeightSums], total: PoolSums, n: int, u: float) -> list[tuple[float, float, int, int]]:
    """Per shard ``(B_lo, B_hi, K_lo, K_hi)``: the shard's cumulative-weight interval on the [0, N] scale and the
    draw indices ``ceil(B − u)`` at its ends (the first is 0 and the last N exactly, so there are N draws)."""
    out, cum, b_lo = [], 0.0, 0.0
    k_lo = 0
    for j, p in enumerate(parts):
        if p.rows:
            cum += math.exp(p.max - total.max) * p.s1
        last = j == len(parts) - 1
        b_hi = float(n) if last else min(float(n), n * cum / total.s1)
        k_hi = n if last else min(n, max(k_lo, math.ceil(b_hi - u)))
        out.append((b_lo, b_hi, k_lo, k_hi))
        b_lo, k_lo = b_hi, k_hi
    return out


def systematic_counts(logw: np.ndarray, eligible: np.ndarray | None, total: PoolSums, n: int, u: float,
                      bounds: tuple[float, float, int, int]) -> np.ndarray:
    """How many times each row of one shard is drawn (sums to ``K_hi − K_lo``; floor or ceil of N·p_i)."""
    b_lo, b_hi, k_lo, k_hi = bounds
    l = np.asarray(logw, dtype=np.float64)
    w = np.exp(np.where(np.isfinite(l) if eligible is None else eligible & np.isfinite(l), l, -np.inf) - total.max)
    dtype = np.uint32 if n < 2**32 else np.int64
    if not len(w):
        return np.zeros(0, dtype)
    edges = np.empty(len(w) + 1)
    edges[0] = b_lo
    np.cumsum(w, out=edges[1:])
    edges[1:] = np.minimum(b_lo + edges[1:] * (n / total.s1), b_hi)  # the rounding of the cumulative sum never
    k = np.clip(np.ceil(edges - u), k_lo, k_hi).astype(np.int64)     # crosses into the next shard's draws
    k[0], k[-1] = k_lo, k_hi
    return np.diff(k).astype(dtype)


# ---- the weights file ---------------------------------------------------------------------------------------------
WEIGHTS_FORMAT = "kl_filter.weights/1"
META_KEY = b"kl_filter"


def weight_names(columns) -> dict[str, tuple[str, str]]:
    """``{score column: (weight column, log-weight column)}`` of a weights file: ``weight``/``log_weight`` for one
    column, ``weight_{id}``/``log_weight_{id}`` (the score column's last part, e.g. its prompt id) for several."""
    columns = list(columns)
    if len(columns) == 1:
        return {columns[0]: ("weight", "log_weight")}
    return {c: (f"weight_{c.rsplit('_', 1)[-1]}", f"log_weight_{c.rsplit('_', 1)[-1]}") for c in columns}
