"""A hand-written DataComp-format pool for tests that need to control every byte (faults, plugins)."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

TEXTS = ["two red apples on a wooden table", "a photo of a dog running on the beach", "IMG_2041.jpg",
         "ein roter Apfel auf dem Tisch", "a small blue car parked near a house", "image"]


def unit(rng, n, d):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16)


def write_shard(root, name, n, seed, uid_start=0, npz=True, **overrides):
    rng = np.random.default_rng(seed)
    cols = {
        "uid": [f"{i:032x}" for i in range(uid_start, uid_start + n)],
        "url": [f"https://example.com/{i}.jpg" for i in range(uid_start, uid_start + n)],
        "text": [TEXTS[i % len(TEXTS)] for i in range(n)],
        "original_width": rng.integers(100, 1200, n).astype(np.int64),
        "original_height": rng.integers(100, 1200, n).astype(np.int64),
        "clip_b32_similarity_score": rng.random(n, dtype=np.float32) * 0.5,
        "clip_l14_similarity_score": rng.random(n, dtype=np.float32) * 0.5,
    }
    cols.update({k: v for k, v in overrides.items() if k in cols})
    pq.write_table(pa.table(cols), f"{root}/{name}.parquet")
    if npz:
        emb = {k: unit(rng, n, d) for k, d in [("b32_img", 512), ("b32_txt", 512), ("l14_img", 768), ("l14_txt", 768)]}
        emb.update({k: v for k, v in overrides.items() if k in emb})
        np.savez(f"{root}/{name}.npz", **emb)


def make_minipool(root, shards=2, n=300):
    import os

    os.makedirs(root, exist_ok=True)
    for s in range(shards):
        write_shard(root, f"{s:08d}", n, seed=s, uid_start=s * n)
    return str(root)
