"""text_based and image_based against DataComp's rules written plainly here (nltk, fastText, NumPy)."""

import os

import numpy as np
import pytest

from conftest import run_cli
from minipool import make_minipool, unit, write_shard

TEXTS = ["a dog running on the beach", "two red apples on a wooden table", "IMG_2041.jpg", "ein Hund am Strand",
         "the quick brown fox", "photo of a guitar\nand a lamp", "beautiful sunset", "x"]


def lang_en(model, t):
    labels = model.predict(t.replace("\n", " "))[0]
    return bool(labels) and labels[0] == "__label__en"


@pytest.fixture(scope="module")
def wordnet_root():
    pytest.importorskip("nltk")
    from kl_filter.text.wordnet import ensure_wordnet

    try:
        return ensure_wordnet()
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"WordNet not available offline here: {e}")


def test_text_based_matches_plain_rule(tmp_path, wordnet_root):
    import nltk

    from kl_filter.text.langid import _fasttext_model, default_fasttext_path
    from kl_filter.text.wordnet import default_synsets_path

    nltk.data.path.insert(0, wordnet_root)
    from nltk.corpus import wordnet

    root = tmp_path / "pool"
    root.mkdir()
    n = 240
    texts = [TEXTS[i % len(TEXTS)] for i in range(n)]
    write_shard(root, "00000000", n, seed=0, text=texts)
    out = tmp_path / "tb.npy"
    run_cli("select", "--name", "text_based", "--metadata_dir", root, "--save_path", out, "--num_workers", "2",
            "--no_progress", check=True)
    entities = {int(x.strip()[1:]) for x in open(default_synsets_path()) if x.strip()}
    assert len(entities) == 21843
    model = _fasttext_model(default_fasttext_path())

    def plain(t):  # DataComp's does_contain_text_entity, per row, no cache
        for w in t.split():
            syn = wordnet.synsets(w)
            if syn and syn[0].offset() in entities:
                return True
        return False

    want = {f"{i:032x}" for i, t in enumerate(texts) if lang_en(model, t) and plain(t)}
    got = {f"{a:016x}{b:016x}" for a, b in np.load(out).tolist()}
    assert got == want and 0 < len(got) < n


def test_text_based_missing_synsets_file(tmp_path, wordnet_root):
    root = make_minipool(tmp_path / "pool")
    p = run_cli("select", "--name", "text_based", "--synsets", tmp_path / "nope.txt", "--metadata_dir", root,
                "--save_path", tmp_path / "o.npy")
    assert p.returncode == 2 and "nope.txt" in p.stderr and not (tmp_path / "o.npy").exists()


@pytest.fixture()
def image_pool(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "pool"
    root.mkdir()
    n = 300
    texts = [TEXTS[i % len(TEXTS)] for i in range(n)]
    for s in range(2):
        write_shard(root, f"{s:08d}", n, seed=s, uid_start=s * n, text=texts)
    centroids = unit(rng, 40, 768).astype(np.float32)
    feats = unit(rng, 25, 768).astype(np.float32)
    np.save(tmp_path / "centroids.npy", centroids)
    np.save(tmp_path / "in1k_0.npy", feats[:10])
    import torch

    torch.save({"image_features": torch.from_numpy(feats[10:])}, tmp_path / "in1k_1.pt")
    torch.save(centroids, tmp_path / "centroids.pt")  # DataComp's format: an array saved with torch.save
    return root, centroids, feats, texts


@pytest.mark.parametrize("centroids_file", ["centroids.npy", "centroids.pt"])
def test_image_based_matches_plain_rule(tmp_path, image_pool, centroids_file):
    from kl_filter.text.langid import _fasttext_model, default_fasttext_path

    root, centroids, feats, texts = image_pool
    out = tmp_path / "ib.npy"
    run_cli("select", "--name", "image_based", "--image_based_scale", "small", "--centroids", tmp_path / centroids_file,
            "--in1k_features", tmp_path / "in1k_0.npy", tmp_path / "in1k_1.pt", "--metadata_dir", root,
            "--save_path", out, "--no_progress", check=True)
    model = _fasttext_model(default_fasttext_path())
    targets = set(np.argmax(feats @ centroids.T, axis=1).tolist())
    want = set()
    for s in range(2):
        emb = np.load(root / f"{s:08d}.npz")["l14_img"].astype(np.float32)
        ids = np.argmax(emb @ centroids.T, axis=1)
        for i, t in enumerate(texts):
            caption_ok = lang_en(model, t) and len(t) > 5 and len(t.split()) + t.count("\n") > 1
            if caption_ok and ids[i] in targets:
                want.add(f"{s * 300 + i:032x}")
    got = {f"{a:016x}{b:016x}" for a, b in np.load(out).tolist()}
    assert got == want and len(got) > 0

    # CLIP-score rule first (threshold over the whole pool), then the image-based rule
    import pandas as pd

    df = pd.concat([pd.read_parquet(root / f"{s:08d}.parquet") for s in range(2)], ignore_index=True)
    thr = -np.sort(-df.clip_l14_similarity_score.values)[int(len(df) * 0.5)]
    clip_ok = set(df.uid[df.clip_l14_similarity_score >= thr])
    out2 = tmp_path / "ibc.npy"
    run_cli("select", "--name", "image_based_intersect_clip_score", "--arch", "l14", "--fraction", "0.5",
            "--image_based_scale", "small", "--centroids", tmp_path / centroids_file, "--in1k_features",
            tmp_path / "in1k_0.npy", tmp_path / "in1k_1.pt", "--metadata_dir", root, "--save_path", out2,
            "--no_progress", check=True)
    assert {f"{a:016x}{b:016x}" for a, b in np.load(out2).tolist()} == want & clip_ok


def test_image_based_missing_assets(tmp_path, image_pool):
    root = image_pool[0]
    p = run_cli("select", "--name", "image_based", "--image_based_scale", "small", "--metadata_dir", root,
                "--save_path", tmp_path / "o.npy")
    assert p.returncode == 2 and "--centroids" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    p = run_cli("select", "--name", "image_based", "--centroids", tmp_path / "missing.pt", "--in1k_features",
                tmp_path / "in1k_0.npy", "--metadata_dir", root, "--save_path", tmp_path / "o.npy")
    assert p.returncode == 2 and "missing.pt: file not found" in p.stderr
    assert not os.path.exists(tmp_path / "o.npy")
