"""The bucket stage scores runs of consecutive buckets per task (kl_filter/stages/buckets.py): each shard's bucket
files are opened once per run, not once per bucket (the opens grew as buckets × shards: 64,000 rows in 64 shards at
--batch_size 256 took 19 s, in 4 shards 2.4 s). The grouping never changes a bucket's rows or their order, so the
columns are the same bits for any grouping."""

import numpy as np
import pytest

import kl_filter.stages.buckets as bk
from kl_filter.engines import LocalEngine
from kl_filter.pool import Pool
from kl_filter.scorers.negcliploss import NegCLIPLossScorer
from kl_filter.scorers.semdedup import SemDeDupScorer
from minipool import write_shard


@pytest.mark.parametrize("workers", [1, 2, 16])
def test_groups_cover_every_bucket_in_order_within_the_byte_cap(workers):
    rng = np.random.default_rng(0)
    for n in (1, 2, 7, 64, 1000):
        for row_bytes in (8, 3080, 1 << 20):
            sizes = rng.integers(0, 5000, n)
            groups = bk.bucket_groups(sizes, row_bytes, workers)
            assert [j for g in groups for j in g] == list(range(n))  # consecutive, each bucket once
            assert all(len(g) == 1 or sizes[g.start: g.stop].sum() * row_bytes <= bk.GROUP_BYTES for g in groups)
            assert len(groups) >= min(n, bk.TASKS_PER_WORKER * workers)  # enough tasks to balance the workers
            if sizes.sum() * row_bytes <= bk.GROUP_BYTES:  # small pools: no more tasks than balancing needs
                assert len(groups) <= min(n, bk.TASKS_PER_WORKER * workers)
    assert bk.bucket_groups(np.zeros(0, np.int64), 8, 2) == []


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    root = tmp_path_factory.mktemp("buckets") / "pool"
    root.mkdir()
    for s in range(12):  # many shards of uneven sizes, one empty
        write_shard(root, f"{s:08d}", [0, 37, 120, 5][s % 4], seed=s, uid_start=1000 * s)
    return Pool(str(root))


def _columns(pool, scorer, monkeypatch, group_bytes=None):
    if group_bytes is not None:
        monkeypatch.setattr(bk, "GROUP_BYTES", group_bytes)
    loads = []
    real = np.load

    def counting(path, *a, **k):
        loads.append(str(path))
        return real(path, *a, **k)

    monkeypatch.setattr(np, "load", counting)
    try:
        out = bk.run_buckets(pool, scorer, 7, None, {"test": 1}, LocalEngine(2), ("cpu", "cpu"))
    finally:
        monkeypatch.setattr(np, "load", real)
    return out, loads


@pytest.mark.parametrize("scorer", [NegCLIPLossScorer("b32", batch_size=8, num_batches=2, logit_scale=100.0),
                                    SemDeDupScorer("b32", num_clusters=40)], ids=["negcliploss", "semdedup"])
def test_any_grouping_gives_the_same_bits_and_opens_grow_with_groups_not_buckets(pool, scorer, monkeypatch):
    grouped, loads = _columns(pool, scorer, monkeypatch)
    one_each, loads_one = _columns(pool, scorer, monkeypatch, group_bytes=1)  # every bucket its own task
    assert grouped.keys() == one_each.keys()
    for shard, cols in grouped.items():
        for c, v in cols.items():
            assert np.array_equal(v, one_each[shard][c], equal_nan=True), (shard, c)
    rows = sum(pool.row_counts)
    buckets = 40 if scorer.name == "semdedup" else round(rows / 8)
    per_bucket_opens = [p for p in loads_one if "/out/" not in p]
    grouped_opens = [p for p in loads if "/out/" not in p]
    # one bucket per task: every task opens every shard's files; grouped: 2 workers × 4 runs of buckets
    assert len(per_bucket_opens) > buckets * len(pool.shards)
    assert len(grouped_opens) * 3 < len(per_bucket_opens), (len(grouped_opens), len(per_bucket_opens))
