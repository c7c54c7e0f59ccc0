"""Filter registry: built-ins by name (imported lazily), third-party filters in the ``kl_filter.filters``
entry-point group (see :mod:`kl_filter.registry`)::

    [project.entry-points."kl_filter.filters"]
    my_filter = "my_package.filters:MyFilter"
"""

from __future__ import annotations

from ..registry import Registry

ENTRY_POINT_GROUP = "kl_filter.filters"

FILTERS = Registry("filter", ENTRY_POINT_GROUP, {
    "no_filter": "kl_filter.filters.datacomp:NoFilter",
    "basic_filter": "kl_filter.filters.datacomp:BasicFilter",
    "clip_score": "kl_filter.filters.datacomp:ClipScore",
    "laion2b": "kl_filter.filters.datacomp:Laion2B",
    "text_based": "kl_filter.filters.text_based:TextBased",
    "image_based": "kl_filter.filters.image_based:ImageBased",
    "image_based_intersect_clip_score": "kl_filter.filters.image_based:ImageBasedIntersectClipScore",
    "kl": "kl_filter.filters.kl:KLFilter",
    "all_of": "kl_filter.filters.combine:AllOf",
    "iwl": "kl_filter.filters.iwl:IWLFilter",
    "normsim": "kl_filter.filters.normsim:NormSim",
    "vas": "kl_filter.filters.vas:VAS",
    "negcliploss": "kl_filter.filters.negcliploss:NegCLIPLoss",
    "semdedup": "kl_filter.filters.semdedup:SemDeDup",
})


def register(name: str, target, overwrite: bool = False) -> None:
    """Register a filter class (or a ``"module:Class"`` string) under ``name``."""
    FILTERS.register(name, target, overwrite)


def list_filters() -> list[str]:
    return FILTERS.names()


def get_filter_class(name: str):
    return FILTERS.get(name)


def build_filter(name: str, params: dict | None = None, *, source: str | None = None, **kwargs):
    """A filter instance from its name and parameters (a dict, or keywords: ``build_filter("clip_score",
    arch="l14", fraction=0.3)``), validated against its ``__init__`` signature (unknown key, wrong type, value
    outside its choices, missing required parameter: one-line :class:`~kl_filter.errors.KLFilterError`,
    prefixed with ``source``, e.g. a recipe file)."""
    return FILTERS.build(name, {**(params or {}), **kwargs}, source)
