"""The four density-ratio scores against a plain float64 implementation written here from the formulas.

D_KL  = Σ softmax(s)·s − (LSE − log N)       D_KLR = LSE − log N − mean(s)        s = a·x·Yᵀ, a = 100
D_C   = ‖x − μ_target‖²                        D_W   = (x − μ_target)ᵀ Σ_other (x − μ_target)
"""

import math
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import run_cli
from minipool import TEXTS, make_minipool

A = 100.0


def ref_kl(x, y, a=A):
    s = a * x.astype(np.float64) @ y.astype(np.float64).T
    m = s.max(axis=1, keepdims=True)
    e = np.exp(s - m)
    lse = m[:, 0] + np.log(e.sum(axis=1))
    p = e / e.sum(axis=1, keepdims=True)
    n = y.shape[0]
    return (p * s).sum(axis=1) - (lse - math.log(n)), lse - math.log(n) - s.mean(axis=1)


def ref_centered(x, mu):
    d = x.astype(np.float64) - mu
    return (d * d).sum(axis=1)


def ref_whitened(x, mu, cov):
    d = x.astype(np.float64) - mu
    return ((d @ cov) * d).sum(axis=1)


def rel_err(got, ref):
    return float(np.max(np.abs(got.astype(np.float64) - ref) / np.maximum(np.abs(ref), 1e-3)))


def caption_ok(text):
    """DataComp's caption filter on the minipool's fixed captions (English, > 1 token, > 5 chars)."""
    from kl_filter.text.langid import fasttext_english

    return len(text) > 5 and len(text.split()) > 1 and bool(fasttext_english([text])[0])


def test_sixteen_columns_match_float64(tmp_path):
    root = make_minipool(tmp_path / "pool", shards=2, n=400)
    stats, scores = tmp_path / "stats.npz", tmp_path / "scores"
    run_cli("stats", "--metadata_dir", root, "--out", stats, "--num_samples", "97", "--seed", "4", "--no_progress",
            check=True)
    run_cli("score", "--metadata_dir", root, "--stats", stats, "--out", scores, "--no_progress", check=True)
    st = np.load(stats)
    # reference statistics recomputed plainly: caption-filtered rows, float64 mean and ddof=1 covariance
    emb = {k: np.concatenate([np.load(f"{root}/{s:08d}.npz")[k] for s in range(2)]) for k in
           ("b32_img", "b32_txt", "l14_img", "l14_txt")}
    texts = [TEXTS[i % len(TEXTS)] for i in range(400)] * 2
    ok = np.array([caption_ok(t) for t in texts])
    assert int(st["filtered_rows"]) == ok.sum()
    for k, v in emb.items():
        f = v[ok].astype(np.float64)
        np.testing.assert_allclose(st[f"{k}_mean"], f.mean(axis=0), rtol=0, atol=1e-12)
        np.testing.assert_allclose(st[f"{k}_cov"], np.cov(f, rowvar=False, ddof=1), rtol=0, atol=1e-12)
        assert st[f"{k}_sample"].shape == (97, v.shape[1]) and st[f"{k}_sample"].dtype == np.float16
        # samples are distinct pool rows that pass the caption filter (without replacement)
        rows = {r.tobytes() for r in v[ok]}
        assert all(r.tobytes() in rows for r in st[f"{k}_sample"])
        assert len({r.tobytes() for r in st[f"{k}_sample"]}) == 97
    got = {}
    for s in range(2):
        t = pq.read_table(scores / f"{s:08d}.parquet")
        assert t.column("uid").to_pylist() == pq.read_table(f"{root}/{s:08d}.parquet").column("uid").to_pylist()
        for c in t.column_names[1:]:
            got.setdefault(c, []).append(t.column(c).to_numpy())
    got = {c: np.concatenate(v) for c, v in got.items()}
    assert len(got) == 16 and all(v.dtype == np.float32 for v in got.values())
    other = {"txt": "img", "img": "txt"}
    worst = {}
    for arch in ("b32", "l14"):
        for tgt in ("txt", "img"):
            x = emb[f"{arch}_{tgt}"]
            kl, klr = ref_kl(x, st[f"{arch}_{other[tgt]}_sample"])
            refs = {"kl": kl, "kl_reverse": klr, "centered": ref_centered(x, st[f"{arch}_{tgt}_mean"]),
                    "whitened": ref_whitened(x, st[f"{arch}_{tgt}_mean"], st[f"{arch}_{other[tgt]}_cov"])}
            for mode, ref in refs.items():
                worst[f"{mode}_{arch}_{tgt}"] = rel_err(got[f"{mode}_{arch}_{tgt}"], ref)
            assert (got[f"kl_{arch}_{tgt}"] <= math.log(97) + 1e-5).all()
    assert max(worst.values()) <= 1e-5, worst


@pytest.mark.parametrize("n,d", [(1, 64), (7, 512), (300, 768)])
def test_engine_edge_sizes_and_saturation(n, d):
    from kl_filter.kernels.kl import density_ratio_kl
    from kl_filter.kernels.kl_numpy import density_ratio_kl as blocked

    rng = np.random.default_rng(n)
    y = rng.standard_normal((n, d)).astype(np.float32)
    y = (y / np.linalg.norm(y, axis=1, keepdims=True)).astype(np.float16)
    x = np.concatenate([y[:3], rng.standard_normal((50, d)).astype(np.float16)])
    x = (x / np.linalg.norm(x.astype(np.float32), axis=1, keepdims=True)).astype(np.float16)
    kl, klr = density_ratio_kl(x, y, device="cpu")
    rk, rr = ref_kl(x, y)
    assert np.isfinite(kl).all() and (kl <= math.log(n) + 1e-5).all()
    if n == 1:  # one sample: both scores are exactly 0; float32 scores s leave ~1e-6 absolute
        assert np.abs(kl).max() <= 1e-5 and np.abs(klr).max() <= 1e-5
        return
    assert rel_err(kl, rk) <= 1e-5 and rel_err(klr, rr) <= 1e-5
    k2, r2 = blocked(x, y, block_rows=5, block_samples=3)  # blocks that divide neither size
    assert rel_err(k2, rk) <= 1e-5 and rel_err(r2, rr) <= 1e-5


def test_stats_invariant_to_workers_and_shard_order(tmp_path):
    from kl_filter.pool import Pool
    from kl_filter.stats.reference import compute_stats

    root = make_minipool(tmp_path / "a", shards=3, n=200)
    # the same rows under other shard names, in another order
    b = tmp_path / "b"
    b.mkdir()
    for src, dst in zip(("00000000", "00000001", "00000002"), ("zz", "aa", "mm")):
        for ext in (".parquet", ".npz"):
            shutil.copy(f"{root}/{src}{ext}", b / f"{dst}{ext}")
    s1 = compute_stats(Pool(root), num_samples=50, seed=9, num_workers=1)
    s2 = compute_stats(Pool(root), num_samples=50, seed=9, num_workers=3)
    s3 = compute_stats(Pool(str(b)), num_samples=50, seed=9, num_workers=2)
    s4 = compute_stats(Pool(root), num_samples=50, seed=10, num_workers=2)
    keys = [k for k in s1.arrays if k.endswith(("_sample", "_mean", "_cov", "_sample_uids"))]
    assert all(np.array_equal(s1[k], s2[k]) for k in keys)
    assert all(np.array_equal(s1[k], s3[k]) for k in keys)
    assert not np.array_equal(s1["l14_img_sample_uids"], s4["l14_img_sample_uids"])
    # images and texts are independent draws
    assert not np.array_equal(s1["l14_img_sample_uids"], s1["l14_txt_sample_uids"])


def test_select_kl_matches_float64_reference_selection(tmp_path):
    root = make_minipool(tmp_path / "pool", shards=3, n=500)
    out = tmp_path / "kl.npy"
    run_cli("select", "--name", "kl", "--mode", "kl_reverse", "--arch", "l14", "--target", "txt", "--fraction", "0.25",
            "--num_samples", "64", "--seed", "2", "--scores_dir", tmp_path / "s", "--metadata_dir", root,
            "--save_path", out, "--no_progress", check=True)
    st = np.load(tmp_path / "s" / "stats.npz")
    x = np.concatenate([np.load(f"{root}/{s:08d}.npz")["l14_txt"] for s in range(3)])
    uids = np.array([f"{i:032x}" for i in range(1500)])
    _, ref = ref_kl(x, st["l14_img_sample"])
    thr = -np.sort(-ref)[int(len(ref) * 0.25)]
    want = set(uids[ref >= thr])
    from kl_filter.core.uids import u8u8_to_hex

    got = {u.decode() for u in u8u8_to_hex(np.load(out))}
    near = set(uids[np.abs(ref - thr) <= 1e-5 * abs(thr)])
    assert (got ^ want) <= near, len(got ^ want)
    side = __import__("json").load(open(f"{out}.json"))
    assert side["rules"][0]["column"] == "kl_reverse_l14_txt" and side["seed"] == 2
    assert side["stats"]["num_reference_samples"]["l14_img"] == 64 and side["params"]["num_samples"] == 64


def test_managed_stats_are_reused_when_more_samples_are_asked_than_rows_pass(tmp_path):
    """N asked > caption-filtered rows: N drawn = those rows; a rerun with the same flags reuses the file."""
    root = make_minipool(tmp_path / "pool", shards=2, n=300)
    stats = tmp_path / "s" / "stats.npz"

    def select(num_samples, save):
        run_cli("select", "--name", "kl", "--mode", "kl", "--arch", "b32", "--target", "txt", "--fraction", "0.5",
                "--num_samples", num_samples, "--scores_dir", tmp_path / "s", "--metadata_dir", root,
                "--save_path", tmp_path / save, "--no_progress", check=True)

    select(100_000, "a.npy")
    st = np.load(stats)
    drawn, rows = int(st["num_samples"]), int(st["filtered_rows"])
    assert drawn == rows == st["b32_img_sample"].shape[0] < 100_000 and int(st["num_samples_asked"]) == 100_000
    before = stats.stat().st_mtime_ns
    select(100_000, "b.npy")
    assert stats.stat().st_mtime_ns == before  # reused, not redrawn
    assert (tmp_path / "a.npy").read_bytes() == (tmp_path / "b.npy").read_bytes()
    select(50, "c.npy")  # another N is a redraw
    assert int(np.load(stats)["num_samples"]) == 50 and stats.stat().st_mtime_ns != before
