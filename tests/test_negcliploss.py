"""negCLIPLoss against its definition written plainly in float64, and the bucket stage's partition facts."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import run_cli
from kl_filter.pool import Pool
from kl_filter.scorers.partition import assign_buckets, bucket_keys, num_buckets
from kl_filter.scorers.negcliploss import negcliploss_batch
from kl_filter.core.uids import hex_to_u8u8, u8u8_to_hex
from minipool import unit, write_shard


def ref_negcliploss(f, g, a=100.0):
    """s_ii − (1/2a)·[log Σ_j exp(a·s_ij) + log Σ_j exp(a·s_ji)], float64, the whole matrix at once."""
    s = f.astype(np.float64) @ g.astype(np.float64).T * a
    m1, m0 = s.max(1), s.max(0)
    row = m1 + np.log(np.exp(s - m1[:, None]).sum(1))
    col = m0 + np.log(np.exp(s - m0[None, :]).sum(0))
    return np.diag(s) / a - (row + col) / (2 * a)


def rel(x, y):
    """Relative error; values cross zero (a pair less similar than its batch), so below 0.01 (a tenth of the
    scores' spread) the error is taken relative to 0.01."""
    return float(np.max(np.abs(x - y) / np.maximum(np.abs(y), 1e-2)))


@pytest.mark.parametrize("n, d, block", [(700, 64, 512), (1500, 96, 128), (3, 32, 512)])
def test_kernel_matches_float64(n, d, block):
    rng = np.random.default_rng(n)
    f, g = unit(rng, n, d), unit(rng, n, d)
    g[: n // 2] = unit(rng, 1, d) * 0.3 + g[: n // 2] * 0.7  # some near-duplicates: a peaked softmax
    g = (g / np.linalg.norm(g.astype(np.float32), axis=1, keepdims=True)).astype(np.float16)
    assert rel(negcliploss_batch(f, g, block=block), ref_negcliploss(f, g)) < 1e-5


def make_pool(root, layout, seed=0):
    """The same 1,200 rows (uids, texts, embeddings) split into shards of the given sizes."""
    root.mkdir()
    start = 0
    for i, n in enumerate(layout):
        write_shard(root, f"{i:08d}", n, seed=100 + i, uid_start=start)
        start += n
    rng = np.random.default_rng(seed)
    emb = {k: unit(rng, start, dim) for k, dim in [("b32_img", 512), ("b32_txt", 512), ("l14_img", 768), ("l14_txt", 768)]}
    start = 0
    for i, n in enumerate(layout):
        np.savez(root / f"{i:08d}.npz", **{k: v[start: start + n] for k, v in emb.items()})
        start += n
    return str(root), emb


def scores_by_uid(scores_dir, column="negcliploss_b32"):
    out = {}
    for f in sorted(scores_dir.glob("*.parquet")):
        t = pq.read_table(f)
        out.update(zip(t.column("uid").to_pylist(), t.column(column).to_numpy()))
    return out


def select(pool, out, scores, *extra, workers=2):
    run_cli("select", "--name", "negcliploss", "--arch", "b32", "--fraction", "0.3", *extra, "--metadata_dir", pool,
            "--save_path", out, "--scores_dir", scores, "--num_workers", workers, "--no_progress", check=True)
    return json.loads(open(f"{out}.json").read())


def test_whole_pool_batch_matches_float64_rule(tmp_path):
    pool, emb = make_pool(tmp_path / "pool", [400, 400, 400])
    side = select(pool, tmp_path / "u.npy", tmp_path / "s", "--batch_size", "100000", "--num_batches", "1")
    ref = ref_negcliploss(emb["b32_img"], emb["b32_txt"])
    got = scores_by_uid(tmp_path / "s")
    uids = np.array([f"{i:032x}" for i in range(1200)])
    assert rel(np.array([got[u] for u in uids], np.float64), ref) < 1e-5
    thr = -np.sort(-ref)[int(1200 * 0.3)]
    want = set(uids[ref >= thr])
    kept = {u.decode() for u in u8u8_to_hex(np.load(tmp_path / "u.npy"))}
    near = set(uids[np.abs(ref - thr) <= 1e-5 * abs(thr)])
    assert (kept ^ want) <= near and side["kept"] == len(kept)
    again = select(pool, tmp_path / "v.npy", tmp_path / "s", "--batch_size", "100000", "--num_batches", "1")
    assert again["scores"]["shards_reused"] == 3 and again["kept"] == side["kept"]
    assert not (tmp_path / "s" / ".buckets").exists()


def test_random_batches_follow_the_seeded_partition(tmp_path):
    """Three passes of batches of 150 over the whole pool: each row's value is the mean over passes of its batch's
    float64 negCLIPLoss, the batch being rank(hash(seed, pass, uid))·8 // 1200."""
    pool, emb = make_pool(tmp_path / "pool", [500, 300, 400])
    select(pool, tmp_path / "u.npy", tmp_path / "s", "--batch_size", "150", "--num_batches", "3", "--seed", "5")
    uids = hex_to_u8u8([f"{i:032x}" for i in range(1200)])
    want = np.zeros(1200)
    for k in range(3):
        batch = assign_buckets([bucket_keys(uids, 5, k)], None, num_buckets(1200, 150))[0]
        assert np.array_equal(np.bincount(batch), [150] * 8)
        for b in range(8):
            rows = np.flatnonzero(batch == b)
            want[rows] += ref_negcliploss(emb["b32_img"][rows], emb["b32_txt"][rows]) / 3
    got = scores_by_uid(tmp_path / "s")
    assert rel(np.array([got[f"{i:032x}"] for i in range(1200)], np.float64), want) < 1e-5


def test_identical_for_any_shard_layout_and_worker_count(tmp_path):
    outs = []
    for name, layout, workers in (("a", [400, 400, 400], 1), ("b", [700, 500], 3), ("c", [1200], 2)):
        pool, _ = make_pool(tmp_path / name, layout)
        select(pool, tmp_path / f"{name}.npy", tmp_path / f"s{name}", "--batch_size", "300", "--num_batches", "2",
               workers=workers)
        outs.append((scores_by_uid(tmp_path / f"s{name}"), (tmp_path / f"{name}.npy").read_bytes()))
    for scores, uid_file in outs[1:]:
        assert scores.keys() == outs[0][0].keys()
        assert all(scores[u] == outs[0][0][u] for u in scores)  # the same bits
        assert uid_file == outs[0][1]


@pytest.mark.parametrize("args, message", [
    (["--batch_size", "1"], "--batch_size must be at least 2 (a batch normalises over other pairs), got 1"),
    (["--num_batches", "0"], "--num_batches (passes) must be in [1, 1000], got 0 (each pass reads and scores the "
                             "whole pool once)"),
    (["--num_batches", str(10**9)], f"--num_batches (passes) must be in [1, 1000], got {10**9} (each pass reads and "
                                    "scores the whole pool once)"),
])
def test_bad_parameters_are_one_line(tmp_path, args, message):
    pool, _ = make_pool(tmp_path / "pool", [300])
    p = run_cli("select", "--name", "negcliploss", "--arch", "b32", "--fraction", "0.3", *args, "--metadata_dir", pool,
                "--save_path", tmp_path / "u.npy")
    assert p.returncode == 2 and p.stderr.strip() == f"kl-filter: error: {message}"


def test_pool_order_is_uid_order(tmp_path):
    pool, _ = make_pool(tmp_path / "pool", [600, 600])
    assert [s.name for s in Pool(pool).shards] == ["00000000", "00000001"]


def test_intersection_with_normsim(tmp_path):
    """negCLIPLoss top 30% ∩ NormSim∞ top 50%: each cut over the whole pool, as the float64 rules say."""
    pool, emb = make_pool(tmp_path / "pool", [600, 600])
    targets = unit(np.random.default_rng(9), 7, 512)
    np.save(tmp_path / "t.npy", targets)
    select(pool, tmp_path / "u.npy", tmp_path / "s", "--batch_size", "5000", "--num_batches", "1",
           "--target_embeddings", tmp_path / "t.npy", "--normsim_fraction", "0.5")
    ncl = ref_negcliploss(emb["b32_img"], emb["b32_txt"])
    ns = np.abs(emb["b32_img"].astype(np.float64) @ targets.astype(np.float64).T).max(1)  # NormSim∞: max_k |s_k|
    keep = (ncl >= -np.sort(-ncl)[360]) & (ns >= -np.sort(-ns)[600])
    kept = {u.decode() for u in u8u8_to_hex(np.load(tmp_path / "u.npy"))}
    assert kept == {f"{i:032x}" for i in np.flatnonzero(keep)}
    side = json.loads(open(f"{tmp_path}/u.npy.json").read())
    assert [s["step"].split()[1] for s in side["removed"]] == ["negcliploss_b32", "normsim_inf_b32"]


def test_blocks_outside_the_unshifted_range_are_shifted(monkeypatch):
    """Similarities so far apart that exp(a·s) overflows (a = 400: a·s up to 400) or a column's sum falls under
    the floor (columns of -a·s): those blocks are computed again, max-shifted, and every row still matches
    float64; a block in range (a = 100, unrelated pairs) is computed once."""
    import kl_filter.scorers.negcliploss as ncl

    products, product = [], ncl._similarities  # the first row of each block product computed
    monkeypatch.setattr(ncl, "_similarities", lambda *a: products.append(a[3]) or product(*a))
    rng = np.random.default_rng(5)
    f = unit(rng, 600, 32)
    g = f.copy()
    g[300:] = -f[300:]  # rows 300+: their own pair at -a, most of their columns far below the block's top
    got, want = ncl.negcliploss_batch(f, g, 400.0, block=256), ref_negcliploss(f, g, 400.0)
    assert np.isfinite(got).all() and rel(got, want) < 1e-5
    assert products == [0, 0, 256, 256, 512, 512]  # every block twice
    products.clear()
    g = unit(rng, 600, 32)
    assert rel(ncl.negcliploss_batch(f, g, 100.0, block=256), ref_negcliploss(f, g)) < 1e-5
    assert products == [0, 256, 512]
