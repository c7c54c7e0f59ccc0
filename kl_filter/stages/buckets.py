"""The "bucket rows by key" stage: scorers whose rows must be scored together with rows of other shards.

negCLIPLoss normalises a pair's similarity over a random batch of the WHOLE pool, and semantic deduplication
compares rows of one cluster wherever they are stored. Such a scorer (:class:`BucketScorer`) gives every row a
bucket and an order key (``BucketScorer.assign`` → :class:`Partition`); this stage gathers each bucket's rows
from every shard and scores each bucket, in tasks over runs of consecutive buckets::

    pass k ──assign──▶ Partition: per shard, bucket int32[n] + order key uint64[n] (+ extra per-row arrays)
             default (:func:`kl_filter.scorers.partition.hashed_partition`, negCLIPLoss):
               keys (a seeded 64-bit hash of (seed, pass, uid); one task per shard)
               ──rank on the driver (8 bytes a row; ties by uid)──▶ bucket = rank·n_buckets // n
                 (sizes differ by ≤ 1)
             SemDeDup (:mod:`kl_filter.scorers.semdedup`): bucket = nearest k-means centroid, key = the keep rule's order
           ──bucketing (one task per shard)──▶ WORK/pass{k}/{shard}.{key}.npy   payload rows by bucket, then key
                                              WORK/pass{k}/{shard}.offsets.npy  where each bucket starts
           ──one task per group of consecutive buckets──▶ WORK/pass{k}/out/{bucket}.npz   per-row values
             (each shard's files opened once per group, not once per bucket; memory: the group's rows, at most
              GROUP_BYTES or one bucket)
           ──scatter back to (shard, row) on the driver──▶ running float64 sums over the passes
    after the last pass: ``combine`` (the mean over passes by default) → float32 columns per shard

The partition is a pure function of the uids and the seed (identical for any shard order, worker count or
engine), every file is written atomically, and a rerun resumes: bucket files whose index exists and bucket
outputs that exist are reused. WORK lives in ``SCORES_DIR/.buckets/`` (a temporary directory without a scores
directory) and is removed when the columns are written. Its size is one pass's payload (e.g. the L/14 image
and text embeddings: 3 KB a row), bucket files are memory-mapped, so WORK must be a local (or shared, for Ray)
filesystem path.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass

import numpy as np

from kl_filter.core.atomic import atomic_open, exclusive, write_json
from kl_filter.engines import worker_index
from kl_filter.core.errors import KLFilterError
from kl_filter.scorers.base import BucketScorer

MARKER = "kl_filter_buckets.json"  # proves a work directory was made by this stage (and what for)


@dataclass(frozen=True)
class _Pass:
    """What one pass's tasks share (small: it travels with every task)."""

    work: str
    index: int
    buckets: int
    keys: tuple
    extra: tuple = ()  # names of the partition's extra per-row arrays, carried into the payload
    durable: bool = True  # fsync every file (a rerun resumes from them); not in a temporary work directory

    @property
    def dir(self) -> str:
        return os.path.join(self.work, f"pass{self.index}")

    def part(self, shard, what: str) -> str:
        return os.path.join(self.dir, f"{shard.name}.{what}.npy")

    def out(self, bucket: int) -> str:
        return os.path.join(self.dir, "out", f"{bucket}.npz")


def _save(path: str, arr: np.ndarray, durable: bool = True) -> None:
    with atomic_open(path, "wb", sync=durable) as f:
        np.save(f, arr)


def _shard_order(bucket: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """A shard's rows by bucket, and by key within a bucket."""
    return np.lexsort((keys, bucket))


def _bucket_shard(pool, shard, p: _Pass, bucket: np.ndarray, keys: np.ndarray, extra: dict | None = None) -> None:
    """Write one shard's payload rows sorted by bucket, then (last, so it marks completion) the offsets."""
    if os.path.exists(p.part(shard, "offsets")):
        return  # resumed: written by an earlier, interrupted run of this same pass
    order = _shard_order(bucket, keys)
    emb = pool.read_embeddings(shard, p.keys, len(bucket))
    for k in p.keys:
        _save(p.part(shard, k), np.ascontiguousarray(emb[k][order]), p.durable)
    for k, v in (extra or {}).items():
        _save(p.part(shard, k), np.ascontiguousarray(v[order]), p.durable)
    _save(p.part(shard, "keys"), keys[order], p.durable)
    _save(p.part(shard, "offsets"), np.searchsorted(bucket[order], np.arange(p.buckets + 1)).astype(np.int64),
          p.durable)


# Payload rows one scoring task reads at most (several buckets per task: every bucket task opened every shard's
# files, so opens grew as buckets × shards: 64,000 rows in 64 shards at --batch_size 256 took 19 s, in 4 shards
# 2.4 s). The grouping never changes a bucket's rows or their order, so the values are the same bits for any groups.
GROUP_BYTES = 256 << 20
TASKS_PER_WORKER = 4  # at least this many groups per worker (when there are buckets enough): the load balances


def bucket_groups(sizes: np.ndarray, row_bytes: int, workers: int) -> list[range]:
    """Runs of consecutive buckets, one scoring task each: about equal bucket counts, at least
    TASKS_PER_WORKER·workers runs when there are buckets enough, and at most GROUP_BYTES of rows each (a run is cut
    where it would pass that; one bucket alone may pass it)."""
    n = len(sizes)
    if n == 0:
        return []
    want = min(n, max(-(-int(sizes.sum()) * row_bytes // GROUP_BYTES), TASKS_PER_WORKER * max(1, workers)))
    edges = [n * i // want for i in range(want + 1)]
    groups = []
    for a, b in zip(edges[:-1], edges[1:]):
        start, rows = a, 0
        for j in range(a, b):
            if j > start and (rows + int(sizes[j])) * row_bytes > GROUP_BYTES:
                groups.append(range(start, j))
                start, rows = j, 0
            rows += int(sizes[j])
        groups.append(range(start, b))
    return groups


def _score_bucket_group(scorer: BucketScorer, shards, p: _Pass, group: range, devices: tuple) -> None:
    """Score the buckets of ``group`` not yet scored: each shard's rows of the group read at once (one contiguous
    slice: a shard's rows are sorted by bucket), then per bucket its rows from every shard in shard order."""
    todo = [j for j in group if not os.path.exists(p.out(j))]
    if not todo:
        return
    j0, j1 = todo[0], todo[-1] + 1
    names = (*p.keys, *p.extra, "keys")
    rows: dict = {k: [] for k in names}
    starts = []  # per shard: where each bucket j0..j1 starts within the group's slice
    for shard in shards:
        off = np.load(p.part(shard, "offsets"))
        starts.append(off[j0: j1 + 1] - off[j0])
        for k in names:
            m = np.load(p.part(shard, k), mmap_mode="r")
            rows[k].append(np.array(m[off[j0]: off[j1]]))
            del m  # its file is closed: open files stay bounded whatever the shard count
    for j in todo:
        i = j - j0
        parts = {k: [v[st[i]: st[i + 1]] for v, st in zip(rows[k], starts)] for k in names}
        # rows in key order: the batch, and so every float sum over it, is the same whatever the shard layout
        order = np.argsort(np.concatenate(parts.pop("keys")), kind="stable")
        payload = {k: np.concatenate(v)[order] for k, v in parts.items()}
        values = scorer.score_bucket(payload, devices[worker_index() % len(devices)])
        out = {}
        for c, v in values.items():
            out[c] = np.empty(len(order), np.float64)
            out[c][order] = v  # back to the order the rows were gathered in (shards, then key)
        with atomic_open(p.out(j), "wb", sync=p.durable) as f:
            np.savez(f, **out)


def _row_bytes(shards, p: _Pass) -> int:
    """Bytes of one payload row (every gathered array's row), from the first shard's bucket files' headers."""
    total = 0
    for k in (*p.keys, *p.extra, "keys"):
        m = np.load(p.part(shards[0], k), mmap_mode="r")
        total += m.dtype.itemsize * int(np.prod(m.shape[1:], dtype=np.int64))
        del m
    return total


def work_dir(scores_dir: str | None, scorer: BucketScorer, identity: dict) -> tuple[str, bool]:
    """(the work directory of this scorer's columns on this pool, whether it is temporary)."""
    if scores_dir is None:
        return tempfile.mkdtemp(prefix=f"kl_filter_{scorer.name}_"), True
    if "://" in scores_dir and not scores_dir.startswith("file://"):
        raise KLFilterError(f"--name {scorer.name} memory-maps its bucket files: --scores_dir must be a local or "
                            "shared filesystem path, not a URL", scores_dir)
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
    return os.path.join(scores_dir.removeprefix("file://"), ".buckets", f"{scorer.name}_{digest}"), False


def run_buckets(pool, scorer: BucketScorer, seed: int, scores_dir: str | None, provenance: dict, engine,
                devices=("cpu",)) -> dict:
    """``{shard name: {column: float32[n]}}`` of a bucket scorer over the whole pool (see the module docstring)."""
    identity = {"pool_fingerprint": pool.fingerprint, "seed": seed, **provenance}
    if scores_dir is not None:
        work_dir(scores_dir, scorer, identity)  # refuses a URL before any work
    # the first pass's partition before the work directory exists: a bad parameter (e.g. more clusters than
    # rows) leaves nothing behind
    first = scorer.assign(pool, engine, seed, 0, scores_dir)
    work, temporary = work_dir(scores_dir, scorer, identity)
    lock = contextlib.ExitStack()
    if not temporary:  # two runs computing these columns in one scores dir: the second waits for the first
        lock.enter_context(exclusive(work + ".lock", f"the {scorer.name} bucket work directory {work}"))
    marker = os.path.join(work, MARKER)
    sizes = pool.row_counts
    sums: dict = {}
    try:
        os.makedirs(work, exist_ok=True)
        if not os.path.exists(marker):
            write_json(marker, identity)
        for k in range(scorer.num_passes()):
            part = first if k == 0 else scorer.assign(pool, engine, seed, k, scores_dir)
            per_shard, keys, buckets = part.buckets, part.keys, part.num_buckets
            extra = [{name: v[i] for name, v in part.extra.items()} for i in range(len(pool.shards))]
            p = _Pass(work, k, buckets, tuple(scorer.keys), tuple(part.extra), durable=not temporary)
            os.makedirs(os.path.join(p.dir, "out"), exist_ok=True)
            counts = np.stack([np.bincount(b, minlength=buckets) for b in per_shard])  # [shard, bucket]
            if not all(os.path.exists(p.out(j)) for j in range(buckets)):  # else: resumed, the pass is scored
                engine.map(_bucket_shard, [(pool, s, p, b, kk, e) for s, b, kk, e in
                                           zip(pool.shards, per_shard, keys, extra)],
                           desc=f"{scorer.name}: bucket pass {k + 1}")
                groups = bucket_groups(counts.sum(axis=0), _row_bytes(pool.shards, p), len(devices))
                engine.map(_score_bucket_group, [(scorer, pool.shards, p, g, tuple(devices)) for g in groups],
                           desc=f"{scorer.name}: score pass {k + 1}", workers=len(devices))
            _scatter(p, per_shard, keys, counts, sums)
            for s in pool.shards:  # the payload has served: keep disk use to one pass
                for what in (*p.keys, *p.extra, "keys", "offsets"):
                    if os.path.exists(p.part(s, what)):
                        os.remove(p.part(s, what))
        cols = scorer.combine(sums, scorer.num_passes())
        shutil.rmtree(work, ignore_errors=True)  # done: the caller writes the columns
    finally:
        if temporary:
            shutil.rmtree(work, ignore_errors=True)
        lock.close()
    if not temporary:
        with contextlib.suppress(OSError):
            os.rmdir(os.path.dirname(work))  # .buckets/, when no other scorer's work (or lock) is in it
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    return {s.name: {c: v[offsets[i]: offsets[i + 1]] for c, v in cols.items()} for i, s in enumerate(pool.shards)}


def _scatter(p: _Pass, per_shard: list[np.ndarray], keys: list[np.ndarray], counts: np.ndarray, sums: dict) -> None:
    """Add one pass's bucket outputs to the pool-order float64 sums (``counts``: rows per [shard, bucket])."""
    starts = np.concatenate([[0], np.cumsum([len(b) for b in per_shard])])
    orders = [_shard_order(b, k) for b, k in zip(per_shard, keys)]
    pos = [np.concatenate([[0], np.cumsum(c)]) for c in counts]  # where each bucket starts in a shard's sorted rows
    for j in range(p.buckets):
        with np.load(p.out(j)) as z:
            values = {c: z[c] for c in z.files}
        for c in values:
            if c not in sums:  # not setdefault(c, np.zeros(...)): that built a pool-sized array per bucket and shard
                sums[c] = np.zeros(starts[-1], np.float64)
        at = 0
        for i, order in enumerate(orders):
            rows = starts[i] + order[pos[i][j]: pos[i][j + 1]]
            for c, v in values.items():
                sums[c][rows] += v[at: at + len(rows)]
            at += len(rows)
