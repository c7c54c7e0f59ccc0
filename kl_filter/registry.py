"""A plugin registry: built-ins by name (imported lazily), third-party plugins through an entry-point group.

Filters (:mod:`kl_filter.filters.registry`, group ``kl_filter.filters``), scorers
(:mod:`kl_filter.scores.registry`, group ``kl_filter.scorers``) and rules (:mod:`kl_filter.selection.rules`, group
``kl_filter.rules``) are instances of this one class. A third
party declares, in its ``pyproject.toml``::

    [project.entry-points."kl_filter.filters"]
    my_filter = "my_package.filters:MyFilter"

A name is never silently overwritten: registering a taken name raises unless ``overwrite=True``, and an entry
point reusing a built-in's name is refused. Built-ins are ``"module:Class"`` strings, so listing names imports
nothing.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from .errors import KLFilterError


class Registry:
    def __init__(self, kind: str, group: str, builtins: dict[str, str]):
        self.kind, self.group = kind, group  # kind: "filter", "scorer" or "rule", used in messages
        self._targets: dict[str, object] = dict(builtins)
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
        for ep in entry_points(group=self.group):
            if ep.name in self._targets and self._targets[ep.name] != ep.value:
                raise KLFilterError(f"entry point {ep.value!r} tries to reuse the {self.kind} name {ep.name!r}")
            self._targets[ep.name] = ep.value

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
            except (ImportError, AttributeError) as e:
                raise KLFilterError(f"{self.kind} {name!r} cannot be loaded from {target!r} ({e})") from e
            self._targets[name] = target
        return target

    def build(self, name: str, params: dict | None = None, source: str | None = None):
        """An instance of ``name`` from ``params``, validated against its ``__init__`` signature first
        (unknown key, wrong type, value outside its choices: one-line :class:`KLFilterError`)."""
        return self.build_class(self.get(name), name, params, source)

    @staticmethod
    def build_class(cls, name: str, params: dict | None = None, source: str | None = None):
        """:meth:`build` for a class in hand."""
        from .params import validate

        kwargs = validate(cls, dict(params or {}), name, source=source)
        try:
            return cls(**kwargs)
        except TypeError as e:  # a plugin whose own checks raise TypeError
            raise KLFilterError(f"--name {name}: {e}", source) from e
        except KLFilterError as e:  # the plugin's own checks: say which recipe held the values
            if source and not e.path:
                raise KLFilterError(str(e), source) from e
            raise
