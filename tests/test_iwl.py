"""Importance Weight Learning (IWL, issue 17): the weights file against float64 exp(a·<u_x, p>)/mean, the ``iwl``
filter's top cut (DataComp's rule) and systematic resampling (counts floor/ceil of N·p_i, seeded, identical for
any worker count), prompts encoded by a local open_clip checkpoint, bad input, and the report's view of the
log-weight column."""

import glob
import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import run_cli
from kl_filter.apps.cli import main
from kl_filter.filters.base import Resample
from kl_filter.runner import RunContext, ShardScores, evaluate_rules, run_filter
from kl_filter.rules.weights import boundaries, combine, shard_sums, systematic_counts
from kl_filter.core.uids import hex_to_u8u8, load_uids, u8u8_to_hex
from minipool import make_minipool, write_shard

A, N = 10.0, 30_000


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("iwl")
    pool = make_minipool(root / "pool", shards=3, n=400)
    rng = np.random.default_rng(17)
    p = rng.standard_normal(768) * 3  # not unit: the tool normalises it
    np.save(root / "P.npy", p)
    u = np.concatenate([np.load(f)["l14_img"].astype(np.float64) for f in sorted(glob.glob(f"{pool}/*.npz"))])
    uids = np.concatenate([pq.read_table(f, columns=["uid"]).column("uid").to_numpy(zero_copy_only=False)
                           for f in sorted(glob.glob(f"{pool}/*.parquet"))])
    u /= np.linalg.norm(u, axis=1, keepdims=True)  # the authors' convention: image rows renormalised, as the prompt
    logw = A * u @ (p / np.linalg.norm(p))
    return {"root": root, "pool": pool, "P": str(root / "P.npy"), "logw": logw, "uids": uids}


def _weights(path):
    t = pq.read_table(path)
    return t, json.loads(t.schema.metadata[b"kl_filter"])


# ---- the weights file ------------------------------------------------------------------------------------------
def test_weights_match_float64(setup):
    root, out = setup["root"], setup["root"] / "W.parquet"
    run_cli("weights", "--metadata_dir", setup["pool"], "--prompt_embedding", setup["P"], "--arch", "l14",
            "--logit_scale", "10", "--out", out, check=True)  # the acceptance command, exactly
    t, meta = _weights(out)
    assert t.column_names == ["uid", "weight", "log_weight"] and t.num_rows == 1200
    assert t.schema.field("weight").type == "float" and t.schema.field("log_weight").type == "float"
    assert list(t.column("uid").to_pylist()) == list(setup["uids"])  # pool order
    want = np.exp(setup["logw"]) / np.exp(setup["logw"]).mean()
    np.testing.assert_allclose(t.column("weight").to_numpy(), want, rtol=1e-5, atol=0)
    np.testing.assert_allclose(t.column("log_weight").to_numpy(), setup["logw"], rtol=0, atol=2e-6)
    assert abs(t.column("weight").to_numpy().astype(np.float64).mean() - 1) < 1e-6
    col = meta["columns"]["weight"]
    ess = want.sum() ** 2 / (want ** 2).sum()
    assert col["effective_sample_size"] == pytest.approx(ess, rel=1e-6)
    prov = col["provenance"]
    assert prov["scorer"] == "iwl" and prov["arch"] == "l14" and prov["logit_scale"] == 10.0
    p32 = (np.load(setup["P"]) / np.linalg.norm(np.load(setup["P"]))).astype("<f4")
    import hashlib

    h = hashlib.sha256(p32.tobytes()).hexdigest()
    assert prov["prompt_sha256"] == [h] and col["score_column"] == f"iwl_l14_{h[:8]}"

    # through a scores directory: the log-weights land there like any score and are reused on a second run
    sc = root / "scores"
    for i in range(2):
        p = run_cli("weights", "--metadata_dir", setup["pool"], "--prompt_embedding", setup["P"], "--arch", "l14",
                    "--logit_scale", "10", "--out", root / f"W{i}.parquet", "--scores_dir", sc, "--no_progress",
                    "--num_workers", 2 - i, check=True)
        assert f"computed for {3 * (1 - i)}, reused for {3 * i}" in p.stdout
        assert pq.read_table(root / f"W{i}.parquet").equals(t)
    stored = pq.read_table(sc / "00000001.parquet")
    assert stored.column_names == ["uid", col["score_column"]]


def test_several_prompts_and_combine(setup, tmp_path):
    from kl_filter.scorers.iwl import IWLScorer
    from kl_filter.stages.weights import write_weights
    from kl_filter.engines import get_engine

    rng = np.random.default_rng(3)
    P = rng.standard_normal((3, 768))
    np.save(tmp_path / "P3.npy", P)
    Pn = P / np.linalg.norm(P, axis=1, keepdims=True)
    u = np.concatenate([np.load(f)["l14_img"].astype(np.float64)
                        for f in sorted(glob.glob(f"{setup['pool']}/*.npz"))])
    l = 5.0 * (u / np.linalg.norm(u, axis=1, keepdims=True)) @ Pn.T  # rows renormalised (the authors' convention)
    engine = get_engine("local", 2)
    each = IWLScorer(prompt_embedding=str(tmp_path / "P3.npy"), logit_scale=5.0)
    assert len(each.outputs()) == 3
    write_weights(setup["pool"], each, str(tmp_path / "W3.parquet"), engine=engine, device="cpu")
    t, meta = _weights(tmp_path / "W3.parquet")
    for k, c in enumerate(each.outputs()):
        pid = c.rsplit("_", 1)[1]
        np.testing.assert_allclose(t.column(f"log_weight_{pid}").to_numpy(), l[:, k], atol=2e-6, rtol=0)
        want = np.exp(l[:, k]) / np.exp(l[:, k]).mean()
        np.testing.assert_allclose(t.column(f"weight_{pid}").to_numpy(), want, rtol=1e-5)
    for how, ref in (("mean", np.log(np.exp(l).mean(axis=1))), ("max", l.max(axis=1))):
        s = IWLScorer(prompt_embedding=str(tmp_path / "P3.npy"), logit_scale=5.0, combine=how)
        (c,) = s.outputs()
        assert c.startswith(f"iwl_l14_{how}_")
        write_weights(setup["pool"], s, str(tmp_path / f"{how}.parquet"), engine=engine, device="cpu")
        np.testing.assert_allclose(pq.read_table(tmp_path / f"{how}.parquet").column("log_weight").to_numpy(), ref,
                                   atol=2e-6, rtol=0)


# ---- the filter --------------------------------------------------------------------------------------------------
def _sel(setup, out, *extra):
    """The acceptance command (a subprocess, as a user runs it)."""
    return run_cli("select", "--name", "iwl", "--prompt_embedding", setup["P"], "--arch", "l14", "--logit_scale", "10",
                   *extra, "--metadata_dir", setup["pool"], "--save_path", out, check=True)


def _sel_here(setup, out, *extra):
    """The same in this process, on the CPU (``--device auto`` imports torch to look for a GPU: seconds)."""
    assert main(["select", "--name", "iwl", "--prompt_embedding", setup["P"], "--arch", "l14", "--logit_scale", "10",
                 *map(str, extra), "--metadata_dir", setup["pool"], "--save_path", str(out), "--no_progress",
                 "--device", "cpu"]) == 0


def test_fraction_is_datacomps_top_cut(setup):
    out = setup["root"] / "X.npy"
    _sel(setup, out, "--fraction", "0.2")
    l32 = setup["logw"].astype(np.float32)  # the stored column is float32
    thr = -np.sort(-l32)[int(len(l32) * 0.2)]
    want = np.sort(setup["uids"][l32 >= thr]).astype("S32")
    assert np.array_equal(u8u8_to_hex(load_uids(str(out))), want) and len(want) == 241


def _counts(setup, path):
    got = load_uids(str(path))
    pos = {u: i for i, u in enumerate(setup["uids"])}
    counts = np.zeros(len(setup["uids"]), np.int64)
    for u in u8u8_to_hex(got):
        counts[pos[u.decode()]] += 1
    return got, counts


def test_resample_counts_follow_the_weights(setup):
    root = setup["root"]
    p = _sel(setup, root / "R.npy", "--resample", N, "--seed", 0)
    got, counts = _counts(setup, root / "R.npy")
    assert len(got) == N and counts.sum() == N
    assert np.array_equal(got, np.sort(got, order=("f0", "f1")))  # sorted, with repeats
    l = setup["logw"].astype(np.float32).astype(np.float64)  # from the stored float32 log-weights
    np_i = N * np.exp(l - l.max()) / np.exp(l - l.max()).sum()
    assert ((counts >= np.floor(np_i - 1e-6)) & (counts <= np.ceil(np_i + 1e-6))).all()  # systematic
    exact = N * np.exp(setup["logw"]) / np.exp(setup["logw"]).sum()  # float64 from the embeddings
    assert np.abs(counts - exact).max() < 1 + 1e-3
    side = json.loads((root / "R.npy.json").read_text())
    (rule,) = side["rules"]
    w = np.exp(setup["logw"])
    assert rule["rule"] == "resample" and rule["n"] == N and rule["method"] == "systematic"
    assert rule["effective_sample_size"] == pytest.approx(w.sum() ** 2 / (w ** 2).sum(), rel=1e-6)
    assert rule["distinct_uids"] == side["kept_distinct"] == int((counts > 0).sum())
    assert side["kept"] == N and side["pool_rows"] == side["kept_distinct"] + sum(s["removed"] for s in side["removed"])
    # seeded: the same bytes again and with one worker; another seed moves the draws
    _sel_here(setup, root / "R1.npy", "--resample", N, "--seed", 0, "--num_workers", 1)
    _sel_here(setup, root / "R2.npy", "--resample", N, "--seed", 1)
    assert (root / "R.npy").read_bytes() == (root / "R1.npy").read_bytes()
    assert (root / "R.npy").read_bytes() != (root / "R2.npy").read_bytes()
    assert "30,000" in p.stdout


def test_resample_among_the_top_rows(setup, tmp_path):
    from kl_filter.filters import build_filter

    flt = build_filter("iwl", {"prompt_embedding": setup["P"], "fraction": 0.1, "resample": 500, "logit_scale": 10.0})
    s = run_filter(flt, setup["pool"], str(tmp_path / "t.npy"), RunContext(num_workers=2, seed=5, device="cpu"))
    _, counts = _counts(setup, tmp_path / "t.npy")
    l32 = setup["logw"].astype(np.float32)
    top = l32 >= -np.sort(-l32)[int(len(l32) * 0.1)]
    assert counts.sum() == 500 and (counts[~top] == 0).all() and s["rules"][1]["eligible_rows"] == top.sum()
    assert s["kept_distinct"] + sum(r["removed"] for r in s["removed"]) == 1200


def test_duplicates_in_the_pool_are_still_refused(tmp_path, setup):
    from kl_filter.filters import build_filter
    from kl_filter.core.errors import KLFilterError

    make_minipool(tmp_path / "pool", shards=2, n=50)
    write_shard(str(tmp_path / "pool"), "00000002", 10, seed=9, uid_start=45)  # uids 45..49 again
    flt = build_filter("iwl", {"prompt_embedding": setup["P"], "resample": 100})
    with pytest.raises(KLFilterError, match="more than once"):
        run_filter(flt, str(tmp_path / "pool"), str(tmp_path / "d.npy"), RunContext(num_workers=1, device="cpu"))


# ---- systematic resampling, exactly ------------------------------------------------------------------------------
def _systematic(logw_shards, n, u, eligible=None):
    eligible = eligible or [None] * len(logw_shards)
    parts = [shard_sums(l, e) for l, e in zip(logw_shards, eligible)]
    total = combine(parts)
    bounds = boundaries(parts, total, n, u)
    return np.concatenate([systematic_counts(l, e, total, n, u, b)
                           for l, e, b in zip(logw_shards, eligible, bounds)])


def test_systematic_counts_exact():
    # weights 1, 2, 3, 4 (sum 10), N = 5: row i takes the points u + k in [B_{i-1}, B_i), B = 0.5, 1.5, 3, 5
    l = np.log([1.0, 2, 3, 4])
    assert _systematic([l], 5, 0.5).tolist() == [0, 1, 2, 2]  # points 0.5, 1.5, 2.5, 3.5, 4.5
    assert _systematic([l[:1], l[1:3], l[3:]], 5, 0.5).tolist() == [0, 1, 2, 2]
    assert _systematic([l], 5, 0.0).tolist() == [1, 1, 1, 2]  # points 0, 1, 2, 3, 4
    assert _systematic([l], 5, 0.99).tolist() == [0, 1, 2, 2]
    assert _systematic([l], 5, 0.2).tolist() == [1, 1, 1, 2]  # points 0.2, 1.2, 2.2, 3.2, 4.2
    assert _systematic([l], 10, 0.3).tolist() == [1, 2, 3, 4]  # N·p integral: exact whatever u
    assert _systematic([np.array([0.0, -np.inf, np.nan, 0.0])], 4, 0.2).tolist() == [2, 0, 0, 2]


@pytest.mark.parametrize("split", [[1000], [1, 999], [300, 0, 700], [250] * 4])
def test_systematic_any_sharding(split):
    rng = np.random.default_rng(4)
    l = rng.normal(0, 2, 1000) + 500  # large log-weights: exp() alone would overflow
    u = 0.37
    cuts = np.cumsum([0] + split)
    got = _systematic([l[a:b] for a, b in zip(cuts[:-1], cuts[1:])], 7777, u)
    ref = _systematic([l], 7777, u)
    assert np.array_equal(got, ref) and got.sum() == 7777
    p = np.exp(l - l.max()) / np.exp(l - l.max()).sum() * 7777
    assert ((got == np.floor(p)) | (got == np.ceil(p))).all()


def test_resample_rule_in_the_global_step():
    rng = np.random.default_rng(8)
    x = rng.normal(0, 1, 3000).astype(np.float32)
    ok = rng.random(3000) > 0.5
    uids = hex_to_u8u8([f"{i:032x}" for i in range(3000)])
    shards = [ShardScores(uids[i:i + 1000], {"w": x[i:i + 1000], "ok": ok[i:i + 1000]}) for i in range(0, 3000, 1000)]
    from kl_filter.filters.base import Keep

    masks, facts = evaluate_rules([Keep("ok"), Resample("w", 2000)], shards, seed=0)
    keep = np.concatenate(masks)
    assert not keep[~ok].any() and facts[1]["draws"] == 2000 and facts[1]["eligible_rows"] == ok.sum()
    assert facts[1]["distinct_uids"] == keep.sum()
    with pytest.raises(Exception, match="--resample must be"):
        Resample("w", 0)


# ---- prompts from a local open_clip checkpoint --------------------------------------------------------------------
def test_prompt_from_a_local_checkpoint(setup, tmp_path, capsys):
    torch = pytest.importorskip("torch")
    open_clip = pytest.importorskip("open_clip")
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    (cfg / "iwltest.json").write_text(json.dumps({  # a tiny random CLIP whose text tower gives 768-d (as l14)
        "embed_dim": 768,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}))
    open_clip.add_model_config(str(cfg))
    torch.manual_seed(0)
    model = open_clip.create_model("iwltest").eval()
    torch.save({"name": "iwltest", "state_dict": model.state_dict()}, tmp_path / "ck.pt")
    prompts = ["a photo of food", "a handwritten digit"]
    with torch.inference_mode():
        e = model.encode_text(open_clip.get_tokenizer("iwltest")(prompts)).float()
        e = torch.nn.functional.normalize(e, dim=-1)
    np.save(tmp_path / "enc.npy", e.numpy())
    common = ["--metadata_dir", setup["pool"], "--arch", "l14", "--combine", "mean", "--no_progress"]
    run_cli("weights", "--prompt", *prompts, "--model", "iwltest", "--checkpoint", tmp_path / "ck.pt",
            "--model_config", cfg, "--out", tmp_path / "a.parquet", *common, env={"HF_HUB_OFFLINE": "1"}, check=True)
    assert main(["weights", "--prompt_embedding", str(tmp_path / "enc.npy"), "--out", str(tmp_path / "b.parquet"),
                 *common]) == 0
    (a, ma), (b, mb) = _weights(tmp_path / "a.parquet"), _weights(tmp_path / "b.parquet")
    assert a.equals(b) and ma["columns"] == mb["columns"]  # the same embedding: same column, same weights
    assert ma["scorer"]["prompts"] == prompts and ma["scorer"]["columns"][0].startswith("iwl_l14_mean_")
    # a checkpoint that does not load (garbage, or another architecture): one line, exit 2
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    torch.save({"state_dict": {"text_projection": torch.zeros(3, 3)}}, tmp_path / "other.pt")
    for bad, why in (("bad.pt", "cannot load 'iwltest'"), ("other.pt", "cannot load 'iwltest'"),
                     ("missing.pt", "checkpoint not found")):
        capsys.readouterr()
        assert main(["weights", "--prompt", "a photo of food", "--model", "iwltest", "--checkpoint",
                     str(tmp_path / bad), "--model_config", str(cfg), "--out", str(tmp_path / "c.parquet"),
                     *common]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and why in err[0], err


# ---- bad input ---------------------------------------------------------------------------------------------------
def test_bad_input(setup, tmp_path, capsys):
    np.save(tmp_path / "d512.npy", np.ones(512))
    np.save(tmp_path / "nan.npy", np.full(768, np.nan))
    np.save(tmp_path / "zero.npy", np.zeros(768))
    np.save(tmp_path / "dup.npy", np.ones((2, 768)))
    pool, P = setup["pool"], setup["P"]
    sel = ["select", "--name", "iwl", "--metadata_dir", pool, "--save_path", str(tmp_path / "x.npy"), "--no_progress",
           "--device", "cpu"]
    wts = ["weights", "--metadata_dir", pool, "--out", str(tmp_path / "w.parquet"), "--no_progress"]
    cases = {
        "--resample must be": sel + ["--prompt_embedding", P, "--resample", "0"],
        "--resample must be ": sel + ["--prompt_embedding", P, "--resample", "-5"],
        "dimension 512, but l14_img is 768-d": wts + ["--prompt_embedding", str(tmp_path / "d512.npy")],
        "not finite": sel + ["--prompt_embedding", str(tmp_path / "nan.npy"), "--fraction", "0.1"],
        "all zeros": wts + ["--prompt_embedding", str(tmp_path / "zero.npy")],
        "given twice": wts + ["--prompt_embedding", str(tmp_path / "dup.npy")],
        "prompt embedding file not found": wts + ["--prompt_embedding", str(tmp_path / "none.npy")],
        "exactly one of --prompt": wts + ["--prompt_embedding", P, "--prompt", "food"],
        "needs --model ARCH and --checkpoint": wts + ["--prompt", "food"],
        "needs --fraction, --threshold or --resample": sel + ["--prompt_embedding", P],
        "choose --combine": sel + ["--prompt_embedding", str(tmp_path / "two.npy"), "--fraction", "0.1"],
        "--logit_scale must be a positive": wts + ["--prompt_embedding", P, "--logit_scale", "0"],
        "lower --logit_scale from 100000 to about": wts + ["--prompt_embedding", P, "--logit_scale", "1e5"],
        "lower the logit scale by a factor": sel + ["--prompt_embedding", P, "--logit_scale", "1e5",
                                                    "--resample", "10"],
    }
    np.save(tmp_path / "two.npy", np.random.default_rng(0).standard_normal((2, 768)))
    for want, argv in cases.items():
        assert main(argv) == 2, want
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and want.strip() in err[0], (want, err)
    assert not os.path.exists(tmp_path / "w.parquet") and not os.path.exists(tmp_path / "x.npy")


# ---- the report shows a log-weight column like any score ---------------------------------------------------------
def test_report_shows_the_log_weights(setup, tmp_path):
    sc = tmp_path / "scores"
    assert main(["weights", "--metadata_dir", setup["pool"], "--prompt_embedding", setup["P"], "--logit_scale", "10", "--out",
                 str(tmp_path / "W.parquet"), "--scores_dir", str(sc), "--no_progress"]) == 0
    out = tmp_path / "rep"
    assert main(["inspect", "--metadata_dir", setup["pool"], "--scores_dir", str(sc), "--out", str(out), "--filters",
                 "--sample_size", "300", "--examples", "3", "--bins", "10", "--no_progress"]) == 0
    fig = json.loads((out / "figures.json").read_text())
    (col,) = [c for c in fig["score_columns"] if c.startswith("iwl_l14_")]
    l32 = setup["logw"].astype(np.float32).astype(np.float64)
    c = fig["columns"][col]
    assert c["summary"]["count"] == 1200 and c["summary"]["max"] == l32.max() and c["summary"]["min"] == l32.min()
    assert sum(c["histogram"]["counts"]) == 1200
    order = np.argsort(-l32, kind="stable")
    assert [e["uid"] for e in c["top"]] == list(setup["uids"][order[:3]])
    assert [e["score"] for e in c["bottom"]] == sorted(l32)[:3]
    assert col in (out / "index.html").read_text()


# ---- the Ray engine gives the same bytes -------------------------------------------------------------------------
def test_ray_identical_to_local(setup, tmp_path, monkeypatch):
    ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'kl-filter[ray]'")
    from kl_filter.engines import get_engine
    from kl_filter.filters import build_filter
    from kl_filter.stages.weights import write_weights

    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    flt = build_filter("iwl", {"prompt_embedding": setup["P"], "fraction": 0.5, "resample": 5000, "logit_scale": 10.0})
    try:
        for name in ("local", "ray"):
            engine = get_engine(name, 2)
            write_weights(setup["pool"], flt.scorers()[0], str(tmp_path / f"{name}.parquet"), engine=engine,
                          scores_dir=str(tmp_path / f"s_{name}"), device="cpu")
            run_filter(flt, setup["pool"], str(tmp_path / f"{name}.npy"),
                       RunContext(num_workers=2, seed=3, device="cpu", scores_dir=str(tmp_path / f"s_{name}"),
                                  _engine=engine))
    finally:
        ray.shutdown()
    assert (tmp_path / "local.npy").read_bytes() == (tmp_path / "ray.npy").read_bytes()
    assert pq.read_table(tmp_path / "local.parquet").equals(pq.read_table(tmp_path / "ray.parquet"))
