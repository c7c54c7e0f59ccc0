"""Filters: the generic filter (a list of cuts, :mod:`.cuts`) and its named recipes (:mod:`.presets`), DataComp's
baselines with per-row logic of their own, behind one interface (:mod:`.base`), and the registry."""

from kl_filter.filters.base import Filter
from kl_filter.filters.registry import build_filter, get_filter_class, list_filters, register

__all__ = ["Filter", "build_filter", "get_filter_class", "list_filters", "register"]
