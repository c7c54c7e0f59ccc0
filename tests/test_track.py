"""The offline tiny track: ``kl-filter track --quick`` end to end, and its generated data."""

import csv
import hashlib
import json
import os

import numpy as np
import pytest

from conftest import run_cli

pytest.importorskip("torch")
pytest.importorskip("open_clip")
pytest.importorskip("sklearn")
pytest.importorskip("skimage")
pytest.importorskip("matplotlib")


def _digest(d):
    return {f: hashlib.sha256(open(os.path.join(d, f), "rb").read()).hexdigest() for f in sorted(os.listdir(d))}


def test_pool_is_seeded_and_noisy(tmp_path):
    from kl_filter.apps.tiny.pool import make_pool

    a, b, c = (str(tmp_path / x) for x in "abc")
    info = make_pool(a, 300, seed=5, shard_size=120)
    make_pool(b, 300, seed=5, shard_size=120)
    make_pool(c, 300, seed=6, shard_size=120)
    assert info["rows"] == 300 and info["shards"] == 3 and sum(info["kinds"].values()) == 300
    assert sorted(os.listdir(a)) == ["00000000.tar", "00000000_stats.json", "00000001.tar", "00000001_stats.json",
                                     "00000002.tar", "00000002_stats.json", "truth.parquet"]
    assert _digest(a) == _digest(b)  # same seed: byte-identical shards
    assert _digest(a)["00000000.tar"] != _digest(c)["00000000.tar"]
    assert all(v > 0 for k, v in info["kinds"].items() if k != "banner")  # every kind of noise is present
    from kl_filter.pool.embed import read_tar

    samples = [s for t in sorted(f for f in os.listdir(a) if f.endswith(".tar")) for s in read_tar(os.path.join(a, t))]
    assert len({s.uid for s in samples}) == 300
    tiny = [s for s in samples if min(s.meta["original_width"], s.meta["original_height"]) < 200]
    assert tiny and all(len(s.meta["uid"]) == 32 for s in samples)


def test_eval_sets_are_disjoint_from_training_digits():
    from kl_filter.apps.tiny.content import digit_split
    from kl_filter.apps.tiny.evalsets import eval_sets

    split = digit_split(0)
    ev, te, po = (set(split[k].tolist()) for k in ("eval", "teacher", "pool"))
    assert not (ev & te) and not (ev & po) and not (te & po) and len(ev | te | po) == 1797
    e = eval_sets(0, 3, 10, 12)
    assert e["scenes"]["images"].shape == (18, 64, 64, 3) and e["digits"]["images"].shape == (10, 64, 64, 3)
    assert len(set(e["retrieval"]["captions"])) == 12


def test_offline_plan_skips_image_based():
    from kl_filter.apps.tiny.overrides import QUICK as QUICK_RECIPES, VARIANTS
    from kl_filter.apps.tiny.recipes import plan_recipes

    run, skipped = plan_recipes(None, quick=False)
    names = {r.name for r in run}
    assert {"no_filter", "clip_score_b32_30", "clip_score_l14_30", "laion2b", "kl_l14_txt_25"} <= names
    # Wang et al.'s filters: negCLIPLoss, VAS with the pool as target, and the digits-target NormSim variant
    assert {"negcliploss_l14_30", "negcliploss_b32_30", "vas_pool_l14_30",
            "negcliploss_l14_30_x_normsim_inf_digits"} <= names
    why = {s["recipe"]: s["reason"] for s in skipped}
    assert {"image_based", "image_based_intersect_clip_score_l14_30"} <= set(why)
    # the ImageNet-1k target recipes need DataComp's feature files: skipped, with that reason
    for name in ("negcliploss_l14_30_x_normsim_inf_in1k", "vas_in1k_l14_30"):
        assert "in1k_clip_vit_l14" in why[name] and "tiny teachers' embedding space" in why[name], why[name]
    assert "negcliploss_l14_30_x_normsim_inf_digits" in why["negcliploss_l14_30_x_normsim_inf_in1k"]
    assert all(s["reason"] for s in skipped)
    # a target-task variant only replaces a recipe that cannot run
    assert {v["base"] for v in VARIANTS.values() if v.get("targets")} <= set(why)
    run, skipped = plan_recipes(None, quick=True)
    assert [r.name for r in run] == QUICK_RECIPES and not skipped
    run, skipped = plan_recipes(["negcliploss_l14_30_x_normsim_inf_digits"], quick=False)  # by name too
    assert [r.name for r in run] == ["negcliploss_l14_30_x_normsim_inf_digits"] and not skipped


def test_track_recipe_parameters_for_the_new_filters():
    from kl_filter.apps.tiny.config import TrackConfig
    from kl_filter.apps.tiny.recipes import plan_recipes, recipe_params
    from kl_filter.recipes import load_recipe

    cfg = TrackConfig()
    assert cfg.negcliploss_batch_size == 2_000 == cfg.pool // 8  # several batches per pass (see the docstring)
    assert TrackConfig.quick().negcliploss_batch_size == TrackConfig.quick().pool // 8
    p = recipe_params(load_recipe("negcliploss_l14_30"), cfg)
    assert p == {"arch": "l14", "fraction": 0.3, "batch_size": 2_000}  # the filter's default 10 passes
    own = load_recipe("negcliploss_b32_30")
    own.params["batch_size"] = 64  # a recipe's own batch size wins
    assert recipe_params(own, cfg)["batch_size"] == 64
    assert recipe_params(load_recipe("vas_pool_l14_30"), cfg) == {"target": "pool", "arch": "l14", "fraction": 0.3}
    variant = plan_recipes(["negcliploss_l14_30_x_normsim_inf_digits"], quick=False)[0][0]
    base = load_recipe("negcliploss_l14_30_x_normsim_inf_in1k").params
    p = recipe_params(variant, cfg, "/w/targets.npy")
    assert p == {**base, "batch_size": 2_000, "target_embeddings": ["/w/targets.npy"]}
    with pytest.raises(Exception, match="target embeddings are not written yet"):
        recipe_params(variant, cfg)


def test_normsim_targets_are_the_digits_train_split_never_eval():
    from kl_filter.apps.tiny.content import digit_split
    from kl_filter.apps.tiny.targets import target_images, target_indices

    split = digit_split(0)
    idx = target_indices(0)
    assert set(idx.tolist()) == set(split["teacher"].tolist()) and not set(idx.tolist()) & set(split["eval"].tolist())
    images, labels = target_images(0)
    assert images.shape == (len(idx), 64, 64, 3) and images.dtype == np.uint8 and set(labels.tolist()) == set(range(10))
    assert np.array_equal(images, target_images(0)[0])  # seeded


def test_kl_recipes_get_the_track_reference_sample_size():
    from kl_filter.apps.tiny.config import TrackConfig
    from kl_filter.apps.tiny.recipes import recipe_params
    from kl_filter.recipes import load_recipe

    cfg = TrackConfig(kl_num_samples=123)
    assert recipe_params(load_recipe("kl_l14_txt_25"), cfg)["num_samples"] == 123
    assert recipe_params(load_recipe("centered_b32_txt_25"), cfg)["num_samples"] == 123  # one stats file for all
    assert "num_samples" not in recipe_params(load_recipe("clip_score_l14_30"), cfg)
    own = load_recipe("kl_l14_txt_25")
    own.params["sample_ratio"] = 0.01  # a recipe's own sampling wins
    assert "num_samples" not in recipe_params(own, cfg)
    assert TrackConfig().kl_num_samples == 2_000 and TrackConfig.quick().kl_num_samples == 250


def test_temperature_ablation_and_all_of_members():
    """The a = 100 variants copy their KL recipe with logit_scale 100 (the others use the teacher's recorded one);
    the members of an all_of recipe get the same track defaults as the recipes they stand for."""
    from kl_filter.apps.tiny.config import TrackConfig
    from kl_filter.apps.tiny.overrides import VARIANTS
    from kl_filter.apps.tiny.recipes import plan_recipes, recipe_params

    A100_RECIPES = {n: v["base"] for n, v in VARIANTS.items() if v.get("params") == {"logit_scale": 100.0}}
    assert A100_RECIPES == {"kl_l14_txt_25_a100": "kl_l14_txt_25", "kl_b32_txt_25_a100": "kl_b32_txt_25"}
    from kl_filter.recipes import load_recipe

    run = {r.name: r for r in plan_recipes(None, quick=False)[0]}
    assert set(A100_RECIPES) <= set(run) and {"semdedup_l14_eps01", "kl_l14_txt_25_x_semdedup_l14_eps01"} <= set(run)
    cfg = TrackConfig()
    for name, base in A100_RECIPES.items():
        assert recipe_params(run[name], cfg) == {**recipe_params(load_recipe(base), cfg), "logit_scale": 100.0}
        assert "logit_scale" not in recipe_params(load_recipe(base), cfg)
    cuts = recipe_params(run["kl_l14_txt_25_x_semdedup_l14_eps01"], cfg)["cuts"]
    assert cuts[0]["score"]["params"]["num_samples"] == cfg.kl_num_samples
    assert "num_samples" not in cuts[1]["filter"]["params"]


def test_repeated_share_counts_a_copy_and_its_original_once(tmp_path):
    import pyarrow.parquet as pq

    from kl_filter.apps.tiny.pool import make_pool
    from kl_filter.apps.tiny.subsets import repeated_share
    from kl_filter.core.uids import hex_to_u8u8

    make_pool(str(tmp_path), 400, seed=0, shard_size=200)
    t = pq.read_table(tmp_path / "truth.parquet").to_pydict()
    copies = [u for u, k in zip(t["uid"], t["kind"]) if k == "duplicate"]
    assert len(copies) == 28 and all(d for d, k in zip(t["dup_of"], t["kind"]) if k == "duplicate")
    assert repeated_share(hex_to_u8u8(t["uid"]), t) == 28 / 400
    originals = set(t["dup_of"]) - {""}
    keep_copies = [u for u in t["uid"] if u not in originals]  # every original dropped, its copies kept
    assert repeated_share(hex_to_u8u8(keep_copies), t) == 0.0
    pair = [copies[0], t["dup_of"][t["uid"].index(copies[0])]]
    assert repeated_share(hex_to_u8u8(pair), t) == 0.5


def test_track_rejects_bad_arguments_before_writing(tmp_path):
    for flags, msg in ((["--kl_num_samples", "1"], "--kl_num_samples must be >= 2, got 1"),
                       (["--seeds", "0"], "--seeds must be >= 1, got 0"),
                       (["--negcliploss_batch_size", "1"], "--negcliploss_batch_size must be >= 2, got 1")):
        out = tmp_path / "tiny"
        p = run_cli("track", "--scale", "tiny", "--out", out, "--quick", *flags)
        assert p.returncode != 0 and msg in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
        assert not out.exists()


@pytest.mark.slow  # trains the track's tiny students (still run by CI: .ci/run runs every test)
def test_track_quick(tmp_path):
    from kl_filter.apps.tiny.models import METRICS
    from kl_filter.apps.tiny.overrides import QUICK as QUICK_RECIPES
    from kl_filter.core.uids import check_uid_array, load_uids

    out = tmp_path / "tiny"
    p = run_cli("track", "--scale", "tiny", "--out", out, "--quick", "--kl_num_samples", "200", check=True)
    assert f"{len(QUICK_RECIPES)} recipe(s) x 1 seed(s)" in p.stdout
    assert {"no_filter", "laion2b", "kl_l14_txt_25"} <= set(QUICK_RECIPES)  # the track's point: LAION-2B vs D_KL
    for f in ("results.md", "results.csv", "results.png", "run.json"):
        assert (out / f).stat().st_size > 0, f
    assert not (out / "work").exists()  # intermediates are removed, the UID files stay
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["recipe"] for r in rows] == QUICK_RECIPES
    rec = json.loads((out / "run.json").read_text())
    assert rec["seeds"] == [0] and rec["quick"] and rec["wall_time_s"] > 0
    assert rec["command"][:2] == ["kl-filter", "track"] and rec["versions"]["torch"] and rec["versions"]["open_clip_torch"]
    assert set(rec["teachers"]) == {"b32", "l14"}
    assert rec["targets"] is None  # no informed-target recipe in --quick: no target embeddings written
    assert rec["teachers"]["b32"]["embed"]["dim"] == 512 and rec["teachers"]["l14"]["embed"]["dim"] == 768
    pool_rows = rec["pool"]["rows"]
    for r in rows:
        uids = load_uids(str(out / "subsets" / f"{r['recipe']}.npy"))
        check_uid_array(uids, r["recipe"])
        assert int(r["subset_size"]) == len(uids) > 0
        assert abs(float(r["subset_share"]) - len(uids) / pool_rows) < 1e-6
        for m in METRICS:
            assert 0.0 <= float(r[f"{m}_mean"]) <= 1.0, (r["recipe"], m)
            assert float(r[f"{m}_std"]) == 0.0  # one seed
    by = {r["recipe"]: r for r in rows}
    assert int(by["no_filter"]["subset_size"]) == pool_rows
    assert int(by["clip_score_l14_30"]["subset_size"]) == pytest.approx(0.3 * pool_rows, abs=2)
    # LAION-2B runs DataComp's rule unchanged (B/32 cosine >= 0.28 on the tiny teacher, then gcld3 English)
    laion = next(r for r in rec["results"] if r["recipe"] == "laion2b")
    assert laion["filter_summary"]["rules"][0]["computed_threshold"] == 0.28
    assert laion["subset_size"] < pool_rows and laion["kinds"]["foreign"] < rec["results"][0]["kinds"]["foreign"]
    md = (out / "results.md").read_text()
    assert all(name in md for name in QUICK_RECIPES) and "±" not in md.split("## What")[0].split("| recipe")[1]
    assert f"Pool: {pool_rows:,} image-text pairs" in md and "Values are from 1 seed." in md  # one seed keeps the text
    assert np.isfinite([r["average_mean"] for r in rec["results"]]).all()
    kl = next(r for r in rec["results"] if r["recipe"] == "kl_l14_txt_25")
    assert rec["kl_num_samples"] == rec["config"]["kl_num_samples"] == kl["params"]["num_samples"] == 200  # the flag
    assert set(kl["filter_summary"]["stats"]["num_reference_samples"].values()) == {200}
    assert "N = 200 drawn" in md
    # the page is a function of run.json alone: re-rendered from it, it is the same text
    from kl_filter.apps.tiny.results import _markdown

    assert _markdown(rec["results"], rec["skipped"], rec["teachers"], rec) == md


def test_quiet_logs_is_idempotent_and_drops_only_root_info(caplog):
    import logging

    from kl_filter.apps.tiny.workers import quiet_logs

    root = logging.getLogger()
    before = len(root.filters)
    for _ in range(3):
        quiet_logs()
    try:
        assert len(root.filters) == before + 1
        assert all(sum(type(f).__name__ == "_DropRootInfo" for f in h.filters) == 1 for h in root.handlers)
        with caplog.at_level(logging.INFO):
            logging.info("open_clip chatter")
            logging.getLogger("kl_filter.x").info("ours")
            logging.error("a real error")
        assert [r.getMessage() for r in caplog.records] == ["ours", "a real error"]
    finally:
        for obj in [root, *root.handlers]:
            for f in [f for f in obj.filters if type(f).__name__ == "_DropRootInfo"]:
                obj.removeFilter(f)
