"""The filter plugin interface: a filter declares what it needs and answers small questions; the runner
(:mod:`kl_filter.selection.runner`) plans and runs statistics → scores → global rules → select on one executor,
and owns reading, parallelism, resume, counters and writing.

What a filter declares (class attributes or properties):

* ``columns`` / ``keys``: the parquet columns and npz keys ``score`` reads; ``refine_columns``: those ``refine``
  reads.
* ``scorers()``: derived score columns, as instances of registered scorers (:mod:`kl_filter.scores`), e.g. the
  KL scorer for ``kl_l14_txt``. Each scorer declares the reference statistics it needs; the runner computes or
  reuses those statistics, computes each column once per shard (resumable, reused by any filter that asks for
  the same column with the same provenance in the same ``--scores_dir``) and hands the columns to ``score``.
* Parameters: the keyword arguments of ``__init__``, with type annotations and defaults. Flags, recipe keys,
  validation and ``list-filters -v`` come from that signature (:mod:`kl_filter.params`). Store each parameter
  under its own name (``self.cut = cut``): the sidecar records them.

What a filter answers:

1. ``score(shard) -> {column: array[n]}``: per-row numbers or booleans for one shard (vectorised). ``shard[name]``
   gives a parquet column (NumPy for numbers, a pyarrow array for strings), an npz key (float16 matrix) or a
   derived score column (float32).
2. ``rules() -> [Rule, ...]``: how those columns become keep/drop. ``Top`` takes a fraction of the WHOLE pool
   (DataComp's rule: threshold = value at ``int(n·f)`` of the scores sorted descending, keep ``>=``) or a
   threshold, ``Keep`` keeps rows whose boolean column is true, ``Uniform`` flattens a score's histogram. Each
   rule is evaluated over the whole pool independently, then the rules are intersected (SPEC §3).
   ``Resample`` (importance weights) draws rows with replacement ∝ a weight column among the rows the other
   rules keep; the UID file then repeats uids.
3. ``refine(shard, keep) -> keep`` (optional): expensive per-row checks (language ID, WordNet) run only on the
   rows every rule already keeps. Since the decision is an AND, the result is the same as checking every row.
   ``refine_reason`` names the check in the sidecar's per-step counts.

``check_assets()`` (optional) locates external files (WordNet, centroids) before any work, to fail early with
the install hint. Filters whose ``score``/``refine`` are Python loops set ``parallel = Parallel.PROCESSES``.

A typical filter is 10–30 lines::

    class Toy(Filter):
        '''Keep rows whose L/14 CLIP score is at least --cut.'''

        name = "toy"
        columns = ("clip_l14_similarity_score",)

        def __init__(self, cut: float = 0.5):
            self.cut = cut

        def score(self, shard):
            return {"s": shard["clip_l14_similarity_score"]}

        def rules(self):
            return [Top("s", threshold=self.cut)]
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np

from ..engines import Parallel
from ..errors import KLFilterError


class Ties(str, enum.Enum):
    """How a ``Top`` fraction treats rows tied at the threshold."""

    KEEP = "keep"    # DataComp's rule: keep every row >= the threshold (a few more than asked when values tie)
    EXACT = "exact"  # keep exactly the asked count, ties at the threshold broken by a seeded draw


@dataclass(frozen=True)
class Keep:
    """Keep rows whose boolean column is true."""

    column: str


@dataclass(frozen=True)
class Top:
    """Keep the top ``fraction`` of the pool by ``column`` (or rows ``>= threshold``).

    ``reverse`` keeps the bottom fraction instead (threshold from ``1 − fraction``, keep ``<=``), as the
    KL paper's code does. ``ties=Ties.EXACT`` keeps exactly the count the ``>=`` rule keeps when nothing ties
    (``int(n·f) + 1``), breaking ties at the threshold with a seeded random draw. ``ceiling`` is the largest
    attainable score (rows there are counted as saturated); the runner fills it in from the column's scorer.
    """

    column: str
    fraction: float | None = None
    threshold: float | None = None
    reverse: bool = False
    ties: Ties = Ties.KEEP
    ceiling: float | None = None

    def __post_init__(self):
        object.__setattr__(self, "ties", Ties(self.ties))
        if (self.fraction is None) == (self.threshold is None):
            raise KLFilterError(f"Top({self.column!r}) needs exactly one of fraction or threshold")
        check_fraction(self.fraction, f"the fraction of Top({self.column!r})")
        check_threshold(self.threshold, f"the threshold of Top({self.column!r})")


MAX_BINS = 10_000_000  # a histogram of more bins than that is a typo, not a choice (and 80 MB per count array)


@dataclass(frozen=True)
class Uniform:
    """Flatten the histogram of ``column``: keep about ``ceil(fraction·n)`` rows (SPEC §3, seeded)."""

    column: str
    fraction: float
    num_bins: int = 1000

    def __post_init__(self):
        if self.fraction is None:
            raise KLFilterError(f"Uniform({self.column!r}) needs a fraction (--uniform needs --fraction)")
        check_fraction(self.fraction, f"the fraction of Uniform({self.column!r})")
        if not 1 <= self.num_bins <= MAX_BINS:
            raise KLFilterError(f"--num_bins must be in [1, {MAX_BINS:,}], got {self.num_bins}")


MAX_RESAMPLE = 2**53  # draw positions are float64: past this, counts would not be exact


@dataclass(frozen=True)
class Resample:
    """Draw ``n`` rows WITH replacement, with probability ∝ the weight in ``column`` (``log=True``: the column
    holds log-weights, weight = exp(value); ``log=False``: weights >= 0), among the rows every other rule keeps.

    Resolved over the whole pool by SYSTEMATIC resampling seeded by the run's seed
    (:mod:`kl_filter.selection.weights`): a row is drawn floor or ceil of n·p_i times. The UID file repeats a uid
    once per draw (DataComp's resharder upsamples duplicates); the sidecar records the effective sample size
    (Σw)²/Σw², the distinct uids and n. A filter may hold at most one, and no ``refine`` step (it would drop
    draws after the fact). NaN weighs 0; degenerate weights (effective sample under 10 rows) are refused.
    """

    column: str
    n: int
    log: bool = True

    def __post_init__(self):
        if isinstance(self.n, bool) or not isinstance(self.n, (int, np.integer)) or not 1 <= self.n <= MAX_RESAMPLE:
            raise KLFilterError(f"--resample must be a number of rows in [1, 2**53], got {self.n!r}")
        object.__setattr__(self, "n", int(self.n))


Rule = Keep | Top | Uniform | Resample


def rule_dict(rule: Rule) -> dict:
    d = {"rule": type(rule).__name__.lower(), **asdict(rule)}
    if isinstance(rule, Top):
        d["ties"] = rule.ties.value
    return d


def rule_label(rule: Rule, resolved=None) -> str:
    """A short human name for a rule, as the sidecar's per-step counts show it."""
    if isinstance(rule, Keep):
        return f"keep {rule.column}"
    if isinstance(rule, Uniform):
        return f"uniform {rule.column} fraction {rule.fraction:g}"
    if isinstance(rule, Resample):
        return f"resample {rule.column} n {rule.n:,} (systematic, with replacement)"
    op = "<=" if rule.reverse else ">="
    if isinstance(resolved, (int, float)):
        return f"top {rule.column} {op} {resolved:.6g}" + (f" (fraction {rule.fraction:g})" if rule.fraction else "")
    return f"top {rule.column} fraction {rule.fraction:g}"


def check_fraction(value: float | None, flag: str = "--fraction") -> None:
    if value is not None and not (0.0 < value <= 1.0):
        raise KLFilterError(f"{flag} must be in (0, 1], got {value}")


def check_threshold(value: float | None, flag: str = "--threshold") -> None:
    if value is not None and not np.isfinite(value):
        raise KLFilterError(f"{flag} must be a finite number, got {value}")


def check_cut(name: str, fraction: float | None, threshold: float | None, prefix: str = "") -> None:
    """Exactly one of ``--{prefix}fraction`` / ``--{prefix}threshold``, each in range (DataComp's check)."""
    if (fraction is None) == (threshold is None):
        raise KLFilterError(f"{name} needs exactly one of --{prefix}fraction or --{prefix}threshold")
    check_fraction(fraction, f"--{prefix}fraction")
    check_threshold(threshold, f"--{prefix}threshold")


class Filter:
    """Base class of every filter plugin. Subclasses set ``name`` and implement ``score`` and ``rules``."""

    name: ClassVar[str] = ""
    columns: tuple[str, ...] = ()
    keys: tuple[str, ...] = ()
    refine_columns: tuple[str, ...] = ()
    refine_reason: ClassVar[str] = "refine"
    parallel: ClassVar[Parallel] = Parallel.THREADS

    # --- what it needs ------------------------------------------------------------------------------------------
    def scorers(self) -> tuple:
        """Scorer instances whose output columns ``score`` reads as ``shard[column]``. Default: none."""
        return ()

    def check_assets(self) -> None:
        """Locate external files before any work (raise :class:`KLFilterError` with the hint). Default: none."""

    # --- the questions -----------------------------------------------------------------------------------------
    def score(self, shard) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def rules(self) -> list[Rule]:
        raise NotImplementedError

    refine = None  # optional: refine(self, shard, keep: np.ndarray[bool]) -> np.ndarray[bool]

    # --- bookkeeping ----------------------------------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        """The declared parameters' values, recorded in the sidecar next to the UID file."""
        from ..params import signature_params

        return {p.name: getattr(self, p.name, None) for p in signature_params(type(self))}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"


class ScorerCut(Filter):
    """A filter that keeps the top of its one scorer's column: subclasses set ``self._scorer`` (whose single
    output is ``self.column``), ``self.fraction`` and ``self.threshold`` (NormSim, VAS)."""

    def scorers(self):
        return (self._scorer,)

    def score(self, shard):
        return {self.column: shard[self.column]}

    def rules(self):
        return [Top(self.column, self.fraction, self.threshold)]
