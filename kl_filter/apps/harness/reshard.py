"""Reshard webdataset image-text tars to the samples of a UID subset, as DataComp's ``resharder.py`` does.

Input: ``{:08d}.tar`` shards whose samples (``<key>.jpg``, ``.txt``, ``.json``, ...) carry their uid in the
json. A sample is kept k times when its uid appears k times in the subset file (duplicates upsample), under
the keys ``<uid>-0 .. <uid>-(k-1)``, like DataComp's resharder. Output: ``{:08d}.tar`` shards of
``shard_size`` samples with ``{:08d}_stats.json`` ({"successes": n}), ``sample_ids.npy`` (a copy of the
subset file) and ``meta.json`` with the fields DataComp's ``train.py`` reads (``output_shard_count``,
``output_shard_format``) and the counts.

Input shards are read and filtered in parallel; one writer takes them in input order, so the output is the
same for any number of workers. Missing input shards (gaps in the numbering) and unreadable ones are
reported in ``meta.json`` and as warnings, not fatal; so are malformed samples (no json, invalid JSON, no
32-hex-digit uid): each is skipped and counted, and the rest of its shard is kept. An output directory holding an
earlier run's shards is refused unless ``overwrite`` (then that output is removed first: old and new shards
never mix). Every file is written atomically. Input directory,
output directory and subset file may be fsspec URLs (``s3://...``), as with DataComp's resharder.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import tarfile

import numpy as np

from kl_filter.core.atomic import atomic_open, write_bytes, write_json
from kl_filter.core.errors import KLFilterError
from kl_filter.core.fspath import open_file, url_to_fs
from kl_filter.core.layouts import first_foreign, json_has, register_layout
from kl_filter.core.outputs import claim_dir
from kl_filter.engines import LocalEngine
from kl_filter.pool.tars import list_tars, read_samples
from kl_filter.core.uids import UID_DTYPE, hex_to_u8u8, load_uids

log = logging.getLogger(__name__)
OUTPUT_FORMAT = "{:08d}.tar"
STATS_FORMAT = "{:08d}_stats.json"


def _recognise(fs, p: str, names: list[str]) -> str | None:
    """A reshard directory without its marker: the shards, their stats, ``sample_ids.npy`` and ``meta.json``."""
    def ok(n):
        if n == "meta.json":
            return json_has(fs, f"{p.rstrip('/')}/{n}", "subset_not_found")
        return n == "sample_ids.npy" or re.fullmatch(r"\d{8}\.tar|\d{8}_stats\.json", n) is not None

    return first_foreign(names, ok)


register_layout("reshard", _recognise)


SKIP_REASONS = ("missing_json", "bad_json", "bad_uid")


def sample_uid(sample: dict) -> tuple[str | None, str | None]:
    """``(uid, None)`` of one sample, or ``(None, reason)`` when it is malformed: no ``.json`` member
    (``missing_json``), a json that is not a UTF-8 JSON object (``bad_json``), or no ``"uid"`` of 32 hex digits
    (``bad_uid``)."""
    raw = sample.get("json")
    if raw is None:
        return None, "missing_json"
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None, "bad_json"
    if not isinstance(doc, dict):
        return None, "bad_json"
    uid = doc.get("uid")
    if not isinstance(uid, str) or len(uid) != 32 or not all(c in _HEX for c in uid):
        return None, "bad_uid"
    return uid, None


_HEX = frozenset("0123456789abcdefABCDEF")
_OURS = re.compile(r"\d{8}\.tar|\d{8}_stats\.json|meta\.json|sample_ids\.npy")


def _keep_from_shard(path: str, subset: np.ndarray) -> tuple[list, int, str | None, dict]:
    """(kept samples with their multiplicity, samples read, error, malformed samples skipped per reason) for one
    input tar. A malformed sample is skipped and counted; the rest of the shard is still read."""
    kept, seen, skipped = [], 0, {}
    try:
        for _, sample in read_samples(path):
            seen += 1
            uid, reason = sample_uid(sample)
            if reason:
                skipped[reason] = skipped.get(reason, 0) + 1
                continue
            key = hex_to_u8u8([uid])[0]
            a, b = np.searchsorted(subset, key, "left"), np.searchsorted(subset, key, "right")
            if b > a:
                kept.append((uid, sample, int(b - a)))
    except (tarfile.TarError, OSError, EOFError, ValueError, KLFilterError) as e:
        return kept, seen, f"{type(e).__name__}: {e}", skipped
    return kept, seen, None, skipped


def earlier_output(out_dir: str) -> list[str]:
    """What an earlier reshard left in ``out_dir``: its shards, their stats, ``meta.json`` and ``sample_ids.npy``
    (names only; nothing else in the directory is ever touched; temporary files of a killed run are the atomic
    writer's to clean)."""
    fs, p = url_to_fs(out_dir)
    try:
        if not fs.isdir(p):
            return []
        names = [os.path.basename(e.rstrip("/")) for e in fs.ls(p, detail=False)]
    except OSError as e:
        raise KLFilterError(f"cannot list the output directory ({getattr(e, 'strerror', None) or e})", out_dir) from e
    return sorted(n for n in names if _OURS.fullmatch(n))


def _clean(out_dir: str, names: list[str]) -> None:
    """Remove an earlier run's output: ``meta.json`` first (the directory no longer claims to be complete)."""
    fs, p = url_to_fs(out_dir)
    for n in sorted(names, key=lambda n: n != "meta.json"):
        try:
            fs.rm(f"{p.rstrip('/')}/{n}")
        except FileNotFoundError:
            pass
        except OSError as e:
            raise KLFilterError(f"cannot remove the earlier run's {n} ({getattr(e, 'strerror', None) or e})",
                                out_dir) from e


class _Writer:
    """Fills output tars of ``shard_size`` samples, in the order samples arrive.

    The bytes are those ``webdataset.TarWriter`` writes given the same settings (USTAR, mtime 0, mode 0o444,
    extensions sorted, no user or group names; ``benchmarks/bench_tars.py`` checks them equal). ``tarfile`` is used
    directly: the base install has no webdataset (importing it imports torch: 11.5 s against 0.2 s), and TarWriter
    took 1.6x and 1.2x its time in two runs (``results/bench_tars.md``)."""

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
            progress=None, overwrite: bool = False) -> dict:
    """Keep the subset's samples of every input tar; returns the ``meta.json`` content.

    An ``out_dir`` that holds an earlier run's output is refused (its shards would mix with this run's: DataComp's
    trainer reads every tar there) unless ``overwrite``, which removes that output first, after every input has
    been checked. Malformed samples (no json, invalid JSON, no 32-hex-digit uid) are skipped and counted in
    ``meta.json`` (``skipped_samples``, and per input shard in ``skipped_by_shard``); the rest of their shard is
    kept."""
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
    earlier = earlier_output(out_dir)
    if earlier and not overwrite:
        n_tars = sum(n.endswith(".tar") and not n.startswith(".") for n in earlier)
        raise KLFilterError(f"holds the output of an earlier reshard ({n_tars} shards"
                            f"{', meta.json' if 'meta.json' in earlier else ''}); pass --overwrite to replace it, "
                            "or choose another --out", out_dir)
    if earlier:
        log.info("%s: removing the earlier reshard's %d files (--overwrite)", out_dir, len(earlier))
        _clean(out_dir, earlier)
    claim_dir(out_dir, "reshard")  # fail before reading any shard; the marker proves the directory is ours
    writer = _Writer(out_dir, shard_size)
    counts = {"processed_count": 0, "input_kept": 0}
    failed, skipped, skipped_by_shard = {}, dict.fromkeys(SKIP_REASONS, 0), {}

    def write(name, loaded):
        kept, seen, err, bad = loaded
        if err:
            failed[name] = err
            log.warning("%s: unreadable input shard (%s); its samples are skipped", name, err)
        if bad:
            for reason, k in bad.items():
                skipped[reason] += k
            skipped_by_shard[name] = dict(sorted(bad.items()))
            log.warning("%s: %d malformed samples skipped (%s); the shard's other samples are kept", name,
                        sum(bad.values()), ", ".join(f"{k} {r}" for r, k in sorted(bad.items())))
        counts["processed_count"] += seen
        for uid, sample, k in kept:
            counts["input_kept"] += 1
            for j in range(k):
                writer.add(f"{uid}-{j}", sample)

    # one compute thread: the writer takes the shards in input order
    LocalEngine(num_workers, progress).map(write, names, load=lambda n: _keep_from_shard(paths[n], subset),
                                           workers=1, desc="reshard")
    writer.flush()
    with open_file(uids, "rb") as f:
        write_bytes(os.path.join(out_dir, "sample_ids.npy"), f.read())
    found = counts["input_kept"]
    distinct = int(len(np.unique(subset))) if len(subset) else 0
    meta = {"input_dir": shards_dir, "output_dir": out_dir, "subset_file": uids, "shard_size": shard_size,
            "output_shard_format": OUTPUT_FORMAT, "output_shard_stats_format": STATS_FORMAT,
            "output_shard_count": writer.shards, "output_count": writer.count,
            "processed_count": counts["processed_count"], "subset_size": int(len(subset)),
            "subset_distinct": distinct, "subset_not_found": distinct - found,
            "missing_shards": [OUTPUT_FORMAT.format(i) for i in missing], "failed_shards": failed,
            "skipped_samples": {**skipped, "total": sum(skipped.values())}, "skipped_by_shard": skipped_by_shard,
            "cwd": os.getcwd()}
    if meta["subset_not_found"]:
        log.warning("%d uids of the subset were not found in the input shards", meta["subset_not_found"])
    write_json(os.path.join(out_dir, "meta.json"), meta)
    return meta
