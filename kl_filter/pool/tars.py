"""The pool's image shards: webdataset tars (DataComp: ``{:08d}.tar``, samples of ``.jpg``/``.txt``/``.json``).

A sample is the run of consecutive members sharing a key: the member path up to the first dot of its basename
(webdataset's grouping); members whose basename starts with a dot (``._x.jpg`` from macOS archivers) are not
samples. :func:`read_samples` streams a tar (one sample in memory at a time) and keeps every extension as
written, so a resharder can copy samples byte for byte. Shard directories are fsspec paths or URLs
(``s3://bucket/shards``, ``memory://``, a local path), as DataComp's resharder accepts; tars are read as streams,
never seeked.

Why ``tarfile`` here and not webdataset's readers: this module serves the base install (``reshard``, ``inspect``'s
thumbnails), which has no webdataset, and ``import webdataset`` imports torch: 11.5 s against 0.2 s for ``tarfile``
on the project's shared 2-core machine. Reading, the two are within noise of each other: webdataset's
``tar_file_iterator`` + ``group_by_keys`` on the same open files took 1.16x and 0.98x this reader's time in two
runs, and gave the same samples (``benchmarks/bench_tars.py``, ``results/bench_tars.md``).
"""

from __future__ import annotations

import os
import re
import tarfile

from kl_filter.core.errors import KLFilterError
from kl_filter.core.fspath import open_file
from kl_filter.pool.paths import child_path, open_dir

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")  # image members a sample may carry, in order of preference


def split_name(name: str) -> tuple[str, str]:
    """``"dir/000012.jpg"`` → ``("dir/000012", "jpg")``."""
    base = os.path.basename(name)
    dirname = os.path.dirname(name)
    key, _, ext = base.partition(".")
    return (f"{dirname}/{key}" if dirname else key), ext


def list_tars(shards_dir: str, pattern: str = r"[^.].*\.tar", required: bool = True) -> list[str]:
    """The tars in ``shards_dir`` whose name matches ``pattern`` (DataComp's: ``r"\\d+\\.tar"``), sorted by name:
    local paths for a local directory, full URLs for a remote one. A missing directory is an error, and so is
    an empty listing when ``required``."""
    fs, root = open_dir(shards_dir, "shards directory")
    try:
        names = sorted(os.path.basename(p.rstrip("/")) for p in fs.ls(root, detail=False))
    except OSError as e:
        raise KLFilterError(f"cannot list the shards directory ({e})", shards_dir) from e
    names = [n for n in names if re.fullmatch(pattern, n)]
    if required and not names:
        raise KLFilterError("no .tar shards found", shards_dir)
    return [child_path(fs, root, n) for n in names]


def read_samples(path: str):
    """Samples of one webdataset tar (a path or fsspec URL), in order: ``(key, {ext: bytes})``. A local path that
    is not a regular file (a FIFO would block forever, a dangling symlink) is one line, never opened."""
    from kl_filter.core.fspath import is_local, url_to_fs
    from kl_filter.core.npyfile import local_file_problem

    if is_local(path):
        problem = local_file_problem(url_to_fs(path)[1])
        if problem:
            raise KLFilterError(problem, path)
    cur_key, cur = None, {}
    with open_file(path, "rb") as f, tarfile.open(fileobj=f, mode="r|*") as tf:
        for m in tf:
            if not m.isfile() or os.path.basename(m.name).startswith("."):
                continue
            key, ext = split_name(m.name)
            if key != cur_key and cur:
                yield cur_key, cur
                cur = {}
            cur_key = key
            cur[ext] = tf.extractfile(m).read()
    if cur:
        yield cur_key, cur
