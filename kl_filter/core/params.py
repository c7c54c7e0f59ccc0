"""Plugin parameters from one source of truth: the plugin's ``__init__`` signature.

A filter's (or scorer's) parameters are its ``__init__`` keyword arguments, with type annotations and defaults.
From that one signature come the ``kl-filter select --name X --param value`` flags, the keys a recipe YAML may
hold, their validation, and ``kl-filter list-filters -v``. Supported annotations::

    bool, int, float, str, pathlib.Path (kept as str)    scalar values
    Literal["a", "b"]                                     one of the choices
    float | Literal["pool"]                               a number, or one of the words
    X | None, Optional[X]                                 may be omitted / null
    list[X], tuple[X, ...]                                several values (``--flag a b c`` on the command line;
                                                          a recipe may give one value without the list)

A parameter without a default is required. A class whose ``__init__`` ends in ``**kwargs`` takes its parent's
parameters too, and a class may add parameters it forwards elsewhere with a ``forwarded_params()`` classmethod
(a scorer's, for the filters in :mod:`kl_filter.filters.cuts`). Anything else is passed through unchecked. Validation is strict:
a string ``"false"`` is not a bool, ``1.5`` is not an int, ``true`` is not a number (YAML natives are checked as
they are; command-line strings are converted by the declared type first). Every failure is one
:class:`~kl_filter.core.errors.KLFilterError` line naming the flag, raised before any work.

One-line help per parameter comes from the class docstring: a line ``name: text`` (as in an ``Args:`` or
``Parameters:`` section), else the first docstring line that mentions ``--name``.
"""

from __future__ import annotations

import inspect
import os
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union

from kl_filter.core.errors import KLFilterError

_REQUIRED = inspect.Parameter.empty
_SCALARS = (bool, int, float, str)


@dataclass(frozen=True)
class Param:
    """One declared parameter."""

    name: str
    base: type | None            # bool, int, float or str; None = unchecked
    default: Any = _REQUIRED
    optional: bool = False       # None is accepted
    choices: tuple | None = None
    many: bool = False           # a list of ``base``
    help: str = ""
    words: tuple = ()            # strings accepted besides a ``base`` number (``float | Literal["pool"]``)

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED

    @property
    def flag(self) -> str:
        return f"--{self.name}"

    def type_name(self) -> str:
        t = "{" + ",".join(map(str, self.choices)) + "}" if self.choices else (self.base.__name__ if self.base else "any")
        t = "|".join((t, *self.words))
        t = f"list[{t}]" if self.many else t
        return f"{t} | None" if self.optional else t


def _unwrap(annotation) -> tuple[type | None, bool, tuple | None, bool, tuple]:
    """(base type, optional, choices, many, words) of an annotation."""
    optional = False
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional = len(args) < len(typing.get_args(annotation))
        words = tuple(w for a in args if typing.get_origin(a) is Literal for w in typing.get_args(a))
        numbers = [a for a in args if a in (int, float)]
        if len(numbers) == 1 and len(args) == 2 and words and all(isinstance(w, str) for w in words):
            return numbers[0], optional, None, False, words  # a number, or one of the words
        if len(args) != 1:
            return None, optional, None, False, ()
        annotation, origin = args[0], typing.get_origin(args[0])
    many = False
    if origin in (list, tuple) or annotation in (list, tuple):
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        many, annotation = True, (args[0] if len(args) == 1 else str)
        origin = typing.get_origin(annotation)
    if origin is Literal:
        choices = typing.get_args(annotation)
        return type(choices[0]), optional, choices, many, ()
    if annotation is Path or annotation is os.PathLike:
        annotation = str
    return (annotation if annotation in _SCALARS else None), optional, None, many, ()


def _docs(cls) -> dict[str, str]:
    text = inspect.cleandoc(cls.__doc__ or "")
    out = {}
    for line in text.splitlines():
        m = re.match(r"^\s*(?:--)?(\w+)(?:\s*\([^)]*\))?\s*:\s+(\S.*)$", line)
        if m:
            out.setdefault(m.group(1), m.group(2).strip())
    return out


def _mentions(cls, name: str) -> str:
    for line in inspect.cleandoc(cls.__doc__ or "").splitlines():
        if re.search(rf"--{re.escape(name)}\b", line):
            return line.strip()
    return ""


def signature_params(cls) -> list[Param]:
    """Every parameter ``cls(**params)`` takes, in signature order (a ``**kwargs`` forwards to the parent)."""
    out: dict[str, Param] = {}
    forwards = False
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        if init is object.__init__:
            break
        try:
            hints = typing.get_type_hints(init)
        except Exception:  # noqa: BLE001 - an annotation that does not resolve: treat the value as unchecked
            hints = {}
        docs = {**_docs(klass), **_docs(cls)}
        forwards = False
        for p in list(inspect.signature(init).parameters.values())[1:]:
            if p.kind is p.VAR_KEYWORD:
                forwards = True
                continue
            if p.kind is p.VAR_POSITIONAL or p.name in out:
                continue
            base, optional, choices, many, words = _unwrap(hints.get(p.name, Any))
            optional = optional or p.default is None
            out[p.name] = Param(p.name, base, p.default, optional, choices, many,
                                docs.get(p.name) or _mentions(cls, p.name), words)
        if not forwards:
            break
    if forwards and hasattr(cls, "forwarded_params"):
        for p in cls.forwarded_params():
            out.setdefault(p.name, p)
    return list(out.values())


def _check_scalar(p: Param, v):
    """``v`` as ``p.base``, or a one-line complaint."""
    want = p.base
    if want is None or v in p.words:
        return v
    if want is bool:
        ok = isinstance(v, bool)
    elif want is int:
        ok = isinstance(v, int) and not isinstance(v, bool)
    elif want is float:
        ok = isinstance(v, (int, float)) and not isinstance(v, bool)
        v = float(v) if ok else v
    else:
        if isinstance(v, os.PathLike):
            v = os.fspath(v)
        ok = isinstance(v, str)
    if not ok:
        words = "".join(f" or {w}" for w in p.words)
        raise ValueError(f"expected {want.__name__}{words}, got {type(v).__name__} {v!r}")
    if p.choices is not None and v not in p.choices:
        raise ValueError(f"must be one of {', '.join(map(str, p.choices))}, got {v!r}")
    return v


def check_value(p: Param, v):
    """A native value (from YAML or Python) checked against ``p``; raises ValueError with the reason."""
    if v is None:
        if p.optional:
            return None
        raise ValueError("may not be null")
    if p.many:
        return [_check_scalar(p, x) for x in (v if isinstance(v, (list, tuple)) else [v])]
    return _check_scalar(p, v)


def parse_string(p: Param, raw: str):
    """A command-line string converted by the declared type (bool flags never get here)."""
    if raw in p.words:
        return raw
    if p.base is int:
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"expected an integer, got {raw!r}") from None
    if p.base is float:
        try:
            return float(raw)
        except ValueError:
            raise ValueError(f"expected a number{''.join(f' or {w}' for w in p.words)}, got {raw!r}") from None
    return raw


def validate(cls, params: dict, name: str | None = None, source: str | None = None, partial: bool = False) -> dict:
    """``params`` checked against ``cls``'s signature: unknown keys, missing required ones (unless ``partial``:
    flags may still supply them), wrong types and values outside their choices raise one line (prefixed with
    ``source``, e.g. the recipe file)."""
    name = name or getattr(cls, "name", None) or cls.__name__
    declared = {p.name: p for p in signature_params(cls)}
    unknown = [k for k in params if k not in declared]
    if unknown:
        takes = ", ".join(p.flag for p in declared.values()) or "no options"
        raise KLFilterError(f"{', '.join('--' + str(k) for k in unknown)} not used by --name {name} "
                            f"(it takes: {takes})", source)
    out = {}
    for k, v in params.items():
        try:
            out[k] = check_value(declared[k], v)
        except ValueError as e:
            raise KLFilterError(f"--{k} (--name {name}): {e}", source) from None
    missing = [p.flag for p in declared.values() if p.required and p.name not in out]
    if missing and not partial:
        raise KLFilterError(f"--name {name} needs {', '.join(missing)}", source)
    return out


def describe(cls) -> list[str]:
    """``--flag TYPE (default ...)  help`` lines for ``kl-filter list-filters -v``."""
    lines = []
    for p in signature_params(cls):
        default = "required" if p.required else f"default {p.default!r}"
        lines.append(f"{p.flag} {p.type_name()} ({default}){'  ' + p.help if p.help else ''}")
    return lines


def add_arguments(parser, params: list[Param], title: str) -> list[Param]:
    """One command-line flag per parameter (values stay strings; :func:`from_args` converts them).

    Bools are ``--flag`` / ``--no_flag``; lists take several values. Defaults are not set here, so only the
    flags a user gives reach the plugin (and a recipe's values stay unless overridden).
    """
    import argparse

    group = parser.add_argument_group(title)
    for p in params:
        if p.base is bool and not p.many:
            group.add_argument(p.flag, dest=f"param:{p.name}", action="store_const", const=True,
                               default=argparse.SUPPRESS, help=p.help)
            group.add_argument(f"--no_{p.name}", dest=f"param:{p.name}", action="store_const", const=False,
                               default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        else:
            group.add_argument(p.flag, dest=f"param:{p.name}", nargs="+" if p.many else None,
                               metavar=p.type_name().upper() if not p.choices else None, default=argparse.SUPPRESS,
                               help=f"{p.help} [{p.type_name()}{'' if p.required else f', default {p.default!r}'}]")
    return params


def from_args(args, params: list[Param]) -> dict:
    """The parameters a user gave on the command line, converted by their declared types."""
    out = {}
    for p in params:
        key = f"param:{p.name}"
        if not hasattr(args, key):
            continue
        raw = getattr(args, key)
        try:
            out[p.name] = [parse_string(p, r) for r in raw] if p.many else (
                raw if isinstance(raw, bool) else parse_string(p, raw))
        except ValueError as e:
            raise KLFilterError(f"{p.flag}: {e}") from None
    return out
