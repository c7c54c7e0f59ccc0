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

log = logging.getLogger(__name__)
SATURATION_WARN_SHARE = 0.01
Then = Literal["pool", "survivors"]


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
    "top": "kl_filter.rules.top:Top",
    "keep": "kl_filter.rules.top:Keep",
    "uniform": "kl_filter.rules.sampling:Uniform",
    "resample": "kl_filter.rules.sampling:Resample",
    "top_per_group": "kl_filter.rules.top_per_group:TopPerGroup",
})
