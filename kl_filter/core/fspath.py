"""Paths and URLs → filesystems, in one place.

A path is a **URL** only when it starts with a protocol: ``s3://bucket/pool``, ``memory://x``, ``file:///data``
(or an fsspec chain whose links are all protocols, ``simplecache::s3://bucket/pool``; after a URL, ``::`` starts
the next link, as in fsspec's ``zip://inner::s3://bucket/a.zip``). Anything else is a plain
local path, taken as it is: ``::`` in a local file name is part of the name, never an fsspec chain (fsspec's own
``fsspec.open``/``url_to_fs`` would split ``run::a.npy`` into two URLs and write to ``run``).

A protocol fsspec does not know, or one whose package is not installed (``s3://`` without ``s3fs``), is one
:class:`~kl_filter.core.errors.KLFilterError` line naming the path, raised when the path is first resolved, which every
command does for all its paths before any work (:mod:`kl_filter.core.outputs`).

Every module turns paths into filesystems through :func:`url_to_fs` or :func:`open_file`, never through
``fsspec.open`` / ``fsspec.core.url_to_fs`` directly.
"""

from __future__ import annotations

import os
import re

from kl_filter.core.errors import KLFilterError

# proto://...  or  proto::proto::proto://...  (a protocol: a letter, then letters, digits, + - .)
_PROTO = r"[A-Za-z][A-Za-z0-9+.\-]*"
_URL = re.compile(rf"^((?:{_PROTO}::)*)({_PROTO})://")


def is_url(path) -> bool:
    """True when ``path`` names a protocol (``s3://...``, ``memory://...``, ``file://...``)."""
    return isinstance(path, str) and _URL.match(path) is not None


def is_local(path) -> bool:
    """True for a plain path and for ``file://`` / ``local://`` URLs."""
    if not is_url(path):
        return True
    m = _URL.match(path)
    return not m.group(1) and m.group(2).lower() in ("file", "local")


def _fs_class(protocol: str, path: str):
    import fsspec

    try:
        return fsspec.get_filesystem_class(protocol)
    except ValueError as e:
        raise KLFilterError(f"unknown protocol {protocol!r} (a local path has no 'protocol://' prefix)", path) from e
    except ImportError as e:
        raise KLFilterError(f"protocol {protocol!r} needs a package that is not installed ({e})", path) from e


def url_to_fs(path):
    """``(filesystem, path on it)``. A local path gives ``LocalFileSystem`` and the absolute path unchanged
    otherwise (``::``, ``#`` and ``?`` stay part of the name); a URL gives its protocol's filesystem."""
    from fsspec.implementations.local import LocalFileSystem

    path = os.fspath(path)
    m = _URL.match(path)
    if m is None:
        return LocalFileSystem(), os.path.abspath(path)
    chain, protocol = m.group(1), m.group(2).lower()
    for link in [c for c in chain.split("::") if c]:  # every link of a chain must be a usable protocol
        _fs_class(link.lower(), path)
    cls = _fs_class(protocol, path)
    later = path[m.end():].split("::")[1:]  # fsspec's other chain form: zip://inner::outer (a URL or a local file)
    for link in later:
        if _URL.match(link):
            _fs_class(_URL.match(link).group(2).lower(), path)
    try:
        if chain or later:  # (zip://x::/a.parquet was a ZipFileSystem on no file at all: "Is a directory: '.'")
            import fsspec

            return fsspec.core.url_to_fs(path)
        fs = cls(**cls._get_kwargs_from_urls(path))
        return fs, cls._strip_protocol(path)
    except KLFilterError:
        raise
    except Exception as e:  # noqa: BLE001 - a backend's own failure to connect or parse: one line
        raise KLFilterError(f"cannot open ({str(e).splitlines()[0][:200] if str(e) else type(e).__name__})",
                            path) from e


def open_file(path, mode: str = "rb", **kwargs):
    """``open`` for a local path or a URL (see :func:`url_to_fs`)."""
    fs, p = url_to_fs(path)
    return fs.open(p, mode, **kwargs)


def check_path(path) -> None:
    """Resolve ``path`` once so an unknown or uninstalled protocol is reported now, before any work."""
    if path is not None:
        url_to_fs(path)
