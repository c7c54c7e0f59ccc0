"""The filter plugin interface. Most filters are rules on scorers' columns and need no class (:mod:`.cuts`); a filter
class is for per-row logic of its own (language ID, WordNet, DataComp's size checks). The runner
(:mod:`kl_filter.runner`) plans and runs statistics → scores → rules → keep on one executor, and owns
reading, parallelism, resume, counters and writing.

What a filter declares (class attributes or properties):

* ``columns`` / ``keys``: the parquet columns and npz keys ``score`` reads; ``refine_columns``: those ``refine``
  reads.
* Parameters: the keyword arguments of ``__init__``, with type annotations and defaults. Flags, recipe keys,
  validation and ``list-filters -v`` come from that signature (:mod:`kl_filter.core.params`). Store each parameter
  under its own name (``self.cut = cut``): the sidecar records them.

What a filter answers:

1. ``rules() -> [Rule, ...]``: how columns become keep/drop (:mod:`kl_filter.rules.base`): ``Top`` (DataComp's
   whole-pool fraction or a threshold), ``Keep`` (a boolean column), ``Uniform``, ``Resample``, ... A rule names its
   column by a scorer (``Top(score=KLScorer(arch="l14"), fraction=0.25)``: the runner computes it once per shard,
   resumable, shared through ``--scores_dir``) or by name (a pool column, or one ``score`` returns).
2. ``score(shard) -> {column: array[n]}`` (optional): per-row numbers or booleans of the filter's own. ``shard[name]``
   gives a parquet column (NumPy for numbers, a pyarrow array for strings), an npz key (float16 matrix) or a
   scorer's column (float32). By default: the columns the rules read.
3. ``refine(shard, keep) -> keep`` (optional): expensive per-row checks (language ID, WordNet) run only on the rows
   every rule already keeps. Since the decision is an AND, the result is the same as checking every row.
   ``refine_reason`` names the check in the sidecar's per-step counts.

``check_assets()`` (optional) locates external files (WordNet, centroids) before any work, to fail early with the
install hint (by default the scorers' own check). Filters whose ``score``/``refine`` are Python loops set
``parallel = "processes"``.

A typical filter is 10–30 lines (the README's plugin section shows one; ``tests/test_plugins.py`` installs it).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from kl_filter.engines import Parallel
from kl_filter.rules.base import Rule, check_cut  # noqa: F401  (the rules' vocabulary, importable from here)
from kl_filter.rules.sampling import Resample, Uniform  # noqa: F401
from kl_filter.rules.top import Keep, Top  # noqa: F401


class Filter:
    """Base class of every filter plugin. Subclasses set ``name`` and implement ``rules`` (and ``score`` for
    columns of their own)."""

    name: ClassVar[str] = ""
    columns: tuple[str, ...] = ()
    keys: tuple[str, ...] = ()
    refine_columns: tuple[str, ...] = ()
    refine_reason: ClassVar[str] = "refine"
    parallel: ClassVar[Parallel] = Parallel.THREADS

    # --- what it needs ------------------------------------------------------------------------------------------
    def scorers(self) -> tuple:
        """The scorers whose columns the filter reads: by default those its rules name."""
        unique = {}
        for s in (s for r in self.rules() for s in r.scorers()):
            unique.setdefault((type(s), repr(s)), s)  # one scorer computes a shared column once
        return tuple(unique.values())

    def check_assets(self) -> None:
        """Locate external files before any work (raise :class:`KLFilterError` with the hint); by default each
        scorer's own check (e.g. NormSim's target files)."""
        for s in self.scorers():
            s.check_assets()

    # --- the questions -----------------------------------------------------------------------------------------
    def score(self, shard) -> dict[str, np.ndarray]:
        return {c: shard[c] for r in self.rules() for c in r.reads()}

    def rules(self) -> list[Rule]:
        raise NotImplementedError

    refine = None  # optional: refine(self, shard, keep: np.ndarray[bool]) -> np.ndarray[bool]

    # --- flags ----------------------------------------------------------------------------------------------
    @classmethod
    def flag_params(cls, params: dict) -> list:
        """The flags ``select``/``run`` take for this filter (``params``: a recipe's, for filters whose flags
        depend on it): by default its signature."""
        from kl_filter.core.params import signature_params

        return signature_params(cls)

    @classmethod
    def with_flags(cls, params: dict, given: dict) -> dict:
        """A recipe's parameters overridden by the flags given beside it."""
        return {**params, **given}

    # --- the inspection report ------------------------------------------------------------------------------
    @classmethod
    def report_section(cls):
        """A section of its own in ``kl-filter inspect``'s report: a :class:`kl_filter.filters.report.ReportSection`
        subclass, or None (the default: the report's figures for every score column cover the filter)."""
        return None

    # --- bookkeeping ----------------------------------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        """The declared parameters' values, recorded in the sidecar next to the UID file."""
        from kl_filter.core.params import signature_params

        return {p.name: getattr(self, p.name, None) for p in signature_params(type(self))}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"
