"""NormSim and VAS (issue 15) against their formulas written plainly in float64, the UID files against the
float64 rule, resume from --scores_dir, and bad target files as one line and exit 2."""

import glob
import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import run_cli
from kl_filter import build_filter
from kl_filter.scorers.normsim import max_similarity, max_similarity_torch
from kl_filter.stages.scores import read_columns
from kl_filter.runner import RunContext, run_filter
from kl_filter.text.caption import caption_filter
from kl_filter.core.uids import load_uids, u8u8_to_hex
from minipool import make_minipool, unit

RTOL = 1e-5


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    root = tmp_path_factory.mktemp("normsim")
    pool_dir = make_minipool(root / "pool", shards=3, n=400)
    rng = np.random.default_rng(5)
    # targets: two files (an .npy and a DataComp-style .pt dict), some near pool rows so the max is informative
    near = np.load(f"{pool_dir}/00000001.npz")["l14_img"][:50].astype(np.float32)
    near = near + 0.3 * unit(rng, 50, 768).astype(np.float32)
    near = (near / np.linalg.norm(near, axis=1, keepdims=True)).astype(np.float16)
    np.save(root / "t_a.npy", np.concatenate([unit(rng, 250, 768), near]))
    import torch

    torch.save({"image_features": torch.from_numpy(unit(rng, 120, 768).astype(np.float32))}, root / "t_b.pt")
    files = sorted(glob.glob(f"{pool_dir}/*.parquet"))
    uids = np.concatenate([pq.read_table(f, columns=["uid"]).column("uid").to_numpy(zero_copy_only=False)
                           for f in files])
    texts = sum((pq.read_table(f, columns=["text"]).column("text").to_pylist() for f in files), [])
    emb = np.concatenate([np.load(f[: -len(".parquet")] + ".npz")["l14_img"] for f in files]).astype(np.float64)
    targets = np.concatenate([np.load(root / "t_a.npy").astype(np.float64),
                              torch.load(root / "t_b.pt")["image_features"].double().numpy()])
    return {"root": root, "pool": pool_dir, "targets": [str(root / "t_a.npy"), str(root / "t_b.pt")],
            "uids": uids, "texts": texts, "emb": emb, "T": targets}


# ---- the formulas, plainly, in float64 -------------------------------------------------------------------------
def normsim64(f, t, norm):
    s = f @ t.T
    if norm == "2":
        return np.sqrt((s ** 2).sum(axis=1))
    return np.abs(s).max(axis=1) if norm == "inf" else s.max(axis=1)  # inf: the authors' max_k |s_k|


def vas64(f, target_rows):
    s = target_rows.T @ target_rows / len(target_rows)
    return np.einsum("ij,jk,ik->i", f, s, f)


def datacomp_keep(scores, fraction):
    threshold = np.sort(scores)[::-1][int(len(scores) * fraction)]
    return scores >= threshold, threshold


def _run(pool, tmp_path, name, **params):
    ctx = RunContext(num_workers=2, seed=0, scores_dir=str(tmp_path / "scores"))
    save = str(tmp_path / f"{name}.npy")
    summary = run_filter(build_filter(name, params), pool["pool"], save, ctx)
    return summary, save


def _column(pool, tmp_path, column):
    files = sorted(glob.glob(str(tmp_path / "scores" / "*.parquet")))
    return np.concatenate([read_columns(f, [column])[column] for f in files]).astype(np.float64)


def _check_selection(pool, save, ref, fraction):
    """The UID file is the float64 rule's, except rows tied (to float32 rounding) at the threshold."""
    keep, thr = datacomp_keep(ref, fraction)
    want = set(pool["uids"][keep])
    got = set(u8u8_to_hex(load_uids(save)).astype(str))
    differ = np.isin(pool["uids"], sorted(want ^ got))
    assert np.all(np.abs(ref[differ] - thr) <= RTOL * abs(thr)), "rows away from the threshold differ"
    assert len(want ^ got) <= 2


@pytest.mark.parametrize("norm", ["inf", "max", "2"])
def test_normsim_matches_float64(pool, tmp_path, norm):
    summary, save = _run(pool, tmp_path, "normsim", target_embeddings=pool["targets"], norm=norm, fraction=0.3)
    col = f"normsim_{norm}_l14"
    assert summary["scores"]["columns"] == [col]
    got, ref = _column(pool, tmp_path, col), normsim64(pool["emb"], pool["T"], norm)
    np.testing.assert_allclose(got, ref, rtol=RTOL, atol=0)
    _check_selection(pool, save, ref, 0.3)


def test_vas_with_target_files_matches_float64(pool, tmp_path):
    summary, save = _run(pool, tmp_path, "vas", target_embeddings=pool["targets"], fraction=0.3)
    got, ref = _column(pool, tmp_path, "vas_l14"), vas64(pool["emb"], pool["T"])
    np.testing.assert_allclose(got, ref, rtol=RTOL, atol=0)
    _check_selection(pool, save, ref, 0.3)
    # VAS(files) = NormSim_2^2 / N_t: one second moment, two readings
    ns2 = normsim64(pool["emb"], pool["T"], "2")
    np.testing.assert_allclose(got, ns2 ** 2 / len(pool["T"]), rtol=RTOL)


def test_vas_pool_target_is_the_caption_filtered_second_moment(pool, tmp_path):
    summary, save = _run(pool, tmp_path, "vas", target="pool", fraction=0.25)
    mask = caption_filter(pool["texts"])
    assert summary["stats"] is not None and 0 < mask.sum() < len(mask)
    got, ref = _column(pool, tmp_path, "vas_l14"), vas64(pool["emb"], pool["emb"][mask])
    np.testing.assert_allclose(got, ref, rtol=RTOL, atol=0)
    _check_selection(pool, save, ref, 0.25)


def test_columns_are_reused_and_follow_the_targets_content(pool, tmp_path):
    params = dict(target_embeddings=pool["targets"], fraction=0.3)
    first, save = _run(pool, tmp_path, "normsim", **params)
    assert first["scores"]["shards_computed"] == 3
    side = json.loads(open(save + ".json").read())
    assert side["scores"]["shards_reused"] == 0 and side["params"]["target_embeddings"] == pool["targets"]
    again, save2 = _run(pool, tmp_path, "normsim", **params)
    assert again["scores"]["shards_reused"] == 3 and again["scores"]["shards_computed"] == 0
    assert open(save, "rb").read() == open(save2, "rb").read()
    # the same bytes under another name: reused (provenance is the content); changed bytes: recomputed
    copy = tmp_path / "renamed.npy"
    copy.write_bytes(open(pool["targets"][0], "rb").read())
    moved, _ = _run(pool, tmp_path, "normsim", target_embeddings=[str(copy), pool["targets"][1]], fraction=0.3)
    assert moved["scores"]["shards_reused"] == 3
    np.save(copy, np.load(copy)[::-1])  # same rows, other order: other bytes, so recomputed (and the same scores)
    changed, _ = _run(pool, tmp_path, "normsim", target_embeddings=[str(copy), pool["targets"][1]], fraction=0.3)
    assert changed["scores"]["shards_computed"] == 3
    # VAS beside NormSim in the same --scores_dir: both columns kept
    _run(pool, tmp_path, "vas", target_embeddings=pool["targets"], fraction=0.3)
    assert {"normsim_inf_l14", "vas_l14"} <= set(pq.read_schema(glob.glob(str(tmp_path / "scores/*.parquet"))[0]).names)


def test_torch_path_matches_numpy(pool):
    x = np.load(f"{pool['pool']}/00000000.npz")["l14_img"]
    parts = [np.ascontiguousarray(pool["T"][:300], np.float32), np.ascontiguousarray(pool["T"][300:], np.float32)]
    ref = normsim64(x.astype(np.float64), pool["T"], "inf")
    cpu = max_similarity(x, parts, block_rows=128, block_targets=100)  # odd blocks: same max
    tch = max_similarity_torch(x, parts, device="cpu", block_rows=128, block_targets=100)
    np.testing.assert_allclose(cpu, ref, rtol=RTOL, atol=0)
    np.testing.assert_allclose(tch, ref, rtol=RTOL, atol=0)
    # Other blocks are other GEMM shapes, and a BLAS kernel may sum a dot product in another order for another
    # shape (OpenBLAS's Haswell/Zen kernels do; Sandybridge's do not), so the bits may differ: bound, not equality.
    # A float32 dot product of D terms, summed in any order (FMA or not), is within γ_D·Σ_d|x_d t_d| of the exact
    # one (γ_D = D·u/(1 − D·u), u = 2⁻²⁴; Higham, Accuracy and Stability, §3.1), and a max moves by at most the
    # largest error of its terms: so each blocking is within that of the float64 max, per row.
    u = 2.0 ** -24
    gamma = x.shape[1] * u / (1 - x.shape[1] * u)
    x64 = x.astype(np.float64)  # float16 rows and float32 targets: the float32 products' inputs, exactly
    bound = gamma * (np.abs(x64) @ np.abs(pool["T"]).T).max(axis=1)
    exact = np.abs(x64 @ pool["T"].T).max(axis=1)  # NormSim∞: max_k |s_k|
    default = max_similarity(x, parts)
    for got in (cpu, default):
        assert (np.abs(got - exact) <= bound).all()
    assert (np.abs(cpu - default) <= 2 * bound).all()


@pytest.mark.parametrize("case", ["dimension", "norm", "empty", "nan", "pickle", "missing"])
def test_bad_target_files_are_one_line(pool, tmp_path, case):
    bad = tmp_path / ("bad.pt" if case == "pickle" else "bad.npy")
    rng = np.random.default_rng(0)
    marker = tmp_path / "code_ran"
    if case == "dimension":
        np.save(bad, unit(rng, 10, 512))
    elif case == "norm":
        np.save(bad, unit(rng, 10, 768) * np.float16(0.5))
    elif case == "empty":
        np.save(bad, np.zeros((0, 768), np.float16))
    elif case == "nan":
        a = unit(rng, 10, 768)
        a[3, 7] = np.nan
        np.save(bad, a)
    elif case == "pickle":  # unpickling this file would run code: it must be refused, not executed
        import torch

        class Payload:
            def __reduce__(self):
                return (os.system, (f"touch {marker}",))

        torch.save({"image_features": Payload()}, bad)
    name = "vas" if case in ("norm", "pickle", "missing") else "normsim"  # one loader: each case through one
    p = run_cli("select", "--name", name, "--target_embeddings", pool["targets"][0], bad, "--fraction", "0.3",
                "--metadata_dir", pool["pool"], "--save_path", tmp_path / "x.npy", "--no_progress")
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0] and "Traceback" not in p.stderr, p.stderr
    assert not marker.exists() and not (tmp_path / "x.npy").exists()


def test_missing_targets_and_conflicts_are_one_line(pool, tmp_path):
    from kl_filter.core.errors import KLFilterError

    t = pool["targets"][0]
    cases = [("normsim", {"target_embeddings": [t], "norm": "1", "fraction": 0.3}, "--norm"),
             ("normsim", {"target_embeddings": [t], "fraction": 0.3, "threshold": 0.1}, "exactly one"),
             ("vas", {"target": "pool", "target_embeddings": [t], "fraction": 0.3}, "not both"),
             ("normsim", {"fraction": 0.3}, "--target_embeddings")]
    for name, params, says in cases:
        with pytest.raises(KLFilterError) as e:
            build_filter(name, params).check_assets()
        assert says in str(e.value) and "\n" not in str(e.value)
    p = run_cli("select", "--name", "vas", "--fraction", "0.3", "--metadata_dir", pool["pool"], "--save_path",
                tmp_path / "x.npy", "--no_progress")  # the recipe vas_in1k_l14_30 without its files: the hint
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and "--target pool" in p.stderr, p.stderr
    assert "in1k_clip_vit_l14" in p.stderr and not (tmp_path / "x.npy").exists()


def test_vas_in1k_recipe_skips_offline_with_the_reason():
    from kl_filter.apps.tiny.recipes import offline_reason
    from kl_filter.recipes import load_recipe

    reason = offline_reason(load_recipe("vas_in1k_l14_30"))
    assert reason and "in1k_clip_vit_l14" in reason
    assert offline_reason(load_recipe("vas_pool_l14_30")) is None


def test_vas_cpu_kernel_matches_float64_for_any_block():
    """VAS's CPU kernel (fᵀ S f, float32 blocks of rows) against float64; another block size is another GEMM shape,
    so it is held to the same float64-derived bound, not to the default's bits."""
    from kl_filter.scorers.vas import second_moment_form

    rng = np.random.default_rng(4)
    x = unit(rng, 3000, 96).astype(np.float16)
    t = unit(rng, 400, 96).astype(np.float64)
    s = t.T @ t / len(t)
    x64 = x.astype(np.float64)
    ref = np.einsum("ij,jk,ik->i", x64, s, x64)
    # float32 S, then two float32 dot products of D terms: a few γ_D of Σ|x||S||x|
    u = 2.0 ** -24
    bound = 4 * 96 * u * np.einsum("ij,jk,ik->i", np.abs(x64), np.abs(s), np.abs(x64))
    for block in (None, 7, 1000, 4096):
        got = second_moment_form(x, s) if block is None else second_moment_form(x, s, block)
        assert got.dtype == np.float32 and (np.abs(got - ref) <= bound).all()
