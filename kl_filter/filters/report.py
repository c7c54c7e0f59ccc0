"""A filter's own section of the inspection report (``kl-filter inspect``): the interface.

The report's generic figures (histograms, extremes, correlations, subsets) cover every score column. A filter
whose score files hold more than scores (SemDeDup's cluster ids) or whose rule has a parameter worth sweeping
(SemDeDup's ε) adds a section by returning a :class:`ReportSection` subclass from
:meth:`kl_filter.filters.base.Filter.report_section`. The report asks every registered filter, and for each
section it gets, per report:

1. ``section = cls(columns, provenance)``: ``columns``, the score files' numeric columns (the first shard's);
   ``provenance``, their provenance there (``{column: dict}``). The section takes the columns it recognises;
   :attr:`id_columns` are left out of the score figures and read through :meth:`read_ids` instead;
2. :meth:`read_ids` for each shard's score file (pass 1 and 2), :meth:`start` before pass 2, :meth:`update` per
   shard in shard order (pass 2), then :meth:`figures`: ``figures[key]``, JSON-ready;
3. from ``figures[key]`` alone: :meth:`plots` (PNGs), :meth:`html` (the page's section, after the subsets'
   examples; its link in the page's navigation reads :attr:`title`), :meth:`examples` (the rows shown, which get
   thumbnails) and :meth:`summary` (the lines ``kl-filter inspect`` prints).

``kit`` (given by the report) is how a section draws as the rest of the report does: for :meth:`html`,
``escape``, ``number(v, fmt)``, ``percent``, ``image(path, alt)``, ``table(head, rows, left)``,
``example(row, thumbs)``, ``slug``; for :meth:`plots`, ``pyplot()``, ``png(fig)``, ``slug``.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np


class ReportSection:
    """Base class of a filter's report section (see the module docstring); the defaults add nothing."""

    key: ClassVar[str] = ""    # figures.json's key for the section and the page's anchor
    title: ClassVar[str] = ""  # the navigation link's text

    def __init__(self, columns: list[str], provenance: dict):
        self.id_columns: list[str] = []

    def read_ids(self, table, path: str) -> dict[str, np.ndarray]:
        """``{id column: int64[n]}`` of one score file (a pyarrow table holding :attr:`id_columns`), checked."""
        return {}

    def start(self, pairs: int) -> None:
        """Before pass 2; ``pairs``: the examples the section may show (``--dedup_pairs``)."""

    def update(self, shard_index: int, data: dict, texts) -> None:
        """One shard of pass 2: ``data`` holds ``uids``, ``scores`` ``{column: float}`` and ``ids``; ``texts``
        the captions."""

    def figures(self, source, engine, shown, mixed) -> dict:
        """``figures[key]``. ``source``: the report's reader (``pool``, ``scores_dir``, ``score_path(shard)``,
        ``provenance``); ``engine``: maps work over shards; ``shown(uid, score, caption)``: an example row as the
        report shows them; ``mixed``: the columns whose provenance differs between shards."""
        return {}

    @staticmethod
    def plots(fig: dict, kit) -> dict[str, bytes]:
        return {}

    @staticmethod
    def html(fig: dict, plots: set, thumbs: dict, kit) -> list[str]:
        return []

    @staticmethod
    def examples(fig: dict) -> list[dict]:
        return []

    @staticmethod
    def summary(fig: dict) -> list[str]:
        return []
