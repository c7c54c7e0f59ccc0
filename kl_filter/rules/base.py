"""Rules: how score columns become keep/drop. Each rule resolves itself; the runner only loops.

The protocol a rule answers (datatrove's filter step, here with a whole-pool step before the per-shard one)::

    resolve(pool, before) -> Resolved   once, over the WHOLE pool, through ``pool``'s verbs only (per-shard counts
                                        and histograms, or one gathered column): a piece per shard + sidecar facts
    mask(shard, piece)   -> bool[n]     per shard: the rows it keeps
    counts(shard, piece) -> {str: int}  per shard: counters, summed over shards into the sidecar
    draws(shard, piece)  -> uint[n]     per shard, for a rule that repeats rows (``Resample``); None for the rest
    label(facts)         -> str         its step in the sidecar's ``removed`` counts

A rule names the column it reads by a scorer (``Top(score=KLScorer(arch="l14"), fraction=0.25)``: the scorer's
output, computed once per shard by the score stage) or by name (``Top("clip_l14_similarity_score", fraction=0.3)``:
a pool column, or one the filter's ``score()`` returns). ``before`` is what the rules listed earlier keep: a rule
over the whole pool ignores it (rules are then intersected: DataComp's meaning for combined baselines), a ``then``
rule is decided among those survivors (``Top(..., then="pool")``: the top share of the POOL, counted among the
survivors; ``then="survivors"``: the top share of the survivors).

A new rule is one class in one file (:mod:`.top_per_group` is one), registered by name in :data:`RULES` (recipes
write ``rule: NAME``); third parties use the ``kl_filter.rules`` entry-point group.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Literal

import numpy as np

from kl_filter.core.errors import KLFilterError
from kl_filter.core.registry import Registry
from kl_filter.rules.threshold import exact_count, keep_mask, kth_index

log = logging.getLogger(__name__)
SATURATION_WARN_SHARE = 0.01
MAX_BINS = 10_000_000  # a histogram of more bins than that is a typo, not a choice (and 80 MB per count array)
MAX_RESAMPLE = 2**53   # draw positions are float64: past this, counts would not be exact
Then = Literal["pool", "survivors"]


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


def check_cut(what: str, fraction: float | None, threshold: float | None, prefix: str = "") -> None:
    """Exactly one of ``--{prefix}fraction`` / ``--{prefix}threshold``, each in range (DataComp's check): the one
    definition of the cut check."""
    if (fraction is None) == (threshold is None):
        raise KLFilterError(f"{what} needs exactly one of --{prefix}fraction or --{prefix}threshold")
    if fraction is not None and not 0.0 < fraction <= 1.0:
        raise KLFilterError(f"--{prefix}fraction must be in (0, 1], got {fraction}")
    if threshold is not None and not np.isfinite(threshold):
        raise KLFilterError(f"--{prefix}threshold must be a finite number, got {threshold}")
    if threshold is not None and abs(threshold) > float(np.finfo(np.float32).max):  # 1e300: a float32 overflow
        raise KLFilterError(f"--{prefix}threshold must be within float32's range (score columns are float32: "
                            f"|t| <= 3.4e38), got {threshold}")


# ---- what a rule resolves against --------------------------------------------------------------------------------
@dataclass
class ShardScores:
    """One shard's uids and the columns a filter's rules read (the record shape between score and rules)."""

    uids: np.ndarray
    columns: dict


@dataclass
class Resolved:
    """A rule decided over the whole pool: its piece for each shard, and what the sidecar records."""

    rule: "Rule"
    pieces: list
    facts: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Before:
    """The rules listed before rule ``index`` and their pieces: what a ``then`` rule is decided among."""

    index: int
    resolved: tuple = ()

    def steps(self, j: int) -> list:
        """Shard ``j``'s (rule, piece) pairs: what travels with its task."""
        return [(r.rule, r.pieces[j]) for r in self.resolved]


def survivors(s: ShardScores, steps: list) -> np.ndarray | None:
    """The rows of one shard that every step keeps (None: no step, every row)."""
    if not steps:
        return None
    keep = np.ones(len(s.uids), dtype=bool)
    for rule, piece in steps:
        keep &= rule.mask(s, piece)
    return keep


@dataclass
class PoolScores:
    """The whole pool's :class:`ShardScores`, as handles where the engine keeps them, and the verbs rules resolve
    with: each runs a small function where a shard lives and brings back only its answer."""

    handles: list
    engine: Any
    sizes: list
    seed: int
    ceilings: dict = field(default_factory=dict)  # column -> largest attainable value (from its scorer)

    @property
    def n(self) -> int:
        return int(sum(self.sizes))

    def apply(self, fn, before: Before | None = None) -> list:
        """``fn(shard_scores, survivors)`` per shard, in shard order (``survivors``: None for every row)."""
        steps = [before.steps(j) if before else [] for j in range(len(self.handles))]
        return self.apply_pieces(lambda s, st: fn(s, survivors(s, st)), steps)

    def apply_pieces(self, fn, pieces: list) -> list:
        """``fn(shard_scores, piece)`` per shard with that shard's piece (of a resolved rule, say)."""
        return self.engine.apply(lambda it: fn(it[0], it[1]), list(zip(self.handles, pieces)))

    def count(self, before: Before | None) -> int:
        """Rows that survive ``before`` (the pool's rows when nothing came before)."""
        return int(sum(self.apply(lambda s, m: len(s.uids) if m is None else int(m.sum()), before)))

    def kth_largest(self, column: str, k: int, before: Before | None = None):
        """The value at position ``k`` of ``column`` sorted descending over the survivors, exactly, without
        gathering the column (:mod:`.kth`)."""
        from kl_filter.rules.kth import kth_largest

        def mapper(fn, _):
            return self.apply(lambda s, m: fn(s.columns[column] if m is None else s.columns[column][m]), before)

        first = self.engine.apply(lambda s: s.columns[column].dtype, self.handles[:1])
        return kth_largest(self.handles, k, first[0] if first else np.float32, mapper=mapper)

    def gather(self, fn, before: Before | None = None) -> np.ndarray:
        """``fn(shard_scores, survivors)`` of every shard concatenated in pool order (one whole column)."""
        return np.concatenate(self.apply(fn, before)) if self.handles else np.empty(0)

    def split(self, values: np.ndarray) -> list:
        """A pool-order array cut back into per-shard pieces."""
        return np.split(values, np.cumsum(self.sizes)[:-1]) if self.sizes else []

    def rng(self, index: int) -> np.random.Generator:
        """The seeded generator of rule ``index`` (the same draws for any engine and worker count)."""
        return np.random.default_rng([self.seed, index])


# ---- the protocol -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Rule:
    """Base class of rules: ``column`` (or ``score``, whose single output it is) is what the rule reads.

    column: the column the cut reads (a pool column, or one of its scorer's outputs when it writes several)
    """

    column: str | None = None
    score: Any = field(default=None, kw_only=True, compare=False)  # a Scorer: the column is its output
    name: ClassVar[str] = ""
    repeats: ClassVar[bool] = False  # draws() gives copies per row: the rule must come last (and no refine)

    def __post_init__(self):
        if self.score is not None:
            outs = tuple(self.score.outputs())
            if self.column is None:
                if len(outs) != 1:
                    raise KLFilterError(f"{type(self).__name__}(score={self.score.name}) reads one column: "
                                        f"give column= one of {', '.join(outs)}")
                object.__setattr__(self, "column", outs[0])
            elif self.column not in outs:
                raise KLFilterError(f"{type(self).__name__}: scorer {self.score.name!r} writes {', '.join(outs)}, "
                                    f"not {self.column!r}")
        if not self.column:
            raise KLFilterError(f"{type(self).__name__} needs a column or a score")

    # what the runner asks
    def scorers(self) -> tuple:
        """The scorers whose columns the rule reads (computed by the score stage)."""
        return (self.score,) if self.score is not None else ()

    def reads(self) -> tuple[str, ...]:
        """The columns the rule reads (the filter's ``score()`` returns them by default)."""
        return (self.column,)

    def resolve(self, pool: PoolScores, before: Before) -> Resolved:
        raise NotImplementedError

    def mask(self, s: ShardScores, piece) -> np.ndarray:
        raise NotImplementedError

    def counts(self, s: ShardScores, piece) -> dict:
        return {"kept_by_rule": int(self.mask(s, piece).sum())}

    def draws(self, s: ShardScores, piece) -> np.ndarray | None:
        return None

    def label(self, facts: dict) -> str:
        return f"{self.name} {self.column}"

    def describe(self) -> dict:
        """The rule's parameters as the sidecar records them."""
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.compare}  # scorers: in "scores"
        return {"rule": self.name, **{k: getattr(v, "value", v) for k, v in values.items()}}


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


# ---- the loop the runner runs ---------------------------------------------------------------------------------------
def resolve_rules(rules, pool: PoolScores) -> list[Resolved]:
    """Every rule over the whole pool, in order (a ``then`` rule among what the ones before it keep), with its
    per-shard counters summed into its facts."""
    out: list[Resolved] = []
    for i, rule in enumerate(rules):
        r = rule.resolve(pool, Before(i, tuple(out)))
        r.facts = {**rule.describe(), **r.facts}
        per = pool.apply_pieces(rule.counts, r.pieces)
        for k in per[0] if per else {}:
            r.facts[k] = int(sum(p[k] for p in per))
        _warn(rule, r.facts, pool.n)
        out.append(r)
    return out


def _warn(rule: Rule, facts: dict, n: int) -> None:
    sat = facts.get("saturated")
    if sat is not None and sat > SATURATION_WARN_SHARE * max(n, 1):
        log.warning("%d of %d rows (%.1f%%) of %r saturate at log N = %.4f: the reference sample is too small for this "
                    "pool and many rows tie (use more samples, or --ties exact)", sat, n, 100 * sat / n, rule.column,
                    facts["ceiling"])
    if facts.get("nan"):
        log.warning("%d rows have NaN in %r: they are never kept", facts["nan"], rule.column)


def check_rules(rules, refine: bool, who: str) -> None:
    """A rule that repeats rows comes last, at most once, and never with a refine step (it would drop draws)."""
    repeat = [i for i, r in enumerate(rules) if r.repeats]
    if len(repeat) > 1:
        raise KLFilterError(f"filter {who!r} has {len(repeat)} Resample rules; one at most")
    if repeat and repeat[0] != len(rules) - 1:
        raise KLFilterError(f"filter {who!r}: a Resample rule draws among the rows the rules before it keep: "
                            "it comes last")
    if repeat and refine:
        raise KLFilterError(f"filter {who!r}: a Resample rule cannot be combined with a refine step, which would "
                            "drop draws after they are made")


RULES = Registry("rule", "kl_filter.rules", {
    "top": "kl_filter.rules.base:Top",
    "keep": "kl_filter.rules.base:Keep",
    "uniform": "kl_filter.rules.base:Uniform",
    "resample": "kl_filter.rules.base:Resample",
    "top_per_group": "kl_filter.rules.top_per_group:TopPerGroup",
})
