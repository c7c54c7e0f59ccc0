"""A rule in one file: keep the ``k`` best rows of each group (e.g. at most ``k`` rows per SemDeDup cluster, the best
by CLIP score), a balanced cut no single threshold gives.

    TopPerGroup("clip_l14_similarity_score", group="semdedup_l14_cluster", k=100,
                group_score=SemDeDupScorer(arch="l14", num_clusters=50))

    # in a recipe
    cuts:
      - {rule: top_per_group, column: clip_l14_similarity_score, k: 100,
         group: semdedup_l14_cluster, group_score: {name: semdedup, params: {num_clusters: 50}}}

Resolved over the whole pool from two gathered columns (8 bytes a row on the driver, as ``Uniform``): rows sorted
by group, then by score (highest first; ``reverse``: lowest), then pool order, so ties go to the earlier row for any
sharding or engine; a row with NaN in either column is never kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from kl_filter.core.errors import KLFilterError
from kl_filter.rules.base import Resolved, Rule


@dataclass(frozen=True)
class TopPerGroup(Rule):
    """Keep the ``k`` rows with the highest ``column`` within each value of the ``group`` column."""

    group: str | None = None
    k: int = 1
    reverse: bool = False
    group_score: Any = field(default=None, kw_only=True, compare=False)  # the scorer writing the group column
    name: ClassVar[str] = "top_per_group"

    def __post_init__(self):
        super().__post_init__()
        if not self.group:
            raise KLFilterError("top_per_group needs group= (a column of group ids, e.g. semdedup_l14_cluster)")
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise KLFilterError(f"top_per_group: k must be a whole number >= 1, got {self.k!r}")

    def scorers(self):
        return super().scorers() + ((self.group_score,) if self.group_score is not None else ())

    def reads(self):
        return (self.column, self.group)

    def resolve(self, pool, before):
        v = pool.gather(lambda s, m: s.columns[self.column]).astype(np.float64)
        g = pool.gather(lambda s, m: s.columns[self.group]).astype(np.float64)
        n = len(v)
        bad = np.isnan(v) | np.isnan(g)
        order = np.lexsort((np.arange(n), np.where(bad, np.inf, v if self.reverse else -v), np.where(bad, np.inf, g)))
        gs = g[order]
        start = np.ones(n, bool)
        start[1:] = gs[1:] != gs[:-1]
        rank = np.arange(n) - np.maximum.accumulate(np.where(start, np.arange(n), 0))
        keep = np.zeros(n, bool)
        keep[order] = (rank < self.k) & ~bad[order]
        return Resolved(self, pool.split(keep), {"groups": int(len(np.unique(g[~bad])))})

    def mask(self, s, piece):
        return piece

    def label(self, facts):
        return f"top {self.k} by {self.column} per {self.group}"
