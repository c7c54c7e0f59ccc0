"""``kl-filter embed``: DataComp metadata from webdataset tars with a local, randomly initialised open_clip model."""

import io
import json
import os
import tarfile

import numpy as np
import pytest

from conftest import run_cli

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
Image = pytest.importorskip("PIL.Image")

CONFIGS = {
    "embtest-a": {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16,
                                                  "head_width": 16},
                  "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}},
    "embtest-b": {"embed_dim": 48, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16,
                                                  "head_width": 16},
                  "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}},
    # a sigmoid-loss model (SigLIP's shape): a learned logit bias beside the logit scale
    "embtest-s": {"embed_dim": 32, "init_logit_bias": -10.0,
                  "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
                  "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}},
}
LEARNED = {"embtest-a": 14.6, "embtest-b": 31.5, "embtest-s": 10.0}  # exp(logit_scale) stored in each checkpoint
CAPTIONS = ["two red circles above a blue square", "a handwritten digit seven", "image", "IMG_2041.jpg",
            "ein roter Apfel auf dem Tisch", "a cat on a sofa"]


def _add(tf, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


def _write_tar(path, start, n, fmt, rng):
    samples = []
    with tarfile.open(path, "w") as tf:
        for j in range(n):
            i = start + j
            w, h = int(rng.integers(20, 90)), int(rng.integers(20, 90))
            img = Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8))
            buf = io.BytesIO()
            img.save(buf, format="JPEG" if fmt == "jpg" else "PNG")
            uid = f"{i:032x}"
            meta = {"uid": uid}
            if j % 2 == 0:  # img2dataset records the size before resizing, and the url
                meta.update(url=f"https://example.com/{i}.jpg", original_width=1000 + i, original_height=500 + i)
            key = f"{i:09d}"
            _add(tf, f"{key}.{fmt}", buf.getvalue())
            _add(tf, f"{key}.txt", CAPTIONS[i % len(CAPTIONS)].encode())
            _add(tf, f"{key}.json", json.dumps(meta).encode())
            samples.append({"uid": uid, "meta": meta, "size": (w, h), "text": CAPTIONS[i % len(CAPTIONS)],
                            "image": buf.getvalue()})
    return samples


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("embed")
    cfg_dir = root / "configs"
    cfg_dir.mkdir()
    for name, cfg in CONFIGS.items():
        (cfg_dir / f"{name}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(str(cfg_dir))
    ckpts = {}
    for k, name in enumerate(CONFIGS):
        torch.manual_seed(k)
        model = open_clip.create_model(name)
        with torch.no_grad():
            model.logit_scale.fill_(float(np.log(LEARNED[name])))
        ckpts[name] = str(root / f"{name}.pt")
        torch.save({"name": name, "state_dict": model.state_dict()}, ckpts[name])
    shards = root / "shards"
    shards.mkdir()
    rng = np.random.default_rng(0)
    samples = {"00000000": _write_tar(shards / "00000000.tar", 0, 7, "jpg", rng),
               "00000001": _write_tar(shards / "00000001.tar", 7, 5, "png", rng)}
    return {"root": root, "cfg_dir": str(cfg_dir), "ckpts": ckpts, "shards": str(shards), "samples": samples}


def cli(*args):
    """``kl-filter`` in-process (torch is imported once for the module): (status, stdout, stderr)."""
    import contextlib

    from kl_filter.apps.cli import main

    o, e = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(o), contextlib.redirect_stderr(e):
        rc = main([str(a) for a in args])
    return rc, o.getvalue(), e.getvalue()


def _embed(setup, out, model, family=None, extra=(), subprocess=False):
    args = ["embed", "--shards_dir", setup["shards"], "--out", out, "--model", model, "--checkpoint",
            setup["ckpts"][model], "--model_config", setup["cfg_dir"], "--device", "cpu", "--batch_size", "4",
            "--no_progress", *extra]
    if family:
        args += ["--family", family]
    if subprocess:
        return run_cli(*args, check=True).stdout
    rc, out, err = cli(*args)
    assert rc == 0, err
    return out


def _expected(setup, model, samples):
    """The model's unit embeddings computed directly (open_clip preprocess + tokenizer)."""
    m, _, pre = open_clip.create_model_and_transforms(model, pretrained=setup["ckpts"][model])
    m.eval()
    tok = open_clip.get_tokenizer(model)
    ims = torch.stack([pre(Image.open(io.BytesIO(s["image"])).convert("RGB")) for s in samples])
    with torch.no_grad():
        i = torch.nn.functional.normalize(m.encode_image(ims), dim=-1).numpy()
        t = torch.nn.functional.normalize(m.encode_text(tok([s["text"] for s in samples])), dim=-1).numpy()
    return i, t


def test_embed_format_and_second_family(setup):
    out = str(setup["root"] / "meta")
    stdout = _embed(setup, out, "embtest-a", family="fama", subprocess=True)  # the real command line once
    assert "12 samples in 2 shard(s)" in stdout
    assert sorted(os.listdir(out)) == ["00000000.npz", "00000000.parquet", "00000001.npz", "00000001.parquet",
                                       "embeddings.json"]
    first = {}
    for shard, samples in setup["samples"].items():
        t = pq.read_table(os.path.join(out, shard + ".parquet"))
        assert t.column_names == ["uid", "url", "text", "original_width", "original_height",
                                  "clip_fama_similarity_score", "face_bboxes", "sha256"]
        assert t.schema.field("original_width").type == pa.int64()
        assert t.schema.field("original_height").type == pa.int64()
        assert t.schema.field("clip_fama_similarity_score").type == pa.float32()
        d = t.to_pydict()
        assert d["uid"] == [s["uid"] for s in samples]
        assert d["text"] == [s["text"] for s in samples]
        for j, s in enumerate(samples):
            w, h = (s["meta"]["original_width"], s["meta"]["original_height"]) if "original_width" in s["meta"] \
                else s["size"]
            assert (d["original_width"][j], d["original_height"][j]) == (w, h)
            assert d["url"][j] == s["meta"].get("url", "")
            assert len(d["sha256"][j]) == 64 and d["face_bboxes"][j] == []
        with np.load(os.path.join(out, shard + ".npz")) as z:
            assert sorted(z.files) == ["fama_img", "fama_txt"]
            img, txt = z["fama_img"], z["fama_txt"]
        assert img.dtype == np.float16 and txt.dtype == np.float16 and img.shape == txt.shape == (len(samples), 32)
        for x in (img, txt):
            np.testing.assert_allclose(np.linalg.norm(x.astype(np.float32), axis=1), 1.0, atol=2e-3)
        cos = np.einsum("ij,ij->i", img.astype(np.float32), txt.astype(np.float32))
        np.testing.assert_allclose(np.asarray(d["clip_fama_similarity_score"]), cos, atol=3e-3)
        ei, et = _expected(setup, "embtest-a", samples)
        np.testing.assert_allclose(img.astype(np.float32), ei, atol=2e-3)
        np.testing.assert_allclose(txt.astype(np.float32), et, atol=2e-3)
        np.testing.assert_allclose(np.asarray(d["clip_fama_similarity_score"]), np.einsum("ij,ij->i", ei, et),
                                   atol=1e-4)
        first[shard] = (t, img, txt)

    # a second teacher ADDS its keys and column; nothing of the first family changes
    stdout = _embed(setup, out, "embtest-b", family="famb")
    assert "0 shard(s) created, 2 extended" in stdout
    for shard, samples in setup["samples"].items():
        t = pq.read_table(os.path.join(out, shard + ".parquet"))
        old_t, old_img, old_txt = first[shard]
        assert t.column_names == old_t.column_names + ["clip_famb_similarity_score"]
        assert t.drop_columns(["clip_famb_similarity_score"]).equals(old_t)
        with np.load(os.path.join(out, shard + ".npz")) as z:
            assert sorted(z.files) == ["fama_img", "fama_txt", "famb_img", "famb_txt"]
            np.testing.assert_array_equal(z["fama_img"], old_img)
            np.testing.assert_array_equal(z["fama_txt"], old_txt)
            bi, bt = z["famb_img"].astype(np.float32), z["famb_txt"].astype(np.float32)
        assert bi.shape == (len(samples), 48)
        np.testing.assert_allclose(t.column("clip_famb_similarity_score").to_numpy(),
                                   np.einsum("ij,ij->i", bi, bt), atol=3e-3)

    # the pool reader takes the result as a metadata directory
    from kl_filter.pool import Pool

    pool = Pool(out)
    data = pool.read(pool.shards[1], ["text", "clip_famb_similarity_score"], ["famb_img"])
    assert data.num_rows == 5 and data.embeddings["famb_img"].shape == (5, 48)
    assert not [f for f in os.listdir(out) if f.startswith(".")]  # no temporary files left


def test_embed_default_family_and_reembed_same_family(setup, tmp_path):
    from kl_filter.encoders import default_family

    assert default_family("ViT-B-32") == "b32" and default_family("ViT-L-14") == "l14"
    assert default_family("embtest-a") == "embtesta"
    out = str(tmp_path / "meta")
    _embed(setup, out, "embtest-a")
    t = pq.read_table(os.path.join(out, "00000000.parquet"))
    assert "clip_embtesta_similarity_score" in t.column_names
    _embed(setup, out, "embtest-a")  # again: the family's column is replaced, not duplicated
    t2 = pq.read_table(os.path.join(out, "00000000.parquet"))
    assert t2.column_names == t.column_names and t2.equals(t)


def test_embed_errors(setup, tmp_path):
    base = ["embed", "--shards_dir", setup["shards"], "--out", str(tmp_path / "m"), "--model", "embtest-a",
            "--model_config", setup["cfg_dir"], "--device", "cpu", "--no_progress"]
    rc, _, err = cli(*base, "--checkpoint", str(tmp_path / "missing.pt"))
    assert rc == 2 and "checkpoint not found" in err and "Traceback" not in err
    rc, _, err = cli(*base, "--checkpoint", setup["ckpts"]["embtest-a"], "--family", "Bad_Name")
    assert rc == 2 and "--family" in err
    rc, _, err = cli(*base, "--checkpoint", setup["ckpts"]["embtest-a"], "--model", "no-such-arch")
    assert rc == 2 and "unknown open_clip architecture" in err
    # wrong architecture for the checkpoint
    rc, _, err = cli(*base[:-7], "--model", "embtest-b", "--model_config", setup["cfg_dir"], "--checkpoint",
                     setup["ckpts"]["embtest-a"], "--no_progress")
    assert rc == 2 and "cannot load" in err
    # a sample without a uid
    bad = tmp_path / "bad"
    bad.mkdir()
    with tarfile.open(bad / "00000000.tar", "w") as tf:
        buf = io.BytesIO()
        Image.new("RGB", (8, 8)).save(buf, format="PNG")
        _add(tf, "0.png", buf.getvalue())
        _add(tf, "0.txt", b"a caption")
        _add(tf, "0.json", b"{}")
    rc, _, err = cli("embed", "--shards_dir", str(bad), "--out", str(tmp_path / "m2"), "--model", "embtest-a",
                     "--checkpoint", setup["ckpts"]["embtest-a"], "--model_config", setup["cfg_dir"], "--no_progress")
    assert rc == 2 and "uid" in err
    # embedding other shards into a metadata dir made from different uids is refused
    out = str(tmp_path / "meta")
    _embed(setup, out, "embtest-a")
    other = tmp_path / "other"
    other.mkdir()
    _write_tar(other / "00000000.tar", 100, 3, "jpg", np.random.default_rng(1))
    rc, _, err = cli("embed", "--shards_dir", str(other), "--out", out, "--model", "embtest-b", "--checkpoint",
                     setup["ckpts"]["embtest-b"], "--model_config", setup["cfg_dir"], "--no_progress")
    assert rc == 2 and "other uids" in err


def test_embed_records_each_models_temperature(setup):
    """The learned logit scale (and a sigmoid model's bias) travel with the pool, per family, in embeddings.json,
    and become the default temperature of the density-ratio scores of that family."""
    from kl_filter.pool import Pool
    from kl_filter.pool.temperature import family_temperature

    out = str(setup["root"] / "meta_temperature")
    stdout = _embed(setup, out, "embtest-a", family="fama")
    scale_a = float(np.exp(np.float64(np.float32(np.log(14.6)))))  # as the float32 parameter holds it
    assert f"fama logit scale {scale_a:.6g} recorded in {out}/embeddings.json" in stdout
    _embed(setup, out, "embtest-s", family="fams")
    doc = json.load(open(os.path.join(out, "embeddings.json")))
    assert sorted(doc["families"]) == ["fama", "fams"] and doc["format"] == 1
    a, s = doc["families"]["fama"], doc["families"]["fams"]
    assert a["model"] == "embtest-a" and a["embed_dim"] == 32 and a["logit_bias"] is None
    assert a["logit_scale"] == scale_a and a["checkpoint"] == os.path.abspath(setup["ckpts"]["embtest-a"])
    assert s["logit_bias"] == -10.0 and abs(s["logit_scale"] - 10.0) < 1e-5
    t = family_temperature(Pool(out), "fama")
    assert (t.logit_scale, t.source) == (scale_a, "embeddings.json (fama: embtest-a)")
    # the same family again replaces its entry; a broken manifest stops embed before any shard is touched
    with open(os.path.join(out, "embeddings.json"), "w") as f:
        f.write('{"families": {"fama": {"logit_scale": -1}}}')
    before = {n: os.path.getmtime(os.path.join(out, n)) for n in os.listdir(out)}
    p = run_cli("embed", "--shards_dir", setup["shards"], "--out", out, "--model", "embtest-b", "--checkpoint",
                setup["ckpts"]["embtest-b"], "--model_config", setup["cfg_dir"], "--device", "cpu", "--family", "famb",
                "--no_progress")
    assert p.returncode == 2
    assert p.stderr.strip() == (f"kl-filter: error: {out}/embeddings.json: family 'fama': logit_scale must be a "
                                "positive number, got -1"), p.stderr
    assert {n: os.path.getmtime(os.path.join(out, n)) for n in os.listdir(out)} == before
