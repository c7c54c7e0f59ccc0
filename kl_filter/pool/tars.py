"""The pool's image shards: webdataset tars (DataComp: ``{:08d}.tar``, samples of ``.jpg``/``.txt``/``.json``).

A sample is the run of consecutive members sharing a key: the member path up to the first dot of its basename
(webdataset's grouping). :func:`read_samples` streams a tar (one sample in memory at a time) and keeps every
extension as written, so a resharder can copy samples byte for byte.
"""

from __future__ import annotations

import os
import tarfile

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")  # image members a sample may carry, in order of preference


def split_name(name: str) -> tuple[str, str]:
    """``"dir/000012.jpg"`` → ``("dir/000012", "jpg")``."""
    base = os.path.basename(name)
    dirname = os.path.dirname(name)
    key, _, ext = base.partition(".")
    return (f"{dirname}/{key}" if dirname else key), ext


def read_samples(path: str):
    """Samples of one webdataset tar, in order: ``(key, {ext: bytes})``."""
    cur_key, cur = None, {}
    with tarfile.open(path, "r:*") as tf:
        for m in tf:
            if not m.isfile():
                continue
            key, ext = split_name(m.name)
            if key != cur_key and cur:
                yield cur_key, cur
                cur = {}
            cur_key = key
            cur[ext] = tf.extractfile(m).read()
    if cur:
        yield cur_key, cur
