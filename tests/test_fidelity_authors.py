"""Fidelity to the authors' own formulas (issue 25), each against a float64 transcription of THEIR code's arithmetic
(written here from their conventions, not from kl-filter's):

* NormSim∞ (Wang et al.'s ``torch.norm(s, p=inf)`` over a row's similarities to the targets): max_k |s_k|, with
  rows whose most extreme similarity is negative, where it and the signed max_k s_k keep different rows;
* negCLIPLoss (their ``cal_new_clip_score``: s_ii − (τ/2)·log Σ_j exp(s_ij/τ) − (τ/2)·log Σ_j exp(s_ji/τ)) at the
  paper's batch size |B| = 32,768 and D = 768 (slow), and at |B| = 2,048 (fast, the same bound's regression guard);
* IWL's weights (CLIP_Density_Ratio ``iwl/``: image features and prompt normalised, then exp(a·<x̂, p̂> + b) with
  a = 10, b = 0), on float16 rows that are unit only approximately, and on a standard OpenAI-CLIP pool (no
  embeddings.json) where the pool's temperature (a = 100) is refused and the default is not.
"""

import json
import math

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import run_cli
from kl_filter import build_filter
from kl_filter.scorers.negcliploss import negcliploss_batch, negcliploss_batch_torch
from kl_filter.scorers.normsim import max_similarity, max_similarity_torch
from kl_filter.runner import RunContext, run_filter
from kl_filter.core.uids import load_uids, u8u8_to_hex
from minipool import unit, write_shard


# ---- NormSim∞ --------------------------------------------------------------------------------------------------
def authors_normsim_inf(f, t):
    """Their arithmetic in float64: the similarities to every target, then torch.norm(·, p=inf) per row."""
    import torch

    s = torch.from_numpy(np.asarray(f, np.float64)) @ torch.from_numpy(np.asarray(t, np.float64)).T
    return torch.norm(s, p=float("inf"), dim=1).numpy()


@pytest.fixture(scope="module")
def normsim_pool(tmp_path_factory):
    """One shard of 600 rows: 40 point AWAY from a target (most extreme similarity about −0.8), 60 toward one
    (about +0.5), the rest random; 30 targets."""
    root = tmp_path_factory.mktemp("normsim_fid")
    rng = np.random.default_rng(25)
    t = unit(rng, 30, 768).astype(np.float64)
    x = unit(rng, 600, 768).astype(np.float64)
    x[:40] = -0.8 * t[rng.integers(0, 30, 40)] + 0.6 * x[:40]
    x[40:100] = 0.5 * t[rng.integers(0, 30, 60)] + 0.85 * x[40:100]
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16)
    pool = root / "pool"
    pool.mkdir()
    write_shard(pool, "00000000", 600, seed=1, l14_img=x)
    np.save(root / "t.npy", t.astype(np.float16))
    return {"pool": str(pool), "x": x, "t": np.load(root / "t.npy"), "targets": [str(root / "t.npy")], "root": root}


def test_normsim_inf_is_the_authors_max_abs(normsim_pool):
    x, t = normsim_pool["x"], normsim_pool["t"]
    ref = authors_normsim_inf(x, t)
    s64 = x.astype(np.float64) @ t.astype(np.float64).T
    assert (s64[:40].min(1) < -0.7).all() and (s64[:40].max(1) < 0.3).all()  # the negative-extreme rows
    parts = [np.ascontiguousarray(t, np.float32)]
    for got in (max_similarity(x, parts), max_similarity_torch(x, parts, device="cpu")):
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=0)
    # the signed variant (norm=max) is the nearest target's similarity: a different number on those rows
    np.testing.assert_allclose(max_similarity(x, parts, absolute=False), s64.max(1), rtol=1e-5, atol=0)
    assert np.abs(ref[:40] - s64[:40].max(1)).min() > 0.4


def _kept(pool, root, norm, fraction):
    save = str(root / f"ns_{norm}.npy")
    ctx = RunContext(num_workers=1, seed=0, scores_dir=str(root / "scores"), device="cpu")
    run_filter(build_filter("normsim", {"target_embeddings": pool["targets"], "norm": norm, "fraction": fraction}),
               pool["pool"], save, ctx)
    return {int(u, 16) for u in u8u8_to_hex(load_uids(save)).astype(str)}


def test_normsim_inf_selection_is_the_authors_and_differs_from_the_signed_max(normsim_pool):
    """DataComp's top-fraction rule on the authors' scores keeps the rows pointing away from a target; the signed
    max drops them."""
    ref = authors_normsim_inf(normsim_pool["x"], normsim_pool["t"])
    thr = np.sort(ref)[::-1][int(len(ref) * 0.17)]
    want = set(np.flatnonzero(ref >= thr))
    got = _kept(normsim_pool, normsim_pool["root"], "inf", 0.17)
    assert got == want and len(got) == 103
    assert set(range(100)) <= got  # every row pointing away from a target or toward one is in the authors' top 17%
    signed = _kept(normsim_pool, normsim_pool["root"], "max", 0.17)
    assert set(range(40, 100)) <= signed and len(set(range(40)) & signed) <= 5 and len(got ^ signed) >= 70


# ---- negCLIPLoss -----------------------------------------------------------------------------------------------
def clip_like_pairs(n, d, seed):
    """Float16 unit image/text pairs with CLIP's geometry: a shared cone (off-pair cosine 0.12 ± 0.035) and a
    component each pair shares (pair cosine 0.30)."""
    rng = np.random.default_rng(seed)
    c = rng.standard_normal(d)
    c /= np.linalg.norm(c)
    z = rng.standard_normal((n, d)) / math.sqrt(d)
    f = 0.346 * c + 0.424 * z + 0.837 * rng.standard_normal((n, d)) / math.sqrt(d)
    g = 0.346 * c + 0.424 * z + 0.837 * rng.standard_normal((n, d)) / math.sqrt(d)
    del z
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    return f.astype(np.float16), g.astype(np.float16)


def authors_negcliploss(f, g, rows, temperature=0.01, block=256):
    """Their ``cal_new_clip_score`` for one batch, in float64, for the given rows: css_i − norm1_i − norm2_i with
    norm1 = ½·T·log Σ_j exp(s_ij/T) (over the texts), norm2 = ½·T·log Σ_j exp(s_ji/T) (over the images)."""
    F, G = f.astype(np.float64), g.astype(np.float64)
    out = np.empty(len(rows))
    for k in range(0, len(rows), block):
        r = rows[k: k + block]
        s1 = (F[r] @ G.T) / temperature  # row i's similarities to every text
        s2 = (G[r] @ F.T) / temperature  # text i's to every image: s_ji
        lse1 = s1.max(1) + np.log(np.exp(s1 - s1.max(1, keepdims=True)).sum(1))
        lse2 = s2.max(1) + np.log(np.exp(s2 - s2.max(1, keepdims=True)).sum(1))
        out[k: k + block] = (F[r] * G[r]).sum(1) - 0.5 * temperature * lse1 - 0.5 * temperature * lse2
    return out


def rel(got, ref):
    """The README's measure: relative error, taken against 0.01 below 0.01 (scores cross zero)."""
    return float(np.max(np.abs(got - ref) / np.maximum(np.abs(ref), 1e-2)))


def test_negcliploss_float64_diagonal_small_batch():
    """|B| = 2,048, D = 768: CPU kernel and torch twin within 6e-6 (measured 2.9e-6; the float32 einsum diagonal gave 1.7e-5)."""
    f, g = clip_like_pairs(2048, 768, seed=1)
    rows = np.arange(2048)
    ref = authors_negcliploss(f, g, rows)
    assert rel(negcliploss_batch(f, g), ref) < 6e-6
    assert rel(negcliploss_batch_torch(f, g, device="cpu", block=300), ref) < 6e-6


@pytest.mark.slow
def test_negcliploss_at_the_papers_batch_size():
    """|B| = 32,768, D = 768, a = 100: the whole batch through the CPU kernel, 512 rows checked against the
    authors' formula in float64. Measured: 2.9e-6 relative (0.01 floor), 3.1e-8 absolute; the float32 einsum
    diagonal gave 2.2e-5 / 2.2e-7."""
    n = 32768
    f, g = clip_like_pairs(n, 768, seed=0)
    got = negcliploss_batch(f, g, 100.0)
    rows = np.sort(np.random.default_rng(1).choice(n, 512, replace=False))
    ref = authors_negcliploss(f, g, rows)
    assert rel(got[rows], ref) < 1e-5
    assert np.max(np.abs(got[rows] - ref)) < 1e-7
    assert np.isfinite(got).all()


# ---- IWL -------------------------------------------------------------------------------------------------------
def authors_iwl_weights(img, prompt, a=10.0, b=0.0):
    """Their train loop's weights in float64: features and prompt normalised, prompt times a, exp(x̂·(a·p̂) + b)."""
    x = np.asarray(img, np.float64)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    p = np.asarray(prompt, np.float64)
    p = a * (p / np.linalg.norm(p))
    return np.exp(x @ p + b)


@pytest.fixture(scope="module")
def iwl_pool(tmp_path_factory):
    """A standard OpenAI-CLIP pool (no embeddings.json: a = 100 recorded by default), two shards of 500: image
    rows at cosine 0.20 ± 0.03 to the prompt, 5 rows at 0.45, and row norms 0.985..1.015 (float16 unit rows are unit
    to about 1e-3; wider here so the renormalisation shows)."""
    root = tmp_path_factory.mktemp("iwl_fid")
    rng = np.random.default_rng(7)
    p = rng.standard_normal(768)
    p /= np.linalg.norm(p)
    pool = root / "pool"
    pool.mkdir()
    imgs = []
    for s in range(2):
        e = rng.standard_normal((500, 768))
        e -= np.outer(e @ p, p)
        e /= np.linalg.norm(e, axis=1, keepdims=True)
        cos = rng.normal(0.20, 0.03, 500)
        if s == 1:
            cos[:5] = 0.45
        x = cos[:, None] * p + np.sqrt(1 - cos ** 2)[:, None] * e
        x *= rng.uniform(0.985, 1.015, 500)[:, None]
        imgs.append(x.astype(np.float16))
        write_shard(pool, f"{s:08d}", 500, seed=s, uid_start=500 * s, l14_img=imgs[-1])
    np.save(root / "P.npy", (3.0 * p).astype(np.float32))  # not unit: normalised by both sides
    return {"pool": str(pool), "img": np.concatenate(imgs), "P": str(root / "P.npy"), "p": 3.0 * p, "root": root}


def test_iwl_default_is_the_authors_weights(iwl_pool):
    out = iwl_pool["root"] / "W.parquet"
    p = run_cli("weights", "--metadata_dir", iwl_pool["pool"], "--prompt_embedding", iwl_pool["P"], "--arch", "l14",
                "--out", out, "--no_progress", "--num_workers", "1", check=True)
    assert "logit scale 10 from the IWL authors' a = 10" in p.stdout
    t = pq.read_table(out)
    w = authors_iwl_weights(iwl_pool["img"], iwl_pool["p"])  # raw exp(a·<x̂, p̂> + 0)
    np.testing.assert_allclose(t.column("log_weight").to_numpy(), np.log(w), rtol=0, atol=1e-5)
    np.testing.assert_allclose(t.column("weight").to_numpy(), w / w.mean(), rtol=1e-5)
    # the stored rows as they are (no renormalisation) are further off than that: the test can tell
    raw = 10.0 * iwl_pool["img"].astype(np.float64) @ (iwl_pool["p"] / np.linalg.norm(iwl_pool["p"]))
    assert np.max(np.abs(raw - np.log(w))) > 1e-3
    prov = json.loads(t.schema.metadata[b"kl_filter"])["columns"]["weight"]["provenance"]
    assert prov["logit_scale"] == 10.0
    assert prov["logit_scale_source"] == "the IWL authors' a = 10"  # no embeddings.json: nothing else to name


def test_iwl_pool_temperature_is_an_option_and_refused_on_a_standard_pool(iwl_pool, tmp_path):
    """``--logit_scale pool`` takes the pool's (OpenAI CLIP's a = 100 here): the 5 close rows hold the weight,
    so the effective-sample check stops it in one line; the default (10) passes; a number still overrides."""
    common = ["weights", "--metadata_dir", iwl_pool["pool"], "--prompt_embedding", iwl_pool["P"], "--no_progress"]
    p = run_cli(*common, "--logit_scale", "pool", "--out", tmp_path / "pool.parquet")
    err = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(err) == 1 and "lower --logit_scale from 100 to about" in err[0], p.stderr
    assert not (tmp_path / "pool.parquet").exists()
    w = authors_iwl_weights(iwl_pool["img"], iwl_pool["p"], a=100.0)
    assert w.sum() ** 2 / (w ** 2).sum() < 10  # the authors' weights at a = 100: fewer than 10 effective rows
    p = run_cli(*common, "--logit_scale", "20", "--out", tmp_path / "a20.parquet", check=True)
    assert "logit scale 20 from --logit_scale" in p.stdout
    np.testing.assert_allclose(pq.read_table(tmp_path / "a20.parquet").column("log_weight").to_numpy(),
                               np.log(authors_iwl_weights(iwl_pool["img"], iwl_pool["p"], a=20.0)), rtol=0, atol=1e-5)
    bad = run_cli(*common, "--logit_scale", "warm", "--out", tmp_path / "x.parquet")
    err = bad.stderr.strip().splitlines()
    assert bad.returncode == 2 and len(err) == 1 and all(w in err[0] for w in ("--logit_scale", "pool", "'warm'"))


def test_iwl_pool_option_reads_the_recorded_temperature(iwl_pool, tmp_path):
    """With embeddings.json the ``pool`` option is the recorded a, and the default names what the pool records."""
    import shutil

    from kl_filter.pool.temperature import record_family

    pool = shutil.copytree(iwl_pool["pool"], tmp_path / "pool")
    record_family(str(pool), "l14", {"model": "teacher-l", "logit_scale": 4.0, "logit_bias": None})
    common = ["weights", "--metadata_dir", pool, "--prompt_embedding", iwl_pool["P"], "--no_progress"]
    p = run_cli(*common, "--logit_scale", "pool", "--out", tmp_path / "p.parquet", check=True)
    assert "logit scale 4 from embeddings.json (l14: teacher-l)" in p.stdout
    p = run_cli(*common, "--out", tmp_path / "d.parquet", check=True)
    assert "logit scale 10 from the IWL authors' a = 10; the pool records 4" in p.stdout
