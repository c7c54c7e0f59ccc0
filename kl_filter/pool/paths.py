"""Directories behind a local path or an fsspec URL: open one, name the files in it.

Shared by the metadata reader (``<shard>.parquet``/``.npz``) and the image-tar reader, so both accept the same
paths and say the same thing when a directory is missing.
"""

from __future__ import annotations

import os

from fsspec.implementations.local import LocalFileSystem

from kl_filter.core.errors import KLFilterError
from kl_filter.core.fspath import url_to_fs


def open_dir(url: str, what: str):
    """``(fs, root)`` of an existing directory; a one-line error naming ``url`` when it cannot be opened or is
    missing (``what``: "metadata directory", "shards directory")."""
    fs, root = url_to_fs(url)  # a local path stays a plain path; an unknown protocol is one line
    try:
        exists = fs.isdir(root)
    except (ValueError, ImportError, OSError) as e:
        raise KLFilterError(f"cannot open {what} ({e})", url) from e
    if not exists:
        raise KLFilterError(f"{what} does not exist", url)
    return fs, root


def child_path(fs, root: str, name: str) -> str:
    """A file of the directory: a plain path for a local one, a full URL (with its protocol) for a remote one."""
    if isinstance(fs, LocalFileSystem):
        return os.path.join(root, name)
    return fs.unstrip_protocol(f"{root.rstrip('/')}/{name}")
