"""A plugin registry: built-ins by name (imported lazily), third-party plugins through an entry-point group.

Filters (:mod:`kl_filter.filters.registry`, group ``kl_filter.filters``), scorers
(:mod:`kl_filter.scorers.registry`, group ``kl_filter.scorers``) and rules (:mod:`kl_filter.rules.base`, group
``kl_filter.rules``) are instances of this one class. A third
party declares, in its ``pyproject.toml``::

    [project.entry-points."kl_filter.filters"]
    my_filter = "my_package.filters:MyFilter"

A name is never silently overwritten: registering a taken name raises unless ``overwrite=True``, and an entry
point reusing a built-in's (or an earlier plugin's) name is ignored with one warning naming both and the
distribution that declares it: that plugin alone is disabled, every other name still works. An entry point that
names something other than a class is one line naming the plugin and its distribution when it is used.
Built-ins are ``"module:Class"`` strings, so listing names imports nothing.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import sys
from importlib.metadata import entry_points

from kl_filter.core.errors import KLFilterError

log = logging.getLogger(__name__)


class Registry:
    def __init__(self, kind: str, group: str, builtins: dict[str, str]):
        self.kind, self.group = kind, group  # kind: "filter", "scorer" or "rule", used in messages
        self._targets: dict[str, object] = dict(builtins)
        self._dists: dict[str, str] = {}  # plugin name -> the distribution that declares it
        self._entry_points_loaded = False

    def register(self, name: str, target, overwrite: bool = False) -> None:
        """Register a class (or a ``"module:Class"`` string) under ``name``."""
        self._load_entry_points()
        if name in self._targets and not overwrite and self._targets[name] != target:
            raise KLFilterError(f"{self.kind} name {name!r} is already registered ({self._targets[name]!r})")
        self._targets[name] = target

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        for ep in _entry_points(self.group):
            dist = _dist_name(ep)
            if ep.name in self._targets and self._targets[ep.name] != ep.value:
                had = self._targets[ep.name]
                owner = f"distribution {self._dists[ep.name]}'s" if ep.name in self._dists else "kl-filter's own"
                log.warning("entry point %s = %r of distribution %s reuses the %s name %r, already %s %r: ignored "
                            "(that plugin is disabled; rename its entry point)", ep.name, ep.value, dist, self.kind,
                            ep.name, owner, had if isinstance(had, str) else getattr(had, "__qualname__", had))
                continue
            self._targets[ep.name] = ep.value
            self._dists[ep.name] = dist

    def distribution(self, name: str) -> str | None:
        """The distribution that declares plugin ``name`` (None: a built-in or one registered in code)."""
        self._load_entry_points()
        return self._dists.get(name)

    def describe(self, name: str) -> str:
        """``kind 'name'`` and, for a plugin, its distribution: how messages name it."""
        dist = self.distribution(name)
        return f"{self.kind} {name!r}" + (f" (distribution {dist})" if dist else "")

    def names(self) -> list[str]:
        self._load_entry_points()
        return sorted(self._targets)

    def get(self, name: str):
        """The class registered under ``name`` (imported on first use)."""
        self._load_entry_points()
        if name not in self._targets:
            raise KLFilterError(f"unknown {self.kind} --name {name!r}; known: {', '.join(sorted(self._targets))}")
        target = self._targets[name]
        if isinstance(target, str):
            mod, _, attr = target.partition(":")
            try:
                target = getattr(importlib.import_module(mod), attr)
            except Exception as e:  # noqa: BLE001 - a plugin's import can fail in any way: one line naming it
                raise KLFilterError(f"{self.describe(name)} cannot be loaded from {target!r} "
                                    f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})") from e
            if not inspect.isclass(target):
                raise KLFilterError(f"{self.describe(name)}: entry point {self._targets[name]!r} names a "
                                    f"{type(target).__name__}, not a class (it must name a {self.kind} class)")
            self._targets[name] = target
        if not inspect.isclass(target):  # registered in code
            raise KLFilterError(f"{self.describe(name)} is a {type(target).__name__}, not a {self.kind} class")
        return target

    def build(self, name: str, params: dict | None = None, source: str | None = None):
        """An instance of ``name`` from ``params``, validated against its ``__init__`` signature first
        (unknown key, wrong type, value outside its choices: one-line :class:`KLFilterError`)."""
        return self.build_class(self.get(name), name, params, source)

    @staticmethod
    def build_class(cls, name: str, params: dict | None = None, source: str | None = None):
        """:meth:`build` for a class in hand."""
        from kl_filter.core.params import validate

        kwargs = validate(cls, dict(params or {}), name, source=source)
        try:
            return cls(**kwargs)
        except TypeError as e:  # a plugin whose own checks raise TypeError
            raise KLFilterError(f"--name {name}: {e}", source) from e
        except KLFilterError as e:  # the plugin's own checks: say which recipe held the values
            if source and not e.path:
                raise KLFilterError(str(e), source) from e
            raise


_SCANNED: dict = {}  # sys.path -> every installed entry point (one scan serves the filter, scorer and rule groups)


def installed_entry_points():
    """Every installed entry point, the distributions scanned once per ``sys.path`` (a scan reads every dist-info on
    it: 12 ms here, and a command's three registries each made one)."""
    key = tuple(sys.path)
    if key not in _SCANNED:
        _SCANNED.clear()
        _SCANNED[key] = entry_points()
    return _SCANNED[key]


def _entry_points(group: str):
    return installed_entry_points().select(group=group)


def _dist_name(ep) -> str:
    """The distribution declaring entry point ``ep`` (as pip names it)."""
    return getattr(getattr(ep, "dist", None), "name", None) or "unknown"
