"""Filter plugins: DataComp's baselines and the KL-guided filters, behind one interface (see ``base``)."""

from .base import Filter, Keep, Top, Uniform
from .registry import build_filter, get_filter_class, list_filters, register

__all__ = ["Filter", "Keep", "Top", "Uniform", "build_filter", "get_filter_class", "list_filters", "register"]
