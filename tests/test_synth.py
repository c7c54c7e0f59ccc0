"""The synthetic pool has DataComp's exact format and CLIP-like structure."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from kl_filter.pool import Pool
from kl_filter.pool.synth import synth_pool

DTYPES = {"uid": pa.string(), "url": pa.string(), "text": pa.string(), "original_width": pa.int64(),
          "original_height": pa.int64(), "clip_b32_similarity_score": pa.float32(),
          "clip_l14_similarity_score": pa.float32(), "face_bboxes": pa.list_(pa.list_(pa.float64())),
          "sha256": pa.string()}


def test_format_and_consistency(synth_dir):
    pool = Pool(synth_dir)
    assert [s.name for s in pool] == ["00000000", "00000001", "00000002"] and sum(pool.row_counts) == 20_000
    uids = []
    for s in pool:
        t = pq.read_table(s.parquet)
        assert t.schema.names == list(DTYPES) and all(t.schema.field(k).type == v for k, v in DTYPES.items())
        z = np.load(s.npz)
        assert sorted(z.files) == ["b32_img", "b32_txt", "dedup", "l14_img", "l14_txt"]
        for k, d in [("b32_img", 512), ("b32_txt", 512), ("l14_img", 768), ("l14_txt", 768), ("dedup", 256)]:
            x = z[k]
            assert x.dtype == np.float16 and x.shape == (t.num_rows, d)
            assert np.abs(np.linalg.norm(x.astype(np.float32), axis=1) - 1).max() < 2e-3
        for fam in ("b32", "l14"):
            cos = np.einsum("ij,ij->i", z[f"{fam}_img"].astype(np.float32), z[f"{fam}_txt"].astype(np.float32))
            np.testing.assert_allclose(t.column(f"clip_{fam}_similarity_score").to_numpy(), cos, atol=2e-3)
        u = t.column("uid").to_pylist()
        assert all(len(x) == 32 and int(x, 16) >= 0 for x in u)
        assert all(len(x) == 64 for x in t.column("sha256").to_pylist())
        uids += u
    assert len(set(uids)) == len(uids)


def test_deterministic_across_workers_and_seeded(tmp_path):
    a, b, c = (str(tmp_path / x) for x in "abc")
    synth_pool(a, rows=3000, shards=3, seed=1, num_workers=1)
    synth_pool(b, rows=3000, shards=3, seed=1, num_workers=2)
    synth_pool(c, rows=3000, shards=3, seed=2, num_workers=2)
    for i in range(3):
        ta, tb = pq.read_table(f"{a}/{i:08d}.parquet"), pq.read_table(f"{b}/{i:08d}.parquet")
        assert ta.equals(tb)
        za, zb = np.load(f"{a}/{i:08d}.npz"), np.load(f"{b}/{i:08d}.npz")
        assert all(np.array_equal(za[k], zb[k]) for k in za.files)
    assert not pq.read_table(f"{a}/00000000.parquet").equals(pq.read_table(f"{c}/00000000.parquet"))


def test_structure_like_web_data(tmp_path):
    import gcld3

    d = str(tmp_path / "p")
    m = synth_pool(d, rows=8000, shards=2, seed=3, truth=True)
    t = pa.concat_tables([pq.read_table(f"{d}/{i:08d}.parquet") for i in range(2)])
    cat = pa.concat_tables([pq.read_table(f"{d}/synth_truth/{i:08d}.parquet") for i in range(2)])
    cat = np.array(cat.column("category").to_pylist())
    assert sum(m["counts"].values()) == 8000 and m["counts"]["mismatch"] > 1000
    b32 = t.column("clip_b32_similarity_score").to_numpy()
    assert b32[cat == "clean"].mean() > b32[cat == "mismatch"].mean() + 0.1
    assert 0.15 <= (b32 >= 0.28).mean() <= 0.5
    det = gcld3.NNetLanguageIdentifier(min_num_bytes=0, max_num_bytes=1000)
    texts = t.column("text").to_pylist()
    lang = np.array([det.FindLanguage(text=x).language for x in texts])
    assert (lang[cat == "non_english"] != "en").mean() >= 0.7
    assert (lang[cat == "clean"] == "en").mean() >= 0.8
    w, h = t.column("original_width").to_numpy(), t.column("original_height").to_numpy()
    assert 0.05 < (np.minimum(w, h) < 200).mean() < 0.2 and 0.02 < (np.maximum(w, h) / np.minimum(w, h) > 3).mean() < 0.1
    assert any(x in ("image", "photo", "untitled", "") or x.startswith(("IMG_", "DSC_")) for x in texts)
