"""The filter plugin interface.

A filter answers three small questions; the framework (:mod:`kl_filter.selection.runner`) owns reading,
parallelism, global thresholds, counters and writing.

1. ``score(data) -> {column: array[n]}``: cheap per-row numbers or booleans for one shard (vectorised).
2. ``rules() -> [Rule, ...]``: how those columns become keep/drop. ``Top`` rules take a fraction of the WHOLE
   pool (DataComp's rule: threshold = value at ``int(n·f)`` of the scores sorted descending, keep ``>=``),
   ``Keep`` rules keep rows whose boolean column is true, ``Uniform`` flattens a score's histogram.
   Every rule is evaluated over the whole pool independently, then the rules are intersected (SPEC §3).
3. ``refine(data, keep) -> keep`` (optional): expensive per-row checks (language ID, WordNet) run only on
   the rows every rule already keeps. Since the final decision is an AND, the result is identical to
   running the check on every row, and much cheaper.

``setup(pool, ctx)`` runs once before the shards (load models, compute reference statistics or scores).
``columns``/``keys`` declare the parquet columns and npz keys ``score`` reads; ``refine_columns`` those
``refine`` reads. Filters whose ``score``/``refine`` are Python loops (language ID) set
``parallel = "processes"`` so shards run in worker processes instead of threads.

A typical filter is 10–40 lines, e.g. ``clip_score``::

    class ClipScore(Filter):
        name = "clip_score"
        def __init__(self, arch, fraction=None, threshold=None): ...
        columns = property(lambda self: (f"clip_{self.arch}_similarity_score",))
        def score(self, data): return {"clip": data.column(self.columns[0])}
        def rules(self): return [Top("clip", fraction=self.fraction, threshold=self.threshold)]
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np

from ..errors import KLFilterError


@dataclass(frozen=True)
class Keep:
    """Keep rows whose boolean column is true."""

    column: str


@dataclass(frozen=True)
class Top:
    """Keep the top ``fraction`` of the pool by ``column`` (or rows ``>= threshold``).

    ``reverse`` keeps the bottom fraction instead (threshold from ``1 − fraction``, keep ``<=``), as the
    KL paper's code does. ``ties="exact"`` keeps exactly the count the ``>=`` rule keeps when nothing ties
    (``int(n·f) + 1``), breaking ties at the threshold with a seeded random draw.
    """

    column: str
    fraction: float | None = None
    threshold: float | None = None
    reverse: bool = False
    ties: str = "keep"
    ceiling: float | None = None  # largest attainable score (log N for D_KL): rows there are counted


@dataclass(frozen=True)
class Uniform:
    """Flatten the histogram of ``column``: keep about ``ceil(fraction·n)`` rows (SPEC §3, seeded)."""

    column: str
    fraction: float
    num_bins: int = 1000


Rule = Keep | Top | Uniform


def rule_dict(rule: Rule) -> dict:
    return {"rule": type(rule).__name__.lower(), **asdict(rule)}


def check_fraction(value: float | None, flag: str = "--fraction") -> None:
    if value is not None and not (0.0 < value <= 1.0):
        raise KLFilterError(f"{flag} must be in (0, 1], got {value}")


def check_threshold(value: float | None, flag: str = "--threshold") -> None:
    if value is not None and not np.isfinite(value):
        raise KLFilterError(f"{flag} must be a finite number, got {value}")


_DECLARATIONS = {"columns", "keys", "refine_columns", "refine"}


class Filter:
    """Base class of every filter plugin. Subclasses set ``name`` and implement ``score`` and ``rules``."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    columns: tuple[str, ...] = ()
    keys: tuple[str, ...] = ()
    refine_columns: tuple[str, ...] = ()
    parallel: ClassVar[str] = "threads"

    # --- the three questions ---------------------------------------------------------------------------------
    def setup(self, pool, ctx: "RunContext") -> None:  # noqa: F821  (RunContext lives in selection.runner)
        """Once, before any shard: load assets, compute statistics. Default: nothing."""

    def score(self, data) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def rules(self) -> list[Rule]:
        raise NotImplementedError

    refine = None  # optional: refine(self, data, keep: np.ndarray[bool]) -> np.ndarray[bool]

    # --- bookkeeping ----------------------------------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        """Parameters recorded in the sidecar next to the UID file."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_") and k not in _DECLARATIONS}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"
