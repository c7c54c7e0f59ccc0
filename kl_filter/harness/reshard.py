"""Reshard webdataset image-text tars to the samples of a UID subset, as DataComp's ``resharder.py`` does.

Input: ``{:08d}.tar`` shards whose samples (``<key>.jpg``, ``.txt``, ``.json``, ...) carry their uid in the
json. A sample is kept k times when its uid appears k times in the subset file (duplicates upsample), under
the keys ``<uid>-0 .. <uid>-(k-1)``, like DataComp's resharder. Output: ``{:08d}.tar`` shards of
``shard_size`` samples with ``{:08d}_stats.json`` ({"successes": n}), ``sample_ids.npy`` (a copy of the
subset file) and ``meta.json`` with the fields DataComp's ``train.py`` reads (``output_shard_count``,
``output_shard_format``) and the counts.

Input shards are read and filtered in parallel; one writer takes them in input order, so the output is the
same for any number of workers. Missing input shards (gaps in the numbering) and unreadable ones are
reported in ``meta.json`` and as warnings, not fatal. Every file is written atomically. Input directory,
output directory and subset file may be fsspec URLs (``s3://...``), as with DataComp's resharder.
"""

from __future__ import annotations

import io
import json
import logging
import os
import tarfile

import fsspec
import numpy as np

from ..atomic import atomic_open, makedirs, write_bytes, write_json
from ..errors import KLFilterError
from ..pipeline import run_pipeline
from ..progress import NoProgress
from ..pool.tars import list_tars, read_samples
from ..uids import UID_DTYPE, hex_to_u8u8, load_uids

log = logging.getLogger(__name__)
OUTPUT_FORMAT = "{:08d}.tar"
STATS_FORMAT = "{:08d}_stats.json"


def _keep_from_shard(path: str, subset: np.ndarray) -> tuple[list, int, str | None]:
    """(kept samples with their multiplicity, samples read, error) for one input tar."""
    kept, seen = [], 0
    try:
        for _, sample in read_samples(path):
            seen += 1
            raw = sample.get("json")
            if raw is None:
                continue
            uid = json.loads(raw).get("uid")
            if not isinstance(uid, str) or len(uid) != 32:
                continue
            key = hex_to_u8u8([uid])[0]
            a, b = np.searchsorted(subset, key, "left"), np.searchsorted(subset, key, "right")
            if b > a:
                kept.append((uid, sample, int(b - a)))
    except (tarfile.TarError, OSError, EOFError, ValueError) as e:
        return kept, seen, f"{type(e).__name__}: {e}"
    return kept, seen, None


class _Writer:
    """Fills output tars of ``shard_size`` samples, in the order samples arrive."""

    def __init__(self, out_dir: str, shard_size: int):
        self.out_dir, self.shard_size = out_dir, shard_size
        self.count = self.shards = 0
        self._buf, self._tar, self._n = None, None, 0

    def add(self, key: str, sample: dict) -> None:
        if self._tar is None:
            self._buf = io.BytesIO()
            self._tar = tarfile.open(fileobj=self._buf, mode="w", format=tarfile.USTAR_FORMAT)
        for ext in sorted(sample):
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size, info.mtime, info.mode = len(sample[ext]), 0, 0o444
            self._tar.addfile(info, io.BytesIO(sample[ext]))
        self._n += 1
        self.count += 1
        if self._n == self.shard_size:
            self.flush()

    def flush(self) -> None:
        if self._tar is None:
            return
        self._tar.close()
        name = os.path.join(self.out_dir, OUTPUT_FORMAT.format(self.shards))
        with atomic_open(name, "wb") as f:
            f.write(self._buf.getvalue())
        write_json(os.path.join(self.out_dir, STATS_FORMAT.format(self.shards)), {"successes": self._n})
        self.shards += 1
        self._buf, self._tar, self._n = None, None, 0


def reshard(shards_dir: str, uids: str, out_dir: str, num_workers: int = 1, shard_size: int = 10_000,
            progress=None) -> dict:
    """Keep the subset's samples of every input tar; returns the ``meta.json`` content."""
    if shard_size < 1:
        raise KLFilterError(f"--shard_size must be >= 1, got {shard_size}")
    subset = load_uids(uids)
    if subset.dtype != UID_DTYPE:
        raise KLFilterError(f"dtype is {subset.dtype}, expected {UID_DTYPE}", uids)
    subset = np.sort(subset)
    paths = {os.path.basename(p): p for p in list_tars(shards_dir, r"\d+\.tar", required=False)}
    names = sorted(paths)
    numbers = [int(f[:-4]) for f in names]
    missing = sorted(set(range(max(numbers) + 1)) - set(numbers)) if numbers else []
    if missing:
        log.warning("%d input shards missing (e.g. %s)", len(missing), OUTPUT_FORMAT.format(missing[0]))
    makedirs(out_dir)  # fail before reading any shard
    writer = _Writer(out_dir, shard_size)
    bar = (progress or NoProgress)(desc="reshard", total=len(names))
    counts = {"processed_count": 0, "input_kept": 0}
    failed = {}

    def write(_, name, loaded):
        kept, seen, err = loaded
        if err:
            failed[name] = err
            log.warning("%s: unreadable input shard (%s); its samples are skipped", name, err)
        counts["processed_count"] += seen
        for uid, sample, k in kept:
            counts["input_kept"] += 1
            for j in range(k):
                writer.add(f"{uid}-{j}", sample)
        bar.update(1)

    try:
        run_pipeline(names, lambda n: _keep_from_shard(paths[n], subset), write,
                     loaders=max(1, num_workers), workers=1, depth=max(2, num_workers))
        writer.flush()
    finally:
        bar.close()
    with fsspec.open(uids, "rb") as f:
        write_bytes(os.path.join(out_dir, "sample_ids.npy"), f.read())
    found = counts["input_kept"]
    distinct = int(len(np.unique(subset))) if len(subset) else 0
    meta = {"input_dir": shards_dir, "output_dir": out_dir, "subset_file": uids, "shard_size": shard_size,
            "output_shard_format": OUTPUT_FORMAT, "output_shard_stats_format": STATS_FORMAT,
            "output_shard_count": writer.shards, "output_count": writer.count,
            "processed_count": counts["processed_count"], "subset_size": int(len(subset)),
            "subset_distinct": distinct, "subset_not_found": distinct - found,
            "missing_shards": [OUTPUT_FORMAT.format(i) for i in missing], "failed_shards": failed,
            "cwd": os.getcwd()}
    if meta["subset_not_found"]:
        log.warning("%d uids of the subset were not found in the input shards", meta["subset_not_found"])
    write_json(os.path.join(out_dir, "meta.json"), meta)
    return meta
