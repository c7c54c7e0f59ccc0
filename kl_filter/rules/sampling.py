"""Rules that sample: ``Uniform`` (the KL paper's histogram flattening) and ``Resample`` (rows drawn with
replacement in proportion to a weight), both seeded by the run's seed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal  # noqa: F401  (Rule's inherited field annotations resolve here)

import numpy as np

from kl_filter.core.errors import KLFilterError
from kl_filter.rules.base import Resolved, Rule, check_cut, survivors

MAX_BINS = 10_000_000  # a histogram of more bins than that is a typo, not a choice (and 80 MB per count array)
MAX_RESAMPLE = 2**53   # draw positions are float64: past this, counts would not be exact


def check_draws_fit(n: int) -> None:
    """Refuse, before any work, a draw count whose UID file this machine cannot hold: the file has one 16-byte uid
    per draw, gathered and sorted in memory (two copies). ``--resample 10**12`` (inside 2**53) was a 14.6 TiB
    allocation failing at the end of the run."""
    import os

    try:
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # no such query here: the allocation itself will say
        return
    if 2 * 16 * n > memory:
        raise KLFilterError(f"--resample {n:,} draws make a UID file of {_bytes(16 * n)} (16 bytes a draw), gathered "
                            f"and sorted in memory (twice that); this machine has {_bytes(memory)}: draw at most "
                            f"{memory // 32:,}")


def _bytes(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024


@dataclass(frozen=True)
class Uniform(Rule):
    """Flatten the histogram of ``column``: keep about ``ceil(fraction·n)`` rows (seeded by the run's seed;
    docs/selection.md#selection-semantics-datacomps-exactly).

    fraction: the share of the pool to keep, in (0, 1]
    num_bins: equal-width bins over the score range; each keeps at most ceil(fraction·n)/num_bins rows
    """

    fraction: float | None = None
    num_bins: int = 1000
    name: ClassVar[str] = "uniform"

    def __post_init__(self):
        super().__post_init__()
        if self.fraction is None:
            raise KLFilterError(f"Uniform({self.column!r}) needs a fraction (--uniform needs --fraction)")
        check_cut(f"Uniform({self.column!r})", self.fraction, None)
        if not 1 <= self.num_bins <= MAX_BINS:
            raise KLFilterError(f"--num_bins must be in [1, {MAX_BINS:,}], got {self.num_bins}")

    def resolve(self, pool, before):
        from kl_filter.rules.uniform import uniform_keep

        col = pool.gather(lambda s, m: s.columns[self.column])
        return Resolved(self, pool.split(uniform_keep(col, self.fraction, self.num_bins, pool.seed)))

    def mask(self, s, piece):
        return piece

    def label(self, facts):
        return f"uniform {self.column} fraction {self.fraction:g}"


@dataclass(frozen=True)
class Resample(Rule):
    """Draw ``n`` rows WITH replacement, with probability ∝ the weight in ``column`` (``log=True``: the column
    holds log-weights, weight = exp(value); ``log=False``: weights >= 0), among the rows the rules before it keep.

    Resolved over the whole pool by SYSTEMATIC resampling seeded by the run's seed
    (:mod:`kl_filter.rules.weights`): a row is drawn floor or ceil of n·p_i times. The UID file repeats a uid
    once per draw (DataComp's resharder upsamples duplicates); the sidecar records the effective sample size
    (Σw)²/Σw², the distinct uids and n. It comes last among a filter's rules, and a filter with a ``refine`` step
    cannot hold one (it would drop draws after the fact). NaN weighs 0; degenerate weights (effective sample
    under 10 rows) are refused.

    n: rows to draw with replacement
    log: the column holds log-weights (else weights >= 0)
    """

    n: int = 0
    log: bool = True
    name: ClassVar[str] = "resample"
    repeats: ClassVar[bool] = True

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.n, bool) or not isinstance(self.n, (int, np.integer)) or not 1 <= self.n <= MAX_RESAMPLE:
            raise KLFilterError(f"--resample must be a number of rows in [1, 2**53], got {self.n!r}")
        object.__setattr__(self, "n", int(self.n))
        check_draws_fit(self.n)

    def resolve(self, pool, before):
        """Per-shard float64 sums, combined in shard order, one seeded uniform, then each shard's systematic
        counts: the same counts for any engine and worker count."""
        from kl_filter.rules.weights import boundaries, check_weights, combine, log_weights, shard_sums, systematic_counts

        parts = pool.apply(lambda s, m: shard_sums(log_weights(s.columns[self.column], self.log), m), before)
        total = combine(parts)
        if not total.rows:
            raise KLFilterError(f"{self.label({})}: no row to draw from (the rules before it keep none with a "
                                "finite weight)")
        check_weights(total, self.column)
        u = float(pool.rng(before.index).random())
        bounds = boundaries(parts, total, self.n, u)
        items = [(b, before.steps(j)) for j, b in enumerate(bounds)]
        counts = pool.apply_pieces(lambda s, it: systematic_counts(log_weights(s.columns[self.column], self.log),
                                                                    survivors(s, it[1]), total, self.n, u, it[0]),
                                   items)
        return Resolved(self, counts, {
            "method": "systematic", "uniform_draw": u, "eligible_rows": total.rows,
            "effective_sample_size": total.ess, "effective_sample_share": total.ess_share,
            "max_log_weight": total.max, "draws": int(sum(int(c.sum()) for c in counts)),
            "distinct_uids": int(sum(int((c > 0).sum()) for c in counts))})

    def mask(self, s, piece):
        return piece > 0

    def draws(self, s, piece):
        return piece

    def label(self, facts):
        return f"resample {self.column} n {self.n:,} (systematic, with replacement)"
