"""The contract every registered filter (and scorer: each is a filter too) and every shipped recipe keeps
(fsspec-style shared suite): parametrised over ``list_filters()`` and ``shipped_recipes()``, so a new filter, scorer
or recipe is covered by being registered or shipped.

Each filter is built from its declared defaults (or, when it declares required parameters or needs asset files,
from the values in ``REQUIRED`` below), runs on a small pool, and must:
write a valid UID file (the pool's uids, sorted u8,u8, unique) and a sidecar whose counts add up
(pool_rows = kept + rows removed per step, one step per rule plus one for refine) and whose params are the
filter's signature values; give the same bytes on a second run, which reuses every score column it computed;
and give the same bytes with 1 and 2 workers.
"""

import json

import numpy as np
import pytest

from kl_filter import build_filter, list_filters
from kl_filter.core.params import signature_params
from kl_filter.recipes import shipped_recipes
from kl_filter.runner import RunContext, run_filter
from kl_filter.core.uids import check_uid_array, concat_uids, hex_to_u8u8, load_uids, sort_uids
from minipool import make_minipool, unit

# values for filters that cannot run on their defaults alone (required parameters, asset files)
REQUIRED = {
    "negcliploss": {"arch": "b32", "fraction": 0.3, "batch_size": 500, "num_batches": 2},
    "cuts": {"cuts": [{"column": "clip_l14_similarity_score", "fraction": 0.5},
                      {"filter": {"name": "kl", "params": {"fraction": 0.5, "num_samples": 64, "english_filter": True}}},
                      {"score": {"name": "normsim", "params": {"target_embeddings": ["{targets}"]}}, "fraction": 0.3,
                       "then": "pool"}]},
    "clip_score": {"arch": "l14", "fraction": 0.3},
    "kl": {"fraction": 0.25, "num_samples": 64, "clip_score_fraction": 0.8, "english_filter": True},
    "image_based": {"centroids": "{centroids}", "in1k_features": ["{in1k}"]},
    "image_based_intersect_clip_score": {"arch": "b32", "fraction": 0.5, "centroids": "{centroids}",
                                         "in1k_features": ["{in1k}"]},
    "normsim": {"target_embeddings": ["{targets}"], "fraction": 0.3},
    "vas": {"target": "pool", "fraction": 0.3},
    "iwl": {"prompt_embedding": "{prompt}", "fraction": 0.3},
    "semdedup": {"eps": 0.05, "num_clusters": 8},
}


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    root = tmp_path_factory.mktemp("contract")
    rng = np.random.default_rng(0)
    np.save(root / "centroids.npy", unit(rng, 32, 768).astype(np.float32))
    np.save(root / "in1k.npy", unit(rng, 40, 768).astype(np.float32))
    np.save(root / "targets.npy", unit(rng, 50, 768))  # NormSim/VAS target embeddings (float16, unit rows)
    np.save(root / "prompt.npy", rng.standard_normal(768))  # IWL's prompt embedding (the filter normalises it)
    return str(root), make_minipool(root / "pool", shards=3, n=400)


def _params(name, root):
    return _fill(REQUIRED.get(name, {}), root)


def _fill(params, root):
    files = {k: f"{root}/{k}.npy" for k in ("centroids", "in1k", "targets", "prompt")}

    def fill(v):
        if isinstance(v, dict):
            return {k: fill(x) for k, x in v.items()}
        return [fill(x) for x in v] if isinstance(v, list) else (v.format(**files) if isinstance(v, str) else v)

    return {k: fill(v) for k, v in params.items()}


@pytest.mark.parametrize("name", list_filters())
def test_filter_contract(name, pool, tmp_path):
    root, _ = pool
    _contract(name, lambda: build_filter(name, _params(name, root)), pool, tmp_path)


# what a recipe needs beside it here (the flags its comment asks a user for), and the track's small-pool sizes
RECIPE_FLAGS = {"image_based": {"centroids": "{centroids}", "in1k_features": ["{in1k}"]},
                "normsim": {"target_embeddings": ["{targets}"]}, "vas_in1k": {"target_embeddings": ["{targets}"]},
                "kl": {"num_samples": 64}, "negcliploss": {"batch_size": 500, "num_batches": 2}}


@pytest.mark.slow
@pytest.mark.parametrize("recipe", shipped_recipes())
def test_recipe_contract(recipe, pool, tmp_path):
    from kl_filter.filters import get_filter_class
    from kl_filter.recipes import load_recipe

    root, _ = pool
    r = load_recipe(recipe)
    if not r.params:
        pytest.skip(f"{recipe} is its filter with its defaults: test_filter_contract[{r.filter}]")
    cls = get_filter_class(r.filter)
    declared = {p.name for p in cls.flag_params(r.params)}
    flags = {k: v for key, given in RECIPE_FLAGS.items() if key in recipe or key in r.names()
             for k, v in _fill(given, root).items() if k in declared}
    _contract(r.filter, lambda: build_filter(r.filter, cls.with_flags(r.params, flags)), pool, tmp_path)


def _contract(name, build, pool, tmp_path):
    _, pool_dir = pool
    try:
        flt = build()
        flt.check_assets()
    except Exception as e:  # noqa: BLE001
        if "WordNet" in str(e) or "wordnet" in str(e):
            pytest.skip(f"{name}: {e}")
        raise
    declared = {p.name for p in signature_params(type(flt))}
    assert set(flt.params()) == declared

    ctx = RunContext(num_workers=2, seed=3, scores_dir=str(tmp_path / "scores"))
    first = run_filter(flt, pool_dir, str(tmp_path / "a.npy"), ctx)
    kept = load_uids(str(tmp_path / "a.npy"))
    pool_uids = sort_uids(concat_uids([hex_to_u8u8([f"{i:032x}" for i in range(1200)])]))
    check_uid_array(kept, str(tmp_path / "a.npy"), pool_uids)
    assert len(np.unique(kept)) == len(kept)
    side = json.loads((tmp_path / "a.npy.json").read_text())
    assert side["kept"] == len(kept) and side["pool_rows"] == 1200 and side["name"] == name
    assert side["params"] == json.loads(json.dumps(flt.params()))
    steps = len(flt.rules()) + (flt.refine is not None)
    assert len(side["removed"]) == steps and side["kept"] + sum(s["removed"] for s in side["removed"]) == 1200
    assert side["scores"]["shards_computed"] == (3 if side["scores"]["columns"] else 0)

    again = run_filter(flt, pool_dir, str(tmp_path / "b.npy"), ctx)
    assert again["scores"]["shards_computed"] == 0 and again["stats"] == first["stats"]
    assert (tmp_path / "a.npy").read_bytes() == (tmp_path / "b.npy").read_bytes()

    one = RunContext(num_workers=1, seed=3, scores_dir=str(tmp_path / "scores1"))
    run_filter(flt, pool_dir, str(tmp_path / "c.npy"), one)
    assert (tmp_path / "a.npy").read_bytes() == (tmp_path / "c.npy").read_bytes()
