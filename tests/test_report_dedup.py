"""The inspection report's SemDeDup section against the stored columns and real ``select`` runs (cluster sizes,
kept share at several ε, duplicate pairs recomputed in float64, thumbnails), bad input, and the logit scale shown
for each score column."""

import io
import json
import os
import shutil
import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import run_cli
from minipool import unit, write_shard

D, K, SEED, PAIRS = 768, 8, 3, 6
LAYOUT = [300, 200, 250]
N = sum(LAYOUT)
EPSS = (0.01, 0.05, 0.1, 0.0025, 0.32)  # the marks and two other grid points, each against a select run


def _pool(root, groups=30, seed=0):
    """Rows around 12 topics and ``groups`` planted near-duplicate groups of 2-4 rows (pairwise cosine about
    0.9975); l14 image embeddings only. Returns (pool dir, float16 embeddings, CLIP L/14 scores)."""
    root.mkdir()
    rng = np.random.default_rng(seed)
    topics = unit(rng, 12, D).astype(np.float32)
    x = topics[rng.integers(12, size=N)] * 0.65 + unit(rng, N, D).astype(np.float32) * 0.75
    rows, at = rng.permutation(N), 0
    for _ in range(groups):
        g = np.sort(rows[at: at + int(rng.integers(2, 5))])
        at += len(g)
        x[g] = x[g[0]] / np.linalg.norm(x[g[0]]) + 0.05 * unit(rng, len(g), D).astype(np.float32)
    emb = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16)
    clip = rng.random(N, dtype=np.float32) * 0.4
    start = 0
    for i, m in enumerate(LAYOUT):
        sl = slice(start, start + m)
        write_shard(root, f"{i:08d}", m, seed=10 + i, uid_start=start, npz=False, clip_l14_similarity_score=clip[sl])
        np.savez(root / f"{i:08d}.npz", l14_img=emb[sl])
        start += m
    return str(root), emb, clip


def _colour(i: int) -> tuple:
    return (37 * i % 256, 91 * i % 256, 173 * i % 256)


def _image_shards(out) -> None:
    """One webdataset tar per pool shard; row i's image is a solid colour read off i."""
    from PIL import Image

    os.makedirs(out)
    start = 0
    for s, m in enumerate(LAYOUT):
        with tarfile.open(os.path.join(out, f"{s:08d}.tar"), "w") as tf:
            for i in range(start, start + m):
                buf = io.BytesIO()
                Image.new("RGB", (24, 16), _colour(i)).save(buf, "JPEG", quality=95)
                for ext, data in (("jpg", buf.getvalue()), ("json", json.dumps({"uid": f"{i:032x}"}).encode())):
                    ti = tarfile.TarInfo(f"{i:09d}.{ext}")
                    ti.size = len(data)
                    tf.addfile(ti, io.BytesIO(data))
        start += m


def _select(pool, save, scores, eps, *extra):
    """``kl-filter select --name semdedup`` in this process (the CLI's own main); returns its sidecar."""
    from kl_filter.apps.cli import main

    argv = ["select", "--name", "semdedup", "--arch", "l14", "--num_clusters", str(K), "--seed", str(SEED),
            "--eps", str(eps), "--metadata_dir", pool, "--save_path", str(save), "--scores_dir", str(scores),
            "--num_workers", "2", "--no_progress", *extra]
    assert main(argv) == 0
    return json.loads(open(f"{save}.json").read())


def _stored(scores):
    """Pool-order (row i = uid i) columns of the score files."""
    t = pa.concat_tables([pq.read_table(f) for f in sorted(scores.glob("*.parquet"))])
    idx = np.array([int(u, 16) for u in t.column("uid").to_pylist()])
    assert np.array_equal(np.sort(idx), np.arange(N))
    out = {}
    for c in ("semdedup_l14_maxsim", "semdedup_l14_cluster"):
        out[c] = np.empty(N, np.float32)
        out[c][idx] = t.column(c).to_numpy()
    return out["semdedup_l14_maxsim"], out["semdedup_l14_cluster"].astype(np.int64)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("dedup")
    pool, emb, clip = _pool(root / "pool")
    scores = root / "scores"
    sides = {eps: _select(pool, root / f"u{eps}.npy", scores, eps) for eps in EPSS}
    _image_shards(root / "shards")
    out = root / "rep"
    p = run_cli("inspect", "--metadata_dir", pool, "--scores_dir", scores, "--shards_dir", root / "shards",
                "--out", out, "--filters", root / "u0.01.npy", "--sample_size", 200, "--examples", 2, "--bins", 10,
                "--ngram_top_k", 5, "--dedup_pairs", PAIRS, "--num_workers", 2, "--no_progress")
    assert p.returncode == 0, p.stderr
    maxsim, cluster = _stored(scores)
    return {"root": root, "pool": pool, "emb": emb, "clip": clip, "scores": scores, "sides": sides, "out": out,
            "fig": json.load(open(out / "figures.json")), "maxsim": maxsim, "cluster": cluster}


def _reference_order(run, rows, k, keep="hard"):
    """``rows`` of cluster ``k`` in the scorer's order, by the keep rule computed in float64 here."""
    c = np.load(next((run["scores"] / "semdedup_centroids").glob(f"l14_k{K}_*.npz")))["centroids"]
    x = run["emb"][rows].astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    value = x @ c[k].astype(np.float64) if keep == "hard" else -run["clip"][rows].astype(np.float64)
    return rows[np.argsort(value, kind="stable")]


def test_cluster_sizes_are_the_cluster_column(run):
    d = run["fig"]["dedup"]["l14"]
    assert (d["maxsim_column"], d["cluster_column"]) == ("semdedup_l14_maxsim", "semdedup_l14_cluster")
    sizes = np.bincount(run["cluster"], minlength=K)
    c = d["clusters"]
    assert c["sizes"] == sizes.tolist() and c["num_clusters"] == K and c["rows"] == N == d["rows"]
    assert (c["largest"], c["median"], c["empty"]) == (sizes.max(), np.median(sizes), int((sizes == 0).sum()))
    e = c["histogram"]["edges"]
    assert e[0] == 1 and all(b == 2 * a for a, b in zip(e, e[1:])) and e[-2] <= sizes.max() < e[-1]
    assert c["histogram"]["counts"] == [int(((sizes >= lo) & (sizes < hi)).sum()) for lo, hi in zip(e, e[1:])]
    # the cluster id is no score: no histogram, correlation or n-gram figure of it
    fig = run["fig"]
    assert "semdedup_l14_cluster" not in fig["score_columns"] and "semdedup_l14_maxsim" in fig["score_columns"]
    assert d["provenance"]["seed"] == SEED and d["provenance"]["num_clusters"] == K


def test_kept_share_is_what_select_keeps(run):
    k = run["fig"]["dedup"]["l14"]["kept"]
    assert k["marks"] == [0.01, 0.05, 0.1] and all(m in k["eps"] for m in k["marks"])
    assert k["eps"] == sorted(k["eps"]) and k["eps"][0] == 1e-4 and k["eps"][-1] == 0.5
    for eps, side in run["sides"].items():
        i = k["eps"].index(eps)
        kept_file = len(np.load(run["root"] / f"u{eps}.npy"))
        assert k["kept"][i] == side["kept"] == kept_file, eps
        assert k["share"][i] == side["kept"] / N
    # every ε of the grid: the paper's rule on the stored float32 column, in float64 here
    want = [int((run["maxsim"].astype(np.float64) <= 1 - eps).sum()) for eps in k["eps"]]
    assert k["kept"] == want
    assert want[k["eps"].index(0.01)] < N and len(set(want)) > 3  # planted duplicates, more at larger ε
    assert all(a >= b for a, b in zip(want, want[1:]))


def test_pairs_are_the_top_rows_beside_their_earlier_partner(run):
    maxsim, cluster, emb = run["maxsim"], run["cluster"], run["emb"]
    pairs = run["fig"]["dedup"]["l14"]["pairs"]
    assert run["fig"]["dedup"]["l14"]["pairs_unavailable"] is None and len(pairs) == PAIRS
    # the rows: highest maxsim first, ties by uid, among rows that have an earlier row (the first stores -1)
    order = sorted((i for i in range(N) if maxsim[i] > -1), key=lambda i: (-float(maxsim[i]), i))[:PAIRS]
    assert [int(p["row"]["uid"], 16) for p in pairs] == order
    x = emb.astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    for p in pairs:
        j, i = int(p["row"]["uid"], 16), int(p["partner"]["uid"], 16)
        assert p["maxsim"] == p["row"]["score"] == float(maxsim[j]) and p["cluster"] == cluster[j]
        assert abs(p["cosine"] - p["maxsim"]) <= 1e-5 and p["agrees"] and p["partner"]["score"] == p["cosine"]
        assert abs(float(x[i] @ x[j]) - p["maxsim"]) <= 1e-5  # the pair's cosine, in float64
        # the partner: same cluster, EARLIER in the scorer's order (farthest from the centroid first), and the
        # most similar of the earlier rows
        assert cluster[i] == cluster[j] and i != j
        ordered = list(_reference_order(run, np.flatnonzero(cluster == cluster[j]), cluster[j]))
        earlier = ordered[: ordered.index(j)]
        assert i in earlier
        assert abs(float((x[earlier] @ x[j]).max()) - float(x[i] @ x[j])) <= 1e-6
        assert p["row"]["caption"] and p["partner"]["caption"]


def test_pair_thumbnails_and_page(run):
    from PIL import Image

    out, d = run["out"], run["fig"]["dedup"]["l14"]
    for p in d["pairs"]:
        for e in (p["row"], p["partner"]):
            assert e["thumbnail"] == f"thumbs/{e['uid']}.jpg"
            im = np.asarray(Image.open(out / e["thumbnail"]).convert("RGB"), np.float64)
            np.testing.assert_allclose(im.reshape(-1, 3).mean(0), _colour(int(e["uid"], 16)), atol=4)
    page = (out / "index.html").read_text(encoding="utf-8")
    section = page.split('<h2 id="dedup">')[1].split("<h2")[0]
    assert '<a href="#dedup">' in page
    for f in ("plots/dedup_sizes_l14.png", "plots/dedup_kept_l14.png"):
        assert f'src="{f}"' in section and (out / f).is_file() and f in run["fig"]["report"]["plots"]
    for p in d["pairs"]:
        assert p["row"]["uid"] in section and p["partner"]["uid"] in section
        assert f'src="{p["partner"]["thumbnail"]}"' in section
    k = d["kept"]
    i = k["eps"].index(0.01)
    assert f"<td>0.01</td><td>{k['threshold'][i]:.9g}</td><td>{k['kept'][i]:,}</td>" in section


def test_pairs_follow_the_keep_rule(run, tmp_path):
    """keep=clip_score: the earlier row of a pair has the higher CLIP score (another order key, found again)."""
    from kl_filter.apps.report import build_report

    _select(run["pool"], tmp_path / "u.npy", tmp_path / "s", 0.01, "--keep", "clip_score")
    fig = build_report(run["pool"], str(tmp_path / "rep"), scores_dir=str(tmp_path / "s"), filters=[],
                       sample_size=50, examples=1, bins=5, ngram_top_k=5, dedup_pairs=4)
    pairs = fig["dedup"]["l14"]["pairs"]
    assert len(pairs) == 4 and fig["dedup"]["l14"]["provenance"]["keep"] == "clip_score"
    clip = run["clip"]
    for p in pairs:
        j, i = int(p["row"]["uid"], 16), int(p["partner"]["uid"], 16)
        assert clip[i] > clip[j] and p["agrees"] and abs(p["cosine"] - p["maxsim"]) <= 1e-5


def test_missing_centroids_and_bad_cluster_columns(run, tmp_path):
    from kl_filter.core.errors import KLFilterError
    from kl_filter.apps.report import build_report

    kw = dict(filters=[], sample_size=50, examples=1, bins=5, ngram_top_k=5)
    scores = tmp_path / "s"
    shutil.copytree(run["scores"], scores)
    shutil.rmtree(scores / "semdedup_centroids")
    fig = build_report(run["pool"], str(tmp_path / "rep"), scores_dir=str(scores), **kw)
    d = fig["dedup"]["l14"]
    assert d["pairs"] == [] and d["pairs_unavailable"].startswith("no saved centroids for these columns")
    assert d["clusters"]["sizes"] == np.bincount(run["cluster"], minlength=K).tolist()
    assert "Duplicate pairs not shown: no saved centroids" in (tmp_path / "rep" / "index.html").read_text()

    def rewrite(path, fn):
        t = pq.read_table(path)
        i = t.schema.get_field_index("semdedup_l14_cluster")
        col = fn(t.column(i).to_numpy().copy())
        pq.write_table(t.set_column(i, "semdedup_l14_cluster", pa.array(col, pa.float32())), path)

    # ids the centroids do not give (clusters 0 and 1 swapped in one shard): found when the pairs are searched
    scores = tmp_path / "s2"
    shutil.copytree(run["scores"], scores)
    victim = str(scores / "00000001.parquet")
    rewrite(victim, lambda c: np.where(c == 0, 1, np.where(c == 1, 0, c)))
    with pytest.raises(KLFilterError, match="do not give this file's semdedup_l14_cluster") as e:
        build_report(run["pool"], str(tmp_path / "rep2"), scores_dir=str(scores), **kw)
    assert str(e.value).startswith(victim + ": ") and not (tmp_path / "rep2").exists()
    # not a cluster id at all: one line naming the file, from the CLI
    rewrite(victim, lambda c: np.where(np.arange(len(c)) == 5, np.float32(K), c))
    p = run_cli("inspect", "--metadata_dir", run["pool"], "--scores_dir", scores, "--out", tmp_path / "rep3",
                "--filters", "--no_progress")
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1
    assert victim in p.stderr and f"1 values are not cluster ids in [0, {K}) (first: {float(K)})" in p.stderr
    assert not (tmp_path / "rep3").exists()


def test_logit_scale_of_each_score_column(tmp_path):
    """Each score-file column's logit scale and its source, from the provenance the score stage records:
    the first shard's, "mixed" when shards disagree, "—" for a column without one and for the pool's columns."""
    from kl_filter.apps.report import build_report
    from kl_filter.stages.scores import write_scores

    pool = tmp_path / "pool"
    pool.mkdir()
    scores = tmp_path / "scores"
    scores.mkdir()
    for s in range(2):
        write_shard(pool, f"{s:08d}", 40, seed=s, uid_start=40 * s)
        uid = pa.array([f"{i:032x}" for i in range(40 * s, 40 * s + 40)])
        rng = np.random.default_rng(s)
        cols = {c: rng.random(40) for c in ("kl_l14_txt", "negcliploss_l14", "vas_l14")}
        # SemDeDup columns written by hand, without provenance: sizes and kept shares, but no pairs
        cols["semdedup_b32_maxsim"] = rng.uniform(-1, 1, 40)
        cols["semdedup_b32_cluster"] = rng.integers(0, 4 + s, 40)
        prov = {"kl_l14_txt": {"scorer": "kl", "logit_scale": 50.0,
                               "logit_scale_source": "pool manifest (embeddings.json)"},
                "negcliploss_l14": {"scorer": "negcliploss", "logit_scale": 100.0, "logit_scale_source":
                                    "--logit_scale" if s == 0 else "default: OpenAI CLIP (no manifest)"},
                "vas_l14": {"scorer": "vas"}}
        write_scores(str(scores / f"{s:08d}.parquet"), uid, cols, {"format": 4, "columns": prov})
    out = tmp_path / "rep"
    fig = build_report(str(pool), str(out), scores_dir=str(scores), filters=[], sample_size=20, examples=1,
                       bins=5, ngram_top_k=5)
    t = {c: fig["columns"][c]["temperature"] for c in fig["score_columns"]}
    assert t["clip_b32_similarity_score"] is None and t["clip_l14_similarity_score"] is None
    assert t["kl_l14_txt"] == {"logit_scale": 50.0, "source": "pool manifest (embeddings.json)", "mixed": False,
                               "values": [{"logit_scale": 50.0, "source": "pool manifest (embeddings.json)",
                                           "shards": 2}]}
    assert t["negcliploss_l14"]["mixed"] and t["negcliploss_l14"]["values"] == [
        {"logit_scale": 100.0, "source": "--logit_scale", "shards": 1},
        {"logit_scale": 100.0, "source": "default: OpenAI CLIP (no manifest)", "shards": 1}]
    assert t["vas_l14"] == {"logit_scale": None, "source": None, "mixed": False,
                            "values": [{"logit_scale": None, "source": None, "shards": 2}]}
    page = (out / "index.html").read_text(encoding="utf-8")
    table = page.split('<h2 id="scores">')[1].split("</table>")[0]
    rows = {r.split("</td>")[0].split(">")[-1]: r for r in table.split("<tr>")[2:]}
    assert rows["kl_l14_txt"].endswith("<td>50 (τ = 0.02)</td><td class=\"l\">pool manifest (embeddings.json)"
                                       "</td></tr>")
    assert "<td>mixed</td><td class=\"l\">mixed<br>" in rows["negcliploss_l14"]
    assert "from default: OpenAI CLIP (no manifest) in 1 shard" in rows["negcliploss_l14"]
    for c in ("vas_l14", "clip_l14_similarity_score"):
        assert rows[c].endswith("<td>—</td><td class=\"l\">—</td></tr>")
    d = fig["dedup"]["b32"]
    ids = np.concatenate([pq.read_table(scores / f"{s:08d}.parquet").column("semdedup_b32_cluster").to_numpy()
                          for s in range(2)]).astype(np.int64)
    assert d["clusters"]["sizes"] == np.bincount(ids).tolist() and d["clusters"]["num_clusters"] == ids.max() + 1
    assert d["pairs"] == [] and d["pairs_unavailable"].startswith("the column's provenance does not name a SemDeDup")
    assert "semdedup_b32_cluster" not in fig["columns"] and "semdedup_b32_maxsim" in fig["columns"]


def test_dedup_accumulator_streams():
    """Fed in uneven chunks, the accumulator equals the whole-array answers: sizes, kept at every ε of the grid
    (NaN dropped), and the top rows (maxsim descending, uid ascending, -1 rows never)."""
    from kl_filter.filters.semdedup_figures import EPS_GRID, DedupAccumulator

    rng = np.random.default_rng(4)
    n = 2003
    maxsim = np.round(rng.uniform(-1, 1.0, n), 3).astype(np.float32)  # ties
    maxsim[rng.choice(n, 300, replace=False)] = np.float32(1) - rng.uniform(0, 0.02, 300).astype(np.float32)
    maxsim[rng.choice(n, 20, replace=False)] = np.nan
    maxsim[:5] = -1.0
    cluster = rng.integers(0, 40, n)
    uids = np.zeros(n, "u8,u8")
    uids["f0"], uids["f1"] = rng.permutation(n), rng.integers(0, 2**63, n)
    texts = np.array([f"row {i}" for i in range(n)], object)
    acc = DedupAccumulator("l14", "m", "c", None, 7)
    cuts = [0, 3, 700, 701, 1500, n]
    for s, (lo, hi) in enumerate(zip(cuts[:-1], cuts[1:])):
        acc.update(s, maxsim[lo:hi], cluster[lo:hi], uids[lo:hi], texts[lo:hi])
    assert acc.sizes.tolist() == np.bincount(cluster).tolist() and acc.nan == 20 and acc.rows == n
    assert acc.kept.tolist() == [int((maxsim.astype(np.float64) <= 1 - e).sum()) for e in EPS_GRID]
    want = sorted((i for i in range(n) if maxsim[i] > -1), key=lambda i: (-float(maxsim[i]), uids[i]["f0"]))[:7]
    assert [t[6] for t in acc.top] == [f"row {i}" for i in want]
    shard = np.searchsorted(cuts, want, side="right") - 1
    assert [(t[3], t[4], t[5]) for t in acc.top] == [(s, i - cuts[s], cluster[i]) for s, i in zip(shard, want)]
