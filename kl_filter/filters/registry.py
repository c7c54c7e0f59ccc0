"""Filter registry: built-ins by name (imported lazily), third-party filters through entry points.

Third-party packages expose filters in the ``kl_filter.filters`` entry-point group::

    [project.entry-points."kl_filter.filters"]
    my_filter = "my_package.filters:MyFilter"

A name is never silently overwritten: registering a taken name raises unless ``overwrite=True``.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from ..errors import KLFilterError

ENTRY_POINT_GROUP = "kl_filter.filters"

# name -> "module:Class" (lazy, so `import kl_filter` stays light)
_BUILTINS = {
    "no_filter": "kl_filter.filters.datacomp:NoFilter",
    "basic_filter": "kl_filter.filters.datacomp:BasicFilter",
    "clip_score": "kl_filter.filters.datacomp:ClipScore",
    "laion2b": "kl_filter.filters.datacomp:Laion2B",
    "text_based": "kl_filter.filters.text_based:TextBased",
    "image_based": "kl_filter.filters.image_based:ImageBased",
    "image_based_intersect_clip_score": "kl_filter.filters.image_based:ImageBasedIntersectClipScore",
    "kl": "kl_filter.filters.kl:KLFilter",
}
_registry: dict[str, object] = dict(_BUILTINS)
_entry_points_loaded = False


def register(name: str, target, overwrite: bool = False) -> None:
    """Register a filter class (or a ``"module:Class"`` string) under ``name``."""
    _load_entry_points()
    if name in _registry and not overwrite and _registry[name] != target:
        raise KLFilterError(f"filter name {name!r} is already registered ({_registry[name]!r})")
    _registry[name] = target


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in _registry and _registry[ep.name] != ep.value:
            raise KLFilterError(f"entry point {ep.value!r} tries to reuse the filter name {ep.name!r}")
        _registry[ep.name] = ep.value


def list_filters() -> list[str]:
    _load_entry_points()
    return sorted(_registry)


def get_filter_class(name: str):
    _load_entry_points()
    if name not in _registry:
        raise KLFilterError(f"unknown filter --name {name!r}; known: {', '.join(sorted(_registry))}")
    target = _registry[name]
    if isinstance(target, str):
        mod, _, attr = target.partition(":")
        try:
            target = getattr(importlib.import_module(mod), attr)
        except (ImportError, AttributeError) as e:
            raise KLFilterError(f"filter {name!r} cannot be loaded from {_registry[name]!r} ({e})") from e
        _registry[name] = target
    return target


def build_filter(name: str, **params):
    """Instantiate a registered filter; unknown or invalid parameters raise a one-line error."""
    cls = get_filter_class(name)
    try:
        return cls(**params)
    except TypeError as e:
        raise KLFilterError(f"filter {name!r}: {e}") from e
