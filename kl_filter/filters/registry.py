"""Filter registry: built-ins by name (imported lazily), third-party filters in the ``kl_filter.filters``
entry-point group (see :mod:`kl_filter.core.registry`)::

    [project.entry-points."kl_filter.filters"]
    my_filter = "my_package.filters:MyFilter"

Every registered scorer (built-in or from the ``kl_filter.scorers`` group) is a filter too, under its own name,
unless a filter takes that name: a top cut on its column (:func:`kl_filter.filters.presets.scorer_cut`).
"""

from __future__ import annotations

from kl_filter.core.errors import KLFilterError
from kl_filter.core.registry import Registry

ENTRY_POINT_GROUP = "kl_filter.filters"

FILTERS = Registry("filter", ENTRY_POINT_GROUP, {
    "no_filter": "kl_filter.filters.datacomp:NoFilter",
    "basic_filter": "kl_filter.filters.datacomp:BasicFilter",
    "clip_score": "kl_filter.filters.datacomp:ClipScore",
    "laion2b": "kl_filter.filters.datacomp:Laion2B",
    "text_based": "kl_filter.filters.text_based:TextBased",
    "image_based": "kl_filter.filters.image_based:ImageBased",
    "image_based_intersect_clip_score": "kl_filter.filters.image_based:ImageBasedIntersectClipScore",
    "cuts": "kl_filter.filters.cuts:Cuts",
    "kl": "kl_filter.filters.presets:KL",
    "negcliploss": "kl_filter.filters.presets:NegCLIPLoss",
    "semdedup": "kl_filter.filters.presets:SemDeDup",
    "iwl": "kl_filter.filters.presets:IWL",
})


def register(name: str, target, overwrite: bool = False) -> None:
    """Register a filter class (or a ``"module:Class"`` string) under ``name``."""
    FILTERS.register(name, target, overwrite)


def list_filters() -> list[str]:
    """Every filter name: the registered filters and the scorers (each a top cut on its column)."""
    from kl_filter.scorers.registry import SCORERS

    return sorted(set(FILTERS.names()) | set(SCORERS.names()))


def get_filter_class(name: str):
    from kl_filter.scorers.registry import SCORERS

    if name in FILTERS.names():
        return FILTERS.get(name)
    if name in SCORERS.names():
        from kl_filter.filters.presets import scorer_cut

        return scorer_cut(name)
    raise KLFilterError(f"unknown filter --name {name!r}; known: {', '.join(list_filters())}")


def build_filter(name: str, params: dict | None = None, *, source: str | None = None, **kwargs):
    """A filter instance from its name and parameters (a dict, or keywords: ``build_filter("clip_score",
    arch="l14", fraction=0.3)``), validated against its ``__init__`` signature (unknown key, wrong type, value
    outside its choices, missing required parameter: one-line :class:`~kl_filter.core.errors.KLFilterError`,
    prefixed with ``source``, e.g. a recipe file)."""
    return FILTERS.build_class(get_filter_class(name), name, {**(params or {}), **kwargs}, source)
