"""Density ratios at the embedding model's own temperature: the pool's ``embeddings.json`` (kl_filter.pool.temperature)
sets the default logit scale of D_KL/D_KLR, negCLIPLoss and IWL per family; values are checked against float64
references at that scale, provenance and sidecar record value and source, another scale is never reused."""

import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import run_cli
from kl_filter.core.errors import KLFilterError
from kl_filter.core.fspath import url_to_fs
from kl_filter.pool import Pool
from kl_filter.pool.temperature import MANIFEST, family_temperature, read_manifest, record_family, resolve
from minipool import make_minipool
from test_kl_scores import ref_kl
from test_negcliploss import ref_negcliploss, rel

A_L14, A_B32 = 14.6, 31.5  # the tiny track's teachers learned scales of this size


@pytest.fixture
def pool(tmp_path):
    root = make_minipool(tmp_path / "pool", shards=2, n=200)
    record_family(root, "l14", {"model": "teacher-l", "logit_scale": A_L14, "logit_bias": None})
    record_family(root, "b32", {"model": "teacher-s", "logit_scale": A_B32, "logit_bias": -3.5})
    return root


def _pool_arrays(root, key):
    return np.concatenate([np.load(f"{root}/{s:08d}.npz")[key] for s in range(2)])


def _column(scores, name):
    tables = [pq.read_table(f"{scores}/{s:08d}.parquet") for s in range(2)]
    meta = json.loads(tables[0].schema.metadata[b"kl_filter"])
    return np.concatenate([t.column(name).to_numpy() for t in tables]), meta["columns"][name]


def test_manifest_round_trip_and_defaults(tmp_path, pool):
    doc = json.load(open(os.path.join(pool, MANIFEST)))
    assert doc == {"format": 1, "families": {
        "b32": {"model": "teacher-s", "logit_scale": A_B32, "logit_bias": -3.5},
        "l14": {"model": "teacher-l", "logit_scale": A_L14, "logit_bias": None}}}
    p = Pool(pool)
    t = family_temperature(p, "l14")
    assert (t.logit_scale, t.source, t.logit_bias) == (A_L14, "embeddings.json (l14: teacher-l)", None)
    assert family_temperature(p, "b32").logit_bias == -3.5
    other = family_temperature(p, "h14")  # a family the manifest does not list: OpenAI CLIP's
    assert (other.logit_scale, other.source) == (100.0, "OpenAI CLIP default (embeddings.json does not list h14)")
    over = resolve(p, "l14", 100.0)
    assert (over.logit_scale, over.source) == (100.0, "--logit_scale; the pool records 14.6")
    bare = Pool(make_minipool(tmp_path / "bare", shards=1, n=10))
    assert family_temperature(bare, "l14").source == "OpenAI CLIP default (no embeddings.json in the pool)"
    assert resolve(bare, "l14", 50.0).source == "--logit_scale"


def test_kl_defaults_to_the_pool_temperature_and_never_reuses_another(tmp_path, pool):
    scores = tmp_path / "scores"
    common = ["--metadata_dir", pool, "--scores_dir", scores, "--num_samples", "64", "--no_progress"]
    run_cli("select", "--name", "kl", "--mode", "kl", "--arch", "l14", "--fraction", "0.25",
            "--save_path", tmp_path / "a.npy", *common, check=True)
    st = np.load(scores / "stats.npz")
    x = _pool_arrays(pool, "l14_txt")
    got, prov = _column(scores, "kl_l14_txt")
    ref, _ = ref_kl(x, st["l14_img_sample"], a=A_L14)
    assert np.max(np.abs(got - ref) / np.maximum(np.abs(ref), 1e-3)) < 1e-5
    assert not np.allclose(ref, ref_kl(x, st["l14_img_sample"], a=100.0)[0], rtol=1e-2)  # the scale matters here
    assert prov["logit_scale"] == A_L14 and prov["logit_scale_source"] == "embeddings.json (l14: teacher-l)"
    side = json.load(open(tmp_path / "a.npy.json"))
    assert side["scores"]["temperature"] == {"kl_l14_txt": {"logit_scale": A_L14,
                                                            "source": "embeddings.json (l14: teacher-l)"}}

    # --logit_scale overrides: recomputed (the stored column is at another temperature), at exactly that scale
    run_cli("select", "--name", "kl", "--mode", "kl", "--arch", "l14", "--fraction", "0.25", "--logit_scale", "100",
            "--save_path", tmp_path / "b.npy", *common, check=True)
    side = json.load(open(tmp_path / "b.npy.json"))
    assert side["scores"]["shards_computed"] == 2
    got, prov = _column(scores, "kl_l14_txt")
    ref100, _ = ref_kl(x, st["l14_img_sample"], a=100.0)
    assert np.max(np.abs(got - ref100) / np.maximum(np.abs(ref100), 1e-3)) < 1e-5
    assert prov["logit_scale_source"] == "--logit_scale; the pool records 14.6"
    # and back to the pool's: recomputed again, equal to the first run's UID file
    run_cli("select", "--name", "kl", "--mode", "kl", "--arch", "l14", "--fraction", "0.25",
            "--save_path", tmp_path / "c.npy", *common, check=True)
    assert json.load(open(tmp_path / "c.npy.json"))["scores"]["shards_computed"] == 2
    assert (tmp_path / "a.npy").read_bytes() == (tmp_path / "c.npy").read_bytes()


def test_negcliploss_and_iwl_at_the_pool_temperature(tmp_path, pool):
    scores = tmp_path / "scores"
    run_cli("select", "--name", "negcliploss", "--arch", "b32", "--fraction", "0.3", "--batch_size", "1000",
            "--num_batches", "1", "--metadata_dir", pool, "--scores_dir", scores, "--save_path", tmp_path / "n.npy",
            "--no_progress", check=True)
    got, prov = _column(scores, "negcliploss_b32")
    f, g = _pool_arrays(pool, "b32_img"), _pool_arrays(pool, "b32_txt")
    assert rel(got, ref_negcliploss(f, g, a=A_B32)) < 1e-5  # one batch: the whole pool, in any order
    assert prov["logit_scale"] == A_B32 and prov["logit_scale_source"] == "embeddings.json (b32: teacher-s)"

    p = np.random.default_rng(0).standard_normal(768).astype(np.float32)
    np.save(tmp_path / "P.npy", p / np.linalg.norm(p))
    out = run_cli("weights", "--metadata_dir", pool, "--prompt_embedding", tmp_path / "P.npy", "--arch", "l14",
                  "--logit_scale", "pool", "--out", tmp_path / "W.parquet", "--no_progress", check=True).stdout
    assert "logit scale 14.6 from embeddings.json (l14: teacher-l)" in out
    w = pq.read_table(tmp_path / "W.parquet")
    u = _pool_arrays(pool, "l14_img").astype(np.float64)
    logw = A_L14 * ((u / np.linalg.norm(u, axis=1, keepdims=True)) @ (p / np.linalg.norm(p)).astype(np.float64))
    np.testing.assert_allclose(w.column("log_weight").to_numpy(), logw, rtol=1e-5, atol=1e-5)
    ref = np.exp(logw - logw.max())
    np.testing.assert_allclose(w.column("weight").to_numpy(), ref / ref.mean(), rtol=1e-5)
    meta = json.loads(w.schema.metadata[b"kl_filter"])
    assert meta["scorer"]["logit_scale"] == A_L14


@pytest.mark.parametrize("entry, message", [
    ({"logit_scale": float("nan")}, "family 'l14': logit_scale must be a positive number, got nan"),
    ({"logit_scale": 0}, "family 'l14': logit_scale must be a positive number, got 0"),
    ({"logit_scale": -14.6}, "family 'l14': logit_scale must be a positive number, got -14.6"),
    ({"logit_scale": "100"}, "family 'l14': logit_scale must be a positive number, got '100'"),
    ({"logit_scale": True}, "family 'l14': logit_scale must be a positive number, got True"),
    ({}, "family 'l14': logit_scale must be a positive number, got None"),
    ({"logit_scale": 10, "logit_bias": float("inf")}, "family 'l14': logit_bias must be a finite number or null, got inf"),
])
def test_a_bad_recorded_temperature_is_one_line_and_exit_2(tmp_path, entry, message):
    root = make_minipool(tmp_path / "pool", shards=1, n=50)
    path = os.path.join(root, MANIFEST)
    with open(path, "w") as f:
        f.write(json.dumps({"format": 1, "families": {"l14": entry}}, allow_nan=True))
    p = run_cli("select", "--name", "kl", "--arch", "l14", "--fraction", "0.5", "--num_samples", "8",
                "--metadata_dir", root, "--save_path", tmp_path / "u.npy", "--scores_dir", tmp_path / "s",
                "--no_progress")
    assert p.returncode == 2 and p.stderr.strip() == f"kl-filter: error: {path}: {message}", p.stderr
    assert not (tmp_path / "u.npy").exists() and not (tmp_path / "s" / "stats.npz").exists()  # before any work


@pytest.mark.parametrize("content, message", [
    (b"{not json", "embeddings manifest is not valid JSON"),
    (b"[1, 2]", "not an embeddings manifest"),
    (b'{"format": 2, "families": {}}', "embeddings manifest format 2, this version reads 1"),
    (b'{"families": {"l14": 5}}', "family 'l14': expected an object, got int"),
    (b" " * (1 << 20) + b"{}", "embeddings manifest of 1,048,578 bytes (at most 1,048,576)"),
], ids=["not-json", "a-list", "format-2", "entry-not-object", "huge"])
def test_a_bad_manifest_is_refused(tmp_path, content, message):
    root = make_minipool(tmp_path / "pool", shards=1, n=10)
    (tmp_path / "pool" / MANIFEST).write_bytes(content)
    with pytest.raises(KLFilterError, match=message.replace("(", r"\(").replace(")", r"\)")):
        family_temperature(Pool(root), "l14")


def test_a_manifest_that_is_not_a_file(tmp_path):
    root = make_minipool(tmp_path / "pool", shards=1, n=10)
    os.mkdir(tmp_path / "pool" / MANIFEST)
    with pytest.raises(KLFilterError, match="directory"):
        read_manifest(*url_to_fs(f"{root}/{MANIFEST}"))
    os.rmdir(tmp_path / "pool" / MANIFEST)
    os.symlink(tmp_path / "nowhere.json", tmp_path / "pool" / MANIFEST)
    with pytest.raises(KLFilterError, match="dangling symlink"):
        family_temperature(Pool(root), "l14")


def test_record_family_keeps_the_other_families_and_refuses_a_bad_scale(tmp_path, pool):
    record_family(pool, "l14", {"model": "teacher-l2", "logit_scale": 20.0, "logit_bias": None})
    fams = json.load(open(os.path.join(pool, MANIFEST)))["families"]
    assert fams["l14"]["logit_scale"] == 20.0 and fams["b32"]["logit_scale"] == A_B32
    with pytest.raises(KLFilterError, match="must be a positive number, got inf"):
        record_family(pool, "l14", {"logit_scale": float("inf")})
    assert json.load(open(os.path.join(pool, MANIFEST)))["families"]["l14"]["logit_scale"] == 20.0
