"""Every recipe of ``baselines/`` selects the rows it selected when the pins were recorded, on one seeded synthetic
pool (3,000 rows, 3 shards), run the way a user runs it: ``kl-filter run RECIPE`` with the asset flags a recipe
needs (random unit target embeddings, centroids and ImageNet-1k features written here from a seeded generator).

What is pinned (``tests/data/recipes_regression.json``), and why not only each UID file's sha256: the pool is
synthesised with BLAS products (a QR basis, GEMMs) and every score but the pool's CLIP cosine is a float32 BLAS
product, whose last bits depend on the CPU's kernel (OpenBLAS picks one per CPU); a row within a few ulps of a
threshold may fall on the other side elsewhere. And a scorer's kernel may change its rounding or, for SemDeDup, which
copy of an exact duplicate comes first (measured: a k-means change moved 8 of 3,000 rows). So each recipe pins its
kept count, its keep mask over the pool's rows and its UID file's sha256: the test allows at most ``DRIFT`` (1%) of
the rows to be decided otherwise, and demands the exact bytes for the recipes that read only the pool's parquet
columns, wherever the pool came out bit-identical. A change of a rule's semantics moves far more rows than that (a
fraction read of the survivors instead of the pool: thousands). Byte identity across the plugin-layer redesign
(issue 23) was checked by hand: the same UID-file bytes for every recipe, on the same score columns.

Recording new pins (only after a deliberate change of a selection, saying why in the commit)::

    python tests/test_recipes_regression.py --write tests/data/recipes_regression.json
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sys
import time

import numpy as np
import pytest

PINS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "recipes_regression.json")
POOL = {"rows": 3000, "shards": 3, "seed": 11}
SEED = 0
DRIFT = 0.01  # the share of rows a scorer's rounding or tie order may move (see the module docstring)
# recipes that read only the pool's parquet columns (no BLAS product): byte-identical wherever the pool is
EXACT = {"no_filter", "basic_filter", "clip_score_b32_30", "clip_score_l14_30", "laion2b"}
# Pinned, but not rerun by pytest: text_based loads WordNet (50-80 s on 2 cores for this pool) and has no cut rule;
# its selection is covered by tests/test_text_image_based.py.
NOT_RERUN = {"text_based"}


def write_assets(root: str) -> dict:
    """Seeded unit-norm float32 matrices standing in for DataComp's downloaded assets."""
    rng = np.random.default_rng(2024)
    out = {}
    for name, n in (("targets", 64), ("centroids", 100), ("in1k", 200)):
        x = rng.standard_normal((n, 768))
        x /= np.sqrt((x * x).sum(axis=1, keepdims=True))
        out[name] = os.path.join(root, f"{name}.npy")
        np.save(out[name], x.astype(np.float32))
    return out


def asset_flags(recipe, assets: dict) -> list[str]:
    """The flags a recipe needs beside it to run offline (what its comment asks a user to pass)."""
    if recipe.startswith("image_based"):
        return ["--centroids", assets["centroids"], "--in1k_features", assets["in1k"]]
    if "normsim" in recipe or recipe.startswith("vas_in1k"):
        return ["--target_embeddings", assets["targets"]]
    return []


def plant_duplicates(pool: str, share: float = 0.1) -> None:
    """Give ``share`` of each shard's rows the L/14 image embedding of another row of the pool (an exact copy, or the
    copy plus float16-sized noise): the synthetic pool has no near-duplicates of its own, and SemDeDup's recipes
    would keep every row."""
    rng = np.random.default_rng(POOL["seed"])
    files = sorted(f for f in os.listdir(pool) if f.endswith(".npz"))
    shards = [dict(np.load(os.path.join(pool, f))) for f in files]
    donors = np.concatenate([s["l14_img"] for s in shards])
    for f, s in zip(files, shards):
        x = s["l14_img"]
        rows = rng.choice(len(x), int(share * len(x)), replace=False)
        copy = donors[rng.integers(len(donors), size=len(rows))].astype(np.float32)
        noisy = rng.random(len(rows)) < 0.5
        copy[noisy] += rng.standard_normal((int(noisy.sum()), x.shape[1])).astype(np.float32) * 2e-3
        copy /= np.sqrt((copy * copy).sum(axis=1, keepdims=True))
        x[rows] = copy.astype(np.float16)
        np.savez(os.path.join(pool, f), **s)


def pool_digest(pool: str) -> str:
    """sha256 over the pool's shard files, in name order."""
    h = hashlib.sha256()
    for f in sorted(os.listdir(pool)):
        if f.endswith((".parquet", ".npz")):
            with open(os.path.join(pool, f), "rb") as fh:
                h.update(f.encode() + hashlib.sha256(fh.read()).digest())
    return h.hexdigest()


def pool_uids(pool: str) -> np.ndarray:
    import pyarrow.parquet as pq

    from kl_filter.core.uids import hex_to_u8u8

    files = sorted(f for f in os.listdir(pool) if f.endswith(".parquet"))
    return np.concatenate([hex_to_u8u8(pq.read_table(os.path.join(pool, f), columns=["uid"]).column("uid")
                                       .to_pylist()) for f in files])


def keep_mask(uid_file: str, uids: np.ndarray) -> np.ndarray:
    kept = np.load(uid_file)
    return np.isin(uids, kept)


def run_recipes(root: str, recipes: list[str] | None = None) -> dict:
    """Synthesise the pool, run every recipe (``kl-filter run``, in this process) and describe what each kept."""
    from kl_filter.apps.cli import main
    from kl_filter.pool.synth import synth_pool
    from kl_filter.recipes import shipped_recipes

    pool = os.path.join(root, "pool")
    synth_pool(pool, num_workers=2, **POOL)
    plant_duplicates(pool)
    assets = write_assets(root)
    uids = pool_uids(pool)
    out = {"pool": {**POOL, "sha256": pool_digest(pool)}, "recipes": {}}
    for name in recipes or shipped_recipes():
        save = os.path.join(root, "uids", f"{name}.npy")
        t = time.perf_counter()
        code = main(["run", name, "--metadata_dir", pool, "--save_path", save, "--scores_dir",
                     os.path.join(root, "scores"), "--seed", str(SEED), "--num_workers", "2", "--no_progress",
                     *asset_flags(name, assets)])
        if code != 0:
            out["recipes"][name] = {"skipped": f"exit {code}"}
            continue
        mask = keep_mask(save, uids)
        with open(save, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        out["recipes"][name] = {"kept": int(mask.sum()), "sha256": digest,
                                "mask": base64.b64encode(np.packbits(mask).tobytes()).decode(),
                                "seconds": round(time.perf_counter() - t, 2)}
    return out


@pytest.fixture(scope="module")
def regression(tmp_path_factory):
    """The recipes run in a process of their own (what they load, e.g. faiss's OpenMP pool, stays there)."""
    import subprocess

    root = tmp_path_factory.mktemp("regression")
    subprocess.run([sys.executable, os.path.abspath(__file__), "--write", str(root / "got.json"), "--keep",
                    str(root / "run"), "--skip", *NOT_RERUN], check=True, capture_output=True,
                   env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [
                       os.path.dirname(os.path.dirname(os.path.abspath(__file__))), os.environ.get("PYTHONPATH")]))})
    with open(root / "got.json") as f:
        return json.load(f)


def _pins() -> dict:
    if not os.path.exists(PINS):  # while recording them (__main__)
        return {"pool": {}, "recipes": {}}
    with open(PINS) as f:
        return json.load(f)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(set(_pins()["recipes"]) - NOT_RERUN))
def test_recipe_selects_the_pinned_rows(name, regression):
    from kl_filter.recipes import shipped_recipes

    assert name in shipped_recipes(), f"{name}: a pinned recipe is gone (recipes keep their names)"
    pinned, got = _pins()["recipes"][name], regression["recipes"][name]
    if "skipped" in pinned or "skipped" in got:
        assert "skipped" in pinned and "skipped" in got, (pinned, got)
        pytest.skip(f"{name}: cannot run here ({got.get('skipped')})")
    want = np.unpackbits(np.frombuffer(base64.b64decode(pinned["mask"]), np.uint8))[: POOL["rows"]]
    mask = np.unpackbits(np.frombuffer(base64.b64decode(got["mask"]), np.uint8))[: POOL["rows"]]
    differ = int((want != mask).sum())
    if name in EXACT and regression["pool"]["sha256"] == _pins()["pool"]["sha256"]:
        assert got["sha256"] == pinned["sha256"], (name, differ)
    assert differ <= DRIFT * len(mask) and abs(got["kept"] - pinned["kept"]) <= differ, (
        f"{name}: {differ} rows decided otherwise than pinned (kept {got['kept']}, pinned {pinned['kept']}; "
        f"sha256 {got['sha256'][:16]}, pinned {pinned['sha256'][:16]})")


def test_every_shipped_recipe_is_pinned():
    from kl_filter.recipes import shipped_recipes

    assert sorted(_pins()["recipes"]) == shipped_recipes()


if __name__ == "__main__":
    import argparse
    import tempfile

    ap = argparse.ArgumentParser(description="record the pins (see the module docstring)")
    ap.add_argument("--write", required=True)
    ap.add_argument("--keep", default=None, help="keep the run's directory here (UID files, sidecars, scores)")
    ap.add_argument("--skip", nargs="*", default=[], help="recipes not to run")
    args = ap.parse_args()
    root = args.keep or tempfile.mkdtemp(prefix="recipes_regression_")
    from kl_filter.recipes import shipped_recipes

    res = run_recipes(root, [n for n in shipped_recipes() if n not in args.skip])
    seconds = {n: r.pop("seconds", None) for n, r in res["recipes"].items()}
    os.makedirs(os.path.dirname(os.path.abspath(args.write)), exist_ok=True)
    with open(args.write, "w") as f:
        json.dump(res, f, indent=1, sort_keys=True)
        f.write("\n")
    for n, r in res["recipes"].items():
        print(f"{n:50s} {r.get('kept', r.get('skipped'))} {r.get('sha256', '')[:16]} {seconds[n]}s", file=sys.stderr)
