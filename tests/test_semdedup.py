"""SemDeDup: the within-cluster rule against a plain float64 implementation, planted near-duplicate groups
found and reduced to one member, the keep rules, worker/engine invariance, resume and bad input."""

import importlib.util
import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import run_cli
from kl_filter.scorers.semdedup import duplicate_threshold, earlier_max_similarity, sortable_u32, spherical_kmeans
from kl_filter.core.uids import u8u8_to_hex
from minipool import unit, write_shard

D = 768


def ref_earlier_max(x):
    """max_{i<j} cos(x_i, x_j) in float64, one row at a time (-1 for the first row)."""
    x = x.astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return np.array([-1.0] + [float((x[:j] @ x[j]).max()) for j in range(1, len(x))])


@pytest.mark.parametrize("n, rows, cols", [(1, 4, 4), (50, 7, 5), (300, 64, 100), (257, 1024, 4096)])
def test_earlier_max_similarity_matches_float64(n, rows, cols):
    rng = np.random.default_rng(n)
    x = unit(rng, n, 96)
    x[n // 2:] = x[: n - n // 2] * 0.9 + unit(rng, n - n // 2, 96) * 0.1  # near-duplicates of earlier rows
    got = earlier_max_similarity(x, rows, cols)
    assert got.dtype == np.float32 and np.max(np.abs(got - ref_earlier_max(x))) < 1e-6


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch not installed")
@pytest.mark.parametrize("n, rows, cols", [(1, 4, 4), (300, 64, 100), (1000, 256, 300)])
def test_gpu_twin_matches_float64_and_numpy(n, rows, cols):
    """The torch path a GPU runs (earlier_max_similarity_torch), here on the CPU: float64 to 1e-6, and the same
    duplicate decisions as the NumPy path except within float32 rounding of the threshold."""
    from kl_filter.scorers.semdedup import earlier_max_similarity_torch

    rng = np.random.default_rng(n)
    x = unit(rng, n, 96)
    x[n // 2:] = x[: n - n // 2] * 0.9 + unit(rng, n - n // 2, 96) * 0.1
    x[n - n // 4:] = x[: n // 4]  # exact copies too
    got = earlier_max_similarity_torch(x, "cpu", rows, cols)
    ref = ref_earlier_max(x)
    assert got.dtype == np.float32 and np.max(np.abs(got - ref)) < 1e-6
    cpu = earlier_max_similarity(x)
    t = duplicate_threshold(0.01)
    differ = (got <= t) != (cpu <= t)
    assert not np.any(differ & (np.abs(cpu - t) > 1e-6))


def test_sortable_keys_and_threshold():
    v = np.array([-np.inf, -2.5, -0.0, 0.0, 1e-30, 0.99, np.inf, np.nan], np.float32)
    assert np.all(np.diff(sortable_u32(v).astype(np.int64)) >= 0)
    for eps in (0.01, 0.05, 0.3, 1.5, 1e-7):
        t = np.float32(duplicate_threshold(eps))
        assert float(t) <= 1 - eps < float(np.nextafter(t, np.float32(np.inf)))


def test_kmeans_is_seeded_and_finds_separated_clusters():
    rng = np.random.default_rng(0)
    centres = unit(rng, 5, 64).astype(np.float32)
    x = centres[np.repeat(np.arange(5), 200)] + 0.02 * rng.standard_normal((1000, 64)).astype(np.float32)
    c1, info = spherical_kmeans(x, 5, 10, seed=1)
    c2, _ = spherical_kmeans(x[::-1], 5, 10, seed=1)  # another order of the same sample: other draws
    assert c1.dtype == np.float32 and np.array_equal(c1, spherical_kmeans(x, 5, 10, seed=1)[0])
    for c in (c1, c2):
        assert (c @ centres.T).max(axis=0).min() > 0.99
    assert np.all(np.diff(info["objective"]) >= -1e-6) and info["reseeded"] == 0


def test_kmeans_lloyd_matches_float64_from_the_same_start():
    """faiss's Lloyd iterations (spherical, inner-product index, no subsampling) equal a plain float64 loop started
    from the same seeded k-means++ centres (iterations=0 returns them) to float32 rounding."""
    rng = np.random.default_rng(2)
    x = unit(rng, 8, 96).astype(np.float32)[rng.integers(8, size=3000)] * 0.6 + unit(rng, 3000, 96) * 0.8
    start, info0 = spherical_kmeans(x, 12, 0, seed=5)
    got, info = spherical_kmeans(x, 12, 6, seed=5)
    assert info0["objective"] == [] and 1 <= len(info["objective"]) <= 6  # faiss stops early at a fixed point
    xn = x.astype(np.float64) / np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)
    c, objective = start.astype(np.float64), []
    for _ in range(len(info["objective"])):
        s = xn @ c.T
        labels = s.argmax(axis=1)
        objective.append(s.max(axis=1).mean())
        sums = np.zeros_like(c)
        np.add.at(sums, labels, xn)
        c = sums / np.linalg.norm(sums, axis=1, keepdims=True)
    assert np.abs(got - c).max() < 1e-5 and np.allclose(info["objective"], objective, atol=1e-5)
    assert np.abs(np.linalg.norm(got, axis=1) - 1).max() < 1e-6


def test_kmeanspp_same_bits_for_any_thread_count(monkeypatch):
    """k-means++ passes run over fixed blocks of sample rows on a thread per core: the thread count never
    changes the centres (blocks of KMEANSPP_BLOCK rows, their totals added in block order)."""
    import os

    from kl_filter.scorers import semdedup

    rng = np.random.default_rng(5)
    x = semdedup.normalise_rows(unit(rng, 2 * semdedup.KMEANSPP_BLOCK + 123, 32))
    got = []
    for threads in (1, 3, 8):
        monkeypatch.setattr(os, "cpu_count", lambda t=threads: t)
        got.append(semdedup._kmeanspp(x, 30, np.random.default_rng(1)))
    assert all(np.array_equal(got[0], g) for g in got[1:])
    assert len({tuple(c) for c in got[0]}) == 30  # 30 distinct sample rows


def test_kmeans_same_bits_for_any_openmp_threads_and_caller_thread():
    """A fixed OpenMP thread count inside (KMEANS_THREADS; an earlier faiss gave other centroids at 3 threads): the
    caller's setting changes nothing and is restored."""
    import threading

    import faiss

    rng = np.random.default_rng(3)
    x = unit(rng, 2000, 128).astype(np.float32)
    before = faiss.omp_get_max_threads()
    try:
        got = []
        for t in (1, 3, 2, 8):
            faiss.omp_set_num_threads(t)
            got.append(spherical_kmeans(x, 40, 5, seed=7)[0])
            assert faiss.omp_get_max_threads() == t
        th = threading.Thread(target=lambda: got.append(spherical_kmeans(x, 40, 5, seed=7)[0]))
        th.start()
        th.join()
    finally:
        faiss.omp_set_num_threads(before)
    assert all(np.array_equal(got[0], g) for g in got[1:])


def planted_pool(root, layout, groups=60, seed=0, npz_keys=("l14_img",)):
    """Rows around 12 topics (within-topic cosine about 0.4), and ``groups`` planted near-duplicate groups of 2-4
    rows (pairwise cosine about 0.9975, every pair above 0.995). Returns (pool dir, the groups' row indices,
    l14 image embeddings, CLIP scores)."""
    root.mkdir()
    n = sum(layout)
    rng = np.random.default_rng(seed)
    topics = unit(rng, 12, D).astype(np.float32)
    x = topics[rng.integers(12, size=n)] * 0.65 + unit(rng, n, D).astype(np.float32) * 0.75
    rows = rng.permutation(n)
    planted, at = [], 0
    for _ in range(groups):
        g = np.sort(rows[at: at + int(rng.integers(2, 5))])
        at += len(g)
        base = x[g[0]] / np.linalg.norm(x[g[0]])
        x[g] = base + 0.05 * unit(rng, len(g), D).astype(np.float32)
        planted.append(g)
    emb = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16)
    clip = rng.random(n, dtype=np.float32) * 0.4
    start = 0
    for i, m in enumerate(layout):
        sl = slice(start, start + m)
        write_shard(root, f"{i:08d}", m, seed=10 + i, uid_start=start, npz=False,
                    clip_l14_similarity_score=clip[sl])
        np.savez(root / f"{i:08d}.npz", **{k: emb[sl] for k in npz_keys})
        start += m
    return str(root), planted, emb, clip


def select(pool, out, scores, *extra, workers=2, check=True):
    p = run_cli("select", "--name", "semdedup", "--arch", "l14", "--num_clusters", "10", "--seed", "0",
                "--metadata_dir", pool, "--save_path", out, "--scores_dir", scores, "--num_workers", workers,
                "--no_progress", *extra, check=check)
    assert not check or "faiss" not in p.stderr  # faiss's loader logs its CPU probing at INFO: kept quiet
    return p if not check else json.loads(open(f"{out}.json").read())


def kept_rows(path, n):
    kept = {u.decode() for u in u8u8_to_hex(np.load(path))}
    return np.array([f"{i:032x}" in kept for i in range(n)])


def stored(scores_dir, column):
    out = {}
    for f in sorted(scores_dir.glob("*.parquet")):
        t = pq.read_table(f)
        out.update(zip(t.column("uid").to_pylist(), t.column(column).to_numpy()))
    return np.array([out[f"{i:032x}"] for i in range(len(out))])


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("semdedup")
    return root, planted_pool(root / "pool", [500, 300, 400])


def test_planted_duplicates_keep_one_member(planted, tmp_path):
    root, (pool, groups, emb, _) = planted
    for g in groups:
        sims = emb[g].astype(np.float64) @ emb[g].astype(np.float64).T
        assert sims[np.triu_indices(len(g), 1)].min() > 0.995
    side = select(pool, tmp_path / "u.npy", tmp_path / "s", "--eps", "0.01")
    keep = kept_rows(tmp_path / "u.npy", 1200)
    one = sum(int(keep[g].sum()) == 1 for g in groups)
    others = np.ones(1200, bool)
    others[np.concatenate(groups)] = False
    assert one >= 0.95 * len(groups) and keep[others].mean() >= 0.99
    assert side["kept"] == int(keep.sum()) and side["removed"][0]["step"].startswith("top semdedup_l14_maxsim <= 0.99")

    # the stored column is the rule: rows of a cluster farthest-from-centroid first (float64 here)
    c = np.load(next((tmp_path / "s" / "semdedup_centroids").glob("l14_k10_*.npz")))["centroids"].astype(np.float64)
    x = emb.astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    cos = x @ c.T
    cluster, maxsim = stored(tmp_path / "s", "semdedup_l14_cluster"), stored(tmp_path / "s", "semdedup_l14_maxsim")
    # float32 products pick the float64 nearest centroid, but where two centroids are within float32 rounding of
    # each other (2·γ_D for unit vectors: each float32 cosine is within γ_D = D·u/(1 − D·u) of the exact one)
    nearest, d = cos.argmax(1), x.shape[1]
    off = np.flatnonzero(cluster != nearest)
    gamma = d * 2.0 ** -24 / (1 - d * 2.0 ** -24)
    assert (cos[off, nearest[off]] - cos[off, cluster[off].astype(int)] <= 2 * gamma).all() and len(off) <= 2
    want = np.empty(1200)
    for k in range(10):
        rows = np.flatnonzero(cluster == k)
        rows = rows[np.argsort(cos[rows, k], kind="stable")]
        want[rows] = ref_earlier_max(emb[rows])
    assert np.max(np.abs(maxsim - want)) < 1e-5
    assert np.array_equal(keep, maxsim <= np.float32(duplicate_threshold(0.01)))

    # another ε reuses the column (and so the centroids): one pass serves every ε
    again = select(pool, tmp_path / "v.npy", tmp_path / "s", "--eps", "0.3")
    assert again["scores"]["shards_reused"] == 3 and again["kept"] <= side["kept"]

    # lost columns are recomputed from the saved centroids (not retrained): the same bytes
    (centroids,) = (tmp_path / "s" / "semdedup_centroids").glob("*.npz")
    stamp = centroids.stat().st_mtime_ns
    for f in (tmp_path / "s").glob("*.parquet"):
        f.unlink()
    select(pool, tmp_path / "w.npy", tmp_path / "s", "--eps", "0.01")
    assert centroids.stat().st_mtime_ns == stamp
    assert (tmp_path / "w.npy").read_bytes() == (tmp_path / "u.npy").read_bytes()
    assert not (tmp_path / "s" / ".buckets").exists()


def test_keep_clip_score_keeps_the_highest(planted, tmp_path):
    _, (pool, groups, _, clip) = planted
    select(pool, tmp_path / "u.npy", tmp_path / "s", "--eps", "0.01", "--keep", "clip_score")
    keep = kept_rows(tmp_path / "u.npy", 1200)
    right = sum(keep[g].sum() == 1 and keep[g[np.argmax(clip[g])]] for g in groups)
    assert right >= 0.95 * len(groups)


def test_same_bytes_for_workers_and_engines(planted, tmp_path, monkeypatch):
    _, (pool, *_) = planted
    select(pool, tmp_path / "a.npy", tmp_path / "sa", "--eps", "0.01", "--keep", "random", workers=1)
    select(pool, tmp_path / "b.npy", tmp_path / "sb", "--eps", "0.01", "--keep", "random", workers=2)
    assert (tmp_path / "a.npy").read_bytes() == (tmp_path / "b.npy").read_bytes()
    if importlib.util.find_spec("ray") is None:
        pytest.skip("ray is not installed")
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    select(pool, tmp_path / "c.npy", tmp_path / "sc", "--eps", "0.01", "--keep", "random", "--engine", "ray")
    assert (tmp_path / "a.npy").read_bytes() == (tmp_path / "c.npy").read_bytes()


@pytest.mark.parametrize("args, message", [
    (["--eps", "0"], "--eps must be in (0, 2) (a duplicate has cosine > 1 - eps), got 0.0"),
    (["--eps", "2"], "--eps must be in (0, 2) (a duplicate has cosine > 1 - eps), got 2.0"),
    (["--eps", "0.01", "--num_clusters", "5000"], "--num_clusters 5000 is larger than the pool (1200 rows)"),
])
def test_bad_input_is_one_line(planted, tmp_path, args, message):
    _, (pool, *_) = planted
    p = run_cli("select", "--name", "semdedup", "--num_clusters", "10", *args, "--metadata_dir", pool,
                "--save_path", tmp_path / "u.npy", "--scores_dir", tmp_path / "s", "--no_progress")
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and message in p.stderr


def test_missing_embeddings_is_one_line(tmp_path):
    pool, *_ = planted_pool(tmp_path / "pool", [200], groups=5, npz_keys=("b32_img",))
    p = select(pool, tmp_path / "u.npy", tmp_path / "s", "--eps", "0.01", check=False)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and "'l14_img'" in p.stderr
