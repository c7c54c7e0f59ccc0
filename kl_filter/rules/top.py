"""DataComp's cut, ``Top`` (the top fraction of the pool by a column, or rows past a threshold; ``then`` cuts
among what earlier rules keep), and ``Keep`` (a boolean column)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal  # noqa: F401  (Rule's inherited field annotations resolve here)

import numpy as np

from kl_filter.core.errors import KLFilterError
from kl_filter.rules.base import Resolved, Rule, Then, check_cut
from kl_filter.rules.threshold import exact_count, keep_mask, kth_index


@dataclass(frozen=True)
class Keep(Rule):
    """Keep rows whose boolean column is true."""

    name: ClassVar[str] = "keep"

    def resolve(self, pool, before):
        return Resolved(self, [None] * len(pool.handles))

    def mask(self, s, piece):
        return s.columns[self.column].astype(bool)


@dataclass(frozen=True)
class Top(Rule):
    """Keep the top ``fraction`` of the pool by ``column`` (or rows ``>= threshold``).

    column: the column to cut (one of its scorer's outputs, when the scorer writes several)
    fraction: keep this top fraction of the pool, in (0, 1]
    threshold: keep rows with score >= threshold
    reverse: keep the bottom fraction instead (threshold from 1 - fraction, keep <=), or rows <= --threshold
    ties: keep = DataComp's >= rule; exact = the requested count, ties at the threshold broken by --seed
    then: decide among the rows the cuts before it keep: pool = down to --fraction of the pool; survivors = the top --fraction of them

    DataComp's rule: threshold = the value at position ``int(n·f)`` of the scores sorted descending over the WHOLE
    pool, keep ``>=`` (ties keep a few more). ``reverse`` keeps the bottom fraction (threshold from ``1 − f``, keep
    ``<=``), as the KL paper's code does. ``ties="exact"`` keeps exactly the count the ``>=`` rule keeps when
    nothing ties (``int(n·f) + 1``), ties at the threshold broken by a seeded draw. ``then`` decides the cut among
    the rows the rules before it keep: ``"pool"``, down to ``fraction`` of the POOL (the value at position
    ``int(N_pool·f)`` of the survivors' scores, all of them when fewer survive); ``"survivors"``, the top
    ``fraction`` of the survivors. ``ceiling`` is the largest attainable score (rows there are counted as
    saturated; by default the column's scorer says).
    """

    fraction: float | None = None
    threshold: float | None = None
    reverse: bool = False
    ties: Literal["keep", "exact"] = "keep"
    then: Then | None = None
    ceiling: float | None = None
    name: ClassVar[str] = "top"

    def __post_init__(self):
        super().__post_init__()
        check_cut(f"Top({self.column!r})", self.fraction, self.threshold)
        if self.ties not in ("keep", "exact") or self.then not in (None, "pool", "survivors"):
            raise KLFilterError(f"ties must be keep or exact and then pool or survivors, got {self.ties!r}, {self.then!r}")
        if self.then and (self.threshold is not None or self.reverse):
            raise KLFilterError(f"Top({self.column!r}): then= takes a top fraction (not a threshold, nor reverse)")

    def resolve(self, pool, before):
        among, facts = (before if self.then else None), {}
        if self.fraction is None:
            t = self.threshold
        elif self.then:  # the survivors' value at position int(N·f), N the pool's rows or the survivors'
            m = facts["survivors"] = pool.count(among)
            t = pool.kth_largest(self.column, max(0, min(int((pool.n if self.then == "pool" else m) * self.fraction),
                                                         m - 1)), among)
        else:
            t = pool.kth_largest(self.column, kth_index(pool.n, (1 - self.fraction) if self.reverse else self.fraction))
        facts["computed_threshold"] = float(t)
        ceiling = self.ceiling if self.ceiling is not None else pool.ceilings.get(self.column)
        if ceiling is not None:
            facts["ceiling"] = float(ceiling)
        masks = [None] * len(pool.handles)
        if self.ties == "exact" and self.fraction is not None:
            col = pool.gather(lambda s, m: s.columns[self.column])
            ok = pool.gather(lambda s, m: np.ones(len(s.uids), bool) if m is None else m, among)
            want = exact_count(pool.n if self.then in (None, "pool") else int(ok.sum()), self.fraction)
            masks = pool.split(_break_ties(col, t, keep_mask(col, t, self.reverse) & ok, ok, want,
                                           pool.rng(before.index)))
        return Resolved(self, [(t, m, ceiling) for m in masks], facts)

    def mask(self, s, piece):
        t, m, _ = piece
        return m if m is not None else keep_mask(s.columns[self.column], t, self.reverse)

    def counts(self, s, piece):
        """Kept rows, NaN, rows tied at the threshold, and rows saturated at the column's ceiling."""
        col, (t, _, ceiling) = s.columns[self.column], piece
        out = {"kept_by_rule": int(self.mask(s, piece).sum()),
               "nan": int(np.isnan(col).sum()) if col.dtype.kind == "f" else 0,
               "ties_at_threshold": int((col == t).sum())}
        if ceiling is not None:  # at the largest attainable value, within a float32 tolerance
            c = np.float32(ceiling)
            out["saturated"] = int((col >= c - np.float32(1e-6) * max(np.float32(1), abs(c))).sum())
        return out

    def label(self, facts):
        op = "<=" if self.reverse else ">="
        t = facts.get("computed_threshold")
        if t is None:
            return f"top {self.column} fraction {self.fraction:g}"
        of = {None: "", "pool": " of the pool, among the survivors", "survivors": " of the survivors"}[self.then]
        return f"top {self.column} {op} {t:.6g}" + (f" (fraction {self.fraction:g}{of})" if self.fraction else "")



def _break_ties(col, thr, mask, ok, want, rng) -> np.ndarray:
    """Keep exactly ``want`` rows: all strictly past the threshold, then a seeded draw among the ties."""
    tied = np.flatnonzero((col == thr) & ok)
    strict = int(mask.sum()) - len(tied)
    need = max(0, min(len(tied), want - strict))
    mask = mask.copy()
    mask[tied] = False
    mask[np.sort(rng.choice(tied, size=need, replace=False))] = True
    return mask
