"""Selection rules against DataComp's and the KL paper's procedures, written plainly here."""

import math

import numpy as np
import pytest

from kl_filter.filters.base import Keep, Top, Uniform
from kl_filter.runner import ShardScores, evaluate_rules
from kl_filter.rules.threshold import fraction_threshold
from kl_filter.rules.uniform import uniform_keep
from kl_filter.core.uids import hex_to_u8u8


def datacomp_threshold(x, f):
    return -np.sort(-x)[int(len(x) * f)]


ADVERSARIAL = {
    "normal": np.random.default_rng(0).standard_normal(10_001).astype(np.float32),
    "many_ties": np.random.default_rng(1).integers(0, 5, 5000).astype(np.float32),
    "single_value": np.full(777, 0.25, np.float32),
    "huge_range": np.array([-3e38, 3e38, 0, 1e-38, -1e-38] * 200, np.float32),
    "with_nan": np.where(np.arange(2000) % 7 == 0, np.nan, np.linspace(0, 1, 2000)).astype(np.float32),
    "float64": np.random.default_rng(2).random(999),
}


@pytest.mark.parametrize("name", sorted(ADVERSARIAL))
@pytest.mark.parametrize("f", [0.001, 0.1, 0.25, 0.3, 0.5, 0.999])
def test_fraction_threshold_is_datacomps(name, f):
    x = ADVERSARIAL[name]
    t = fraction_threshold(x, f)
    ref = datacomp_threshold(x, f)
    assert (np.isnan(t) and np.isnan(ref)) or t == ref
    assert np.asarray(t).dtype == x.dtype


def test_fraction_one_keeps_everything_and_reverse():
    x = ADVERSARIAL["normal"]
    assert (x >= fraction_threshold(x, 1.0)).all()
    # reverse (KL paper): threshold from 1 - f, keep <=
    t = fraction_threshold(x, 0.3, reverse=True)
    assert t == -np.sort(-x)[int(len(x) * 0.7)]
    assert (x <= t).sum() == len(x) - int(len(x) * 0.7)


def authors_uniform(scores, f, B, rng):
    """The KL paper's downsample_df_by_ig, with a given Generator in place of the global RNG."""
    N = len(scores)
    M = int(np.ceil(f * N))
    _, edges = np.histogram(scores, bins=B)
    bin_idx = np.digitize(scores, bins=edges[:-1], right=False)
    T = M / B
    out = []
    for b in range(1, B + 1):
        idx_b = np.flatnonzero(bin_idx == b)
        if len(idx_b) == 0:
            continue
        if len(idx_b) <= T:
            out.extend(idx_b.tolist())
        else:
            out.extend(rng.choice(idx_b, size=int(np.floor(T)), replace=False).tolist())
    return np.sort(np.array(out, dtype=np.int64))


@pytest.mark.parametrize("f,B", [(0.25, 1000), (0.5, 10), (0.05, 100)])
def test_uniform_matches_authors_procedure(f, B):
    x = np.random.default_rng(3).gamma(2.0, size=20_000).astype(np.float32)
    mine = np.flatnonzero(uniform_keep(x, f, B, seed=11))
    ref = authors_uniform(x, f, B, np.random.default_rng(11))
    assert np.array_equal(mine, ref)
    assert len(mine) <= math.ceil(f * len(x))
    assert not np.array_equal(mine, np.flatnonzero(uniform_keep(x, f, B, seed=12)))


def _shards(cols_per_shard):
    out, k = [], 0
    for cols in cols_per_shard:
        n = len(next(iter(cols.values())))
        uids = hex_to_u8u8([f"{i:032x}" for i in range(k, k + n)])
        k += n
        out.append(ShardScores(uids, cols))
    return out


def test_rules_are_global_and_intersected():
    rng = np.random.default_rng(5)
    a = rng.random(3000).astype(np.float32)
    b = rng.random(3000).astype(np.float32)
    ok = rng.random(3000) > 0.2
    shards = _shards([{"a": a[i:i + 1000], "b": b[i:i + 1000], "ok": ok[i:i + 1000]} for i in range(0, 3000, 1000)])
    masks, facts = evaluate_rules([Top("a", fraction=0.3), Top("b", threshold=0.5), Keep("ok")], shards, seed=0)
    ref = (a >= datacomp_threshold(a, 0.3)) & (b >= np.float32(0.5)) & ok
    assert np.array_equal(np.concatenate(masks), ref)
    assert facts[0]["kept_by_rule"] == int((a >= datacomp_threshold(a, 0.3)).sum()) == 901
    assert facts[0]["computed_threshold"] == float(datacomp_threshold(a, 0.3))


def test_ties_keep_vs_exact():
    # A saturated score: 40% of the rows tie at the ceiling log N.
    n, ceiling = 1000, np.float32(np.log(198))
    x = np.linspace(0, 4, n).astype(np.float32)
    x[:400] = ceiling
    shards = _shards([{"kl": x[:500]}, {"kl": x[500:]}])
    keep, facts = evaluate_rules([Top("kl", fraction=0.25, ceiling=float(ceiling))], shards, seed=0)
    assert int(np.concatenate(keep).sum()) == 400  # DataComp's >= rule keeps every tie
    assert facts[0]["ties_at_threshold"] == 400 and facts[0]["saturated"] == 400
    exact, _ = evaluate_rules([Top("kl", fraction=0.25, ties="exact")], shards, seed=0)
    exact = np.concatenate(exact)
    assert exact.sum() == int(n * 0.25) + 1 and (x[exact] == ceiling).all()
    again, _ = evaluate_rules([Top("kl", fraction=0.25, ties="exact")], shards, seed=0)
    other, _ = evaluate_rules([Top("kl", fraction=0.25, ties="exact")], shards, seed=1)
    assert np.array_equal(np.concatenate(again), exact)
    assert not np.array_equal(np.concatenate(other), exact)


def test_uniform_rule_in_runner_is_seeded():
    x = np.random.default_rng(9).random(4000).astype(np.float32)
    shards = _shards([{"s": x[:2500]}, {"s": x[2500:]}])
    m, _ = evaluate_rules([Uniform("s", 0.2, 50)], shards, seed=3)
    assert np.array_equal(np.concatenate(m), uniform_keep(x, 0.2, 50, 3))


@pytest.mark.parametrize("name", sorted(ADVERSARIAL))
@pytest.mark.parametrize("parts", [1, 7])
def test_distributed_kth_equals_full_sort(name, parts):
    from kl_filter.rules.kth import kth_largest
    from kl_filter.rules.threshold import kth_index

    x = ADVERSARIAL[name]
    chunks = np.array_split(x, parts)
    for f in (0.001, 0.1, 0.25, 0.5, 0.999, 1.0):
        k = min(int(len(x) * f), len(x) - 1)
        ref = -np.sort(-x)[k]
        got = kth_largest(chunks, k, x.dtype)
        assert (np.isnan(ref) and np.isnan(got)) or got == ref
        if not np.isnan(ref):
            assert kth_largest(chunks, kth_index(len(x), f), x.dtype) == fraction_threshold(x, f)


def test_distributed_kth_signed_zero_and_extremes():
    from kl_filter.rules.kth import float_keys, kth_largest

    x = np.array([np.float32(-0.0), np.float32(0.0), np.finfo(np.float32).max, -np.finfo(np.float32).max,
                  np.finfo(np.float32).tiny, -np.inf, np.inf], np.float32)
    assert np.array_equal(np.argsort(float_keys(x), kind="stable"), np.argsort(x, kind="stable"))
    for k in range(len(x)):
        assert kth_largest([x[:3], x[3:]], k) == -np.sort(-x)[k]


# ---- a rule in one file: the k best rows per group ----------------------------------------------------------------
def top_per_group_reference(score, group, k):
    """Plainly: per group, rows by score (highest first, then pool order); the first k of each, NaN never."""
    keep = np.zeros(len(score), bool)
    for g in set(group[~np.isnan(group)].tolist()):
        rows = [i for i in range(len(score)) if group[i] == g and not np.isnan(score[i])]
        rows.sort(key=lambda i: (-float(score[i]), i))
        keep[rows[:k]] = True
    return keep


def test_top_per_group_against_a_plain_loop():
    from kl_filter.rules.top_per_group import TopPerGroup

    rng = np.random.default_rng(12)
    score = rng.integers(0, 40, 3000).astype(np.float32)  # many ties: broken by pool order
    score[::97] = np.nan
    group = rng.integers(0, 30, 3000).astype(np.float32)
    group[::101] = np.nan
    shards = _shards([{"s": score[i:i + 1000], "g": group[i:i + 1000]} for i in range(0, 3000, 1000)])
    for k in (1, 3, 500):
        masks, facts = evaluate_rules([TopPerGroup("s", group="g", k=k)], shards, seed=0)
        assert np.array_equal(np.concatenate(masks), top_per_group_reference(score, group, k)), k
    assert facts[0]["groups"] == 30 and facts[0]["kept_by_rule"] == int(np.concatenate(masks).sum())
    with pytest.raises(Exception, match="k must be a whole number"):
        TopPerGroup("s", group="g", k=0)


def test_top_per_group_in_a_recipe_on_semdedup_clusters(tmp_path):
    """At most 3 rows per SemDeDup cluster, the best by CLIP score: the group column comes from a scorer."""
    import pyarrow.parquet as pq

    from conftest import run_cli
    from minipool import make_minipool

    pool = make_minipool(tmp_path / "pool", shards=2, n=300)
    (tmp_path / "r.yaml").write_text(
        "cuts:\n  - {rule: top_per_group, column: clip_l14_similarity_score, k: 3, group: semdedup_l14_cluster,\n"
        "     group_score: {name: semdedup, params: {num_clusters: 20}}}\n")
    run_cli("run", tmp_path / "r.yaml", "--metadata_dir", pool, "--save_path", tmp_path / "u.npy", "--scores_dir",
            tmp_path / "s", "--no_progress", check=True)
    clip = np.concatenate([pq.read_table(f"{pool}/{s:08d}.parquet").column("clip_l14_similarity_score").to_numpy()
                           for s in range(2)])
    cluster = np.concatenate([pq.read_table(f"{tmp_path}/s/{s:08d}.parquet").column("semdedup_l14_cluster").to_numpy()
                              for s in range(2)])
    want = top_per_group_reference(clip, cluster, 3)
    kept = np.load(tmp_path / "u.npy")
    assert len(kept) == want.sum() == 3 * 20
    assert np.array_equal(np.sort(kept), np.sort(hex_to_u8u8([f"{i:032x}" for i in np.flatnonzero(want)])))


def test_every_registered_rules_annotations_resolve():
    """A rule's flags are typed from its annotations (kl_filter/core/params.py); one that does not resolve in the
    rule's module (an inherited field's type not imported there) would leave every value an unchecked string."""
    import typing

    from kl_filter.core.params import signature_params
    from kl_filter.rules.base import RULES

    for name in ("top", "keep", "uniform", "resample", "top_per_group"):
        cls = RULES.get(name)
        typing.get_type_hints(cls.__init__)
        kinds = {p.name: p for p in signature_params(cls)}
        if "fraction" in kinds:
            assert kinds["fraction"].base is float, (name, kinds["fraction"])
