"""``kl-filter inspect``: every figure in figures.json recomputed here independently (pandas, plain Python), the
page's images, thumbnails, the headless-Chromium check with a screenshot, and bad input."""

import glob
import io
import json
import os
import re
import shutil
import tarfile
from collections import Counter
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

from conftest import run_cli

SEED, SAMPLE, EXAMPLES, BINS, TOP_K = 3, 5000, 6, 40, 20
FILTERS = ["clip_score_l14_30", "laion2b", "kl_l14_txt_25"]


def _colour(uid: str) -> tuple:
    return tuple(int(uid[i:i + 2], 16) for i in (0, 2, 4))


def _write_image_shards(pool_dir: str, out: str, bad_uid: str) -> set:
    """A webdataset tar per... one tar for the rows of the pool's first shard; each image a solid colour read
    off its uid, and one sample whose image bytes are garbage."""
    from PIL import Image

    os.makedirs(out)
    first = sorted(glob.glob(os.path.join(pool_dir, "*.parquet")))[0]
    df = pd.read_parquet(first, columns=["uid", "text"])
    with tarfile.open(os.path.join(out, "00000000.tar"), "w") as tf:
        for i, (uid, text) in enumerate(zip(df.uid, df.text)):
            buf = io.BytesIO()
            Image.new("RGB", (24, 16), _colour(uid)).save(buf, "JPEG", quality=95)
            parts = {"jpg": b"not a jpeg" if uid == bad_uid else buf.getvalue(), "txt": text.encode(),
                     "json": json.dumps({"uid": uid}).encode()}
            for ext, data in parts.items():
                ti = tarfile.TarInfo(f"{i:09d}.{ext}")
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
    return set(df.uid)


@pytest.fixture(scope="module")
def report(synth_dir, tmp_path_factory):
    base = tmp_path_factory.mktemp("report")
    scores = str(base / "scores")
    # a finished subset file with duplicated uids (upsampling) and no sidecar
    df = pd.read_parquet(sorted(glob.glob(os.path.join(synth_dir, "*.parquet")))[1], columns=["uid"])
    pick = np.random.default_rng(0).choice(len(df), 1500, replace=False)
    u = [(int(x[:16], 16), int(x[16:], 16)) for x in df.uid.values[pick]]
    arr = np.array(sorted(u + u[:100]), dtype="u8,u8")
    np.save(base / "handpicked.npy", arr)
    # first run without images, to learn the example uids; then the image shards and the real run
    first_shard = pd.read_parquet(sorted(glob.glob(os.path.join(synth_dir, "*.parquet")))[0], columns=["uid"]).uid
    bad_uid = first_shard.iloc[0]
    shards = str(base / "shards")
    in_shards = _write_image_shards(synth_dir, shards, bad_uid)
    out = str(base / "rep")
    p = run_cli("inspect", "--metadata_dir", synth_dir, "--scores_dir", scores, "--shards_dir", shards, "--out", out,
                "--filters", *FILTERS, str(base / "handpicked.npy"), "--seed", SEED, "--sample_size", SAMPLE,
                "--examples", EXAMPLES, "--bins", BINS, "--ngram_top_k", TOP_K, "--num_workers", 2, "--no_progress")
    assert p.returncode == 0, p.stderr
    fig = json.load(open(os.path.join(out, "figures.json")))
    return {"out": out, "fig": fig, "pool": synth_dir, "scores": scores, "base": base, "shards": shards,
            "in_shards": in_shards, "bad_uid": bad_uid, "stdout": p.stdout}


@pytest.fixture(scope="module")
def pool_df(report):
    frames = []
    for p in sorted(glob.glob(os.path.join(report["pool"], "*.parquet"))):
        df = pd.read_parquet(p)
        sc = pd.read_parquet(os.path.join(report["scores"], os.path.basename(p)))
        assert (sc.uid.values == df.uid.values).all()
        frames.append(pd.concat([df, sc.drop(columns="uid")], axis=1))
    return pd.concat(frames, ignore_index=True)


def test_columns_and_summaries(report, pool_df):
    fig = report["fig"]
    cols = fig["score_columns"]
    assert cols[:2] == ["clip_b32_similarity_score", "clip_l14_similarity_score"]
    assert cols[2:] == ["kl_l14_txt"]  # the column the KL recipe wrote into --scores_dir
    assert fig["pool"]["rows"] == len(pool_df) == 20_000
    for c in cols:
        x = pool_df[c].astype(np.float64)
        s = fig["columns"][c]["summary"]
        assert s["count"] == x.notna().sum() and s["nan"] == x.isna().sum()
        assert s["mean"] == pytest.approx(x.mean(), rel=1e-12)
        assert s["std"] == pytest.approx(x.std(ddof=1), rel=1e-9)
        assert (s["min"], s["max"]) == (x.min(), x.max())
        edges = np.linspace(x.min(), x.max(), BINS + 1)
        h = fig["columns"][c]["histogram"]
        np.testing.assert_allclose(h["edges"], edges, rtol=0, atol=1e-12)
        assert h["counts"] == np.histogram(x, bins=edges)[0].tolist()
        assert sum(h["counts"]) == len(x)


def test_examples_are_the_extremes(report, pool_df):
    fig = report["fig"]
    for c in fig["score_columns"]:
        d = pd.DataFrame({"s": pool_df[c].astype(np.float64), "uid": pool_df.uid, "text": pool_df.text})
        top = d.assign(k=-d.s).sort_values(["k", "uid"]).head(EXAMPLES)
        bottom = d.sort_values(["s", "uid"]).head(EXAMPLES)
        for got, want in ((fig["columns"][c]["top"], top), (fig["columns"][c]["bottom"], bottom)):
            assert [e["uid"] for e in got] == list(want.uid)
            assert [e["score"] for e in got] == list(want.s)
            assert [e["caption"] for e in got] == [t[:300] for t in want.text]


def test_thresholds_drawn_are_the_recipes(report):
    fig = report["fig"]
    for name in FILTERS:
        side = json.load(open(os.path.join(report["out"], "uids", f"{name}.npy.json")))
        want = [(r["column"], r["computed_threshold"]) for r in side["rules"] if "computed_threshold" in r]
        got = [(t["column"], t["value"]) for t in fig["subsets"][name]["thresholds"]]
        assert got == want
        for col, v in want:
            assert {"subset": name, "column": col, "value": v, "keep": ">="} in fig["columns"][col]["thresholds"]
    assert fig["subsets"]["laion2b"]["thresholds"] == [{"column": "clip_b32_similarity_score", "value": 0.28,
                                                        "keep": ">="}]
    assert fig["subsets"]["handpicked"]["thresholds"] == []


def test_correlations(report, pool_df):
    fig = report["fig"]
    cols = fig["score_columns"]
    want = pool_df[cols].astype(np.float64).corr()
    np.testing.assert_allclose(np.array(fig["correlations"]["pearson"], float), want.values, rtol=0, atol=1e-9)
    sample = pd.read_parquet(os.path.join(report["out"], "sample.parquet"))
    want_s = sample[cols].astype(np.float64).corr(method="spearman")
    np.testing.assert_allclose(np.array(fig["correlations"]["spearman"], float), want_s.values, rtol=0, atol=1e-9)


def test_sample_is_the_seeded_bottom_k(report, pool_df):
    from kl_filter.core.hashing import sample_keys
    from kl_filter.core.uids import hex_to_u8u8

    keys = sample_keys(hex_to_u8u8(list(pool_df.uid)), SEED, 7)
    want = set(pool_df.uid.values[np.argsort(keys)[:SAMPLE]])
    sample = pd.read_parquet(os.path.join(report["out"], "sample.parquet"))
    assert len(sample) == SAMPLE == report["fig"]["sample"]["size"]
    assert set(sample.uid) == want
    joined = sample.merge(pool_df, on="uid", suffixes=("", "_pool"))
    assert (joined.text == joined.text_pool).all()
    np.testing.assert_array_equal(joined.kl_l14_txt, joined.kl_l14_txt_pool)


def _coverage(texts, scores, uids, k):
    order = sorted(range(len(texts)), key=lambda i: (scores[i], uids[i]))
    out = {1: [], 2: [], 3: []}
    for part in np.array_split(np.array(order), 10):
        for n in out:
            c = Counter()
            for i in part:
                t = re.findall(r"[^\W_]+", texts[i].lower())
                c.update(" ".join(t[j:j + n]) for j in range(len(t) - n + 1))
            total = sum(c.values())
            out[n].append(sum(v for _, v in c.most_common(k)) / total if total else None)
    return out


def test_ngram_deciles(report):
    fig = report["fig"]
    sample = pd.read_parquet(os.path.join(report["out"], "sample.parquet"))
    for c in ("kl_l14_txt", "clip_l14_similarity_score"):
        want = _coverage(list(sample.text), list(sample[c].astype(np.float64)), list(sample.uid), TOP_K)
        got = fig["ngrams"][c]
        assert got["top_k"] == TOP_K and [d["rows"] for d in got["deciles"]] == [SAMPLE // 10] * 10
        for n in (1, 2, 3):
            np.testing.assert_allclose(got["coverage"][str(n)], want[n], rtol=1e-12)
    # the words shown for the lowest and highest decile are that decile's most frequent, with their counts
    order = sample.assign(s=sample.kl_l14_txt.astype(np.float64)).sort_values(["s", "uid"])
    low = Counter(w for t in order.text.head(SAMPLE // 10) for w in re.findall(r"[^\W_]+", t.lower()))
    shown = fig["ngrams"]["kl_l14_txt"]["top_ngrams"]["1"]["lowest"]
    assert [k for _, k in shown] == [k for _, k in low.most_common(len(shown))]
    assert all(low[w] == k for w, k in shown)


def test_subsets_and_overlap(report, pool_df):
    from kl_filter.text.langid import default_fasttext_path
    import fasttext

    fig = report["fig"]
    n = len(pool_df)
    words = pool_df.text.map(lambda t: len(t.split())).values
    side = np.minimum(pool_df.original_width.values, pool_df.original_height.values)
    sample = pd.read_parquet(os.path.join(report["out"], "sample.parquet"))
    model = fasttext.load_model(default_fasttext_path())
    english = np.array([model.predict(t.replace("\n", " "))[0][0] == "__label__en" for t in sample.text])
    sets = {}
    for name in FILTERS + ["handpicked"]:
        path = os.path.join(report["out"], "uids", f"{name}.npy") if name in FILTERS else \
            str(report["base"] / "handpicked.npy")
        arr = np.load(path)
        sets[name] = {f"{a:016x}{b:016x}" for a, b in arr.tolist()}
        s = fig["subsets"][name]
        assert s["file_rows"] == len(arr) and s["unique_uids"] == len(sets[name])
        kept = pool_df.uid.isin(sets[name]).values
        assert s["kept"] == kept.sum() and s["share"] == pytest.approx(kept.sum() / n, rel=1e-12)
        for key, vals in (("caption_words", words), ("short_side", side)):
            e = [np.inf if v is None else v for v in s[key]["edges"]]
            want = [int(((vals[kept] >= lo) & (vals[kept] < hi)).sum()) for lo, hi in zip(e[:-1], e[1:])]
            assert s[key]["counts"] == want
        in_sample = sample.uid.isin(sets[name]).values
        assert s["english_sample_rows"] == in_sample.sum()
        assert s["english"] == pytest.approx(english[in_sample].mean(), rel=1e-12)
    assert fig["subsets"]["handpicked"]["file_rows"] == 1600 and fig["subsets"]["handpicked"]["kept"] == 1500
    assert fig["sample"]["english"] == pytest.approx(english.mean())
    names = fig["overlap"]["subsets"]
    assert names == FILTERS + ["handpicked"]
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            inter = len(sets[a] & sets[b])
            assert fig["overlap"]["intersection"][i][j] == inter
            assert fig["overlap"]["jaccard"][i][j] == pytest.approx(inter / len(sets[a] | sets[b]), rel=1e-12)


def test_kept_and_dropped_examples_are_random_sample_rows(report, pool_df):
    """Per subset: the first rows, in ascending seeded sample key, of the sample rows it keeps and of those it drops."""
    from kl_filter.core.hashing import sample_keys
    from kl_filter.core.uids import hex_to_u8u8

    fig = report["fig"]
    keys = sample_keys(hex_to_u8u8(list(pool_df.uid)), SEED, 7)
    sample = pool_df.iloc[np.argsort(keys)[:SAMPLE]]  # ascending key: the sample's random order
    want_col = {"clip_score_l14_30": "clip_l14_similarity_score", "laion2b": "clip_b32_similarity_score",
                "kl_l14_txt_25": "kl_l14_txt", "handpicked": None}
    for name, col in want_col.items():
        s = fig["subsets"][name]
        path = str(report["base"] / "handpicked.npy") if name == "handpicked" else \
            os.path.join(report["out"], "uids", f"{name}.npy")
        kept = sample.uid.isin({f"{a:016x}{b:016x}" for a, b in np.load(path).tolist()})
        assert s["examples_column"] == col
        for got, rows in ((s["kept_examples"], sample[kept]), (s["dropped_examples"], sample[~kept])):
            rows = rows.head(EXAMPLES)
            assert len(got) == EXAMPLES and [e["uid"] for e in got] == list(rows.uid)
            assert [e["caption"] for e in got] == [t[:300] for t in rows.text]
            assert [e["score"] for e in got] == ([None] * EXAMPLES if col is None else
                                                 list(rows[col].astype(np.float64)))
        if col:  # what is kept passes the subset's threshold on that column; a dropped row may fail another rule
            thr = next(t["value"] for t in s["thresholds"] if t["column"] == col)
            assert all(e["score"] >= thr for e in s["kept_examples"])


class _Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.src, self.ids, self.hrefs = [], set(), []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.src.append(a["src"])
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "a":
            self.hrefs.append(a.get("href", ""))


def test_page_references_and_thumbnails(report):
    from PIL import Image

    out, fig = report["out"], report["fig"]
    html = open(os.path.join(out, "index.html"), encoding="utf-8").read()
    refs = _Refs()
    refs.feed(html)
    assert refs.src and all(os.path.isfile(os.path.join(out, s)) for s in refs.src)
    assert all(h[1:] in refs.ids for h in refs.hrefs if h.startswith("#"))
    assert sorted(s for s in refs.src if s.startswith("plots/")) == fig["report"]["plots"]
    assert not re.search(r"(src|href)=\"(https?:)?//", html)  # nothing fetched from the network
    examples = [e for c in fig["columns"].values() for e in c["top"] + c["bottom"]] + \
        [e for s in fig["subsets"].values() for e in s["kept_examples"] + s["dropped_examples"]]
    with_thumb = 0
    for e in examples:
        assert e["uid"] in html
        if e["uid"] in report["in_shards"] and e["uid"] != report["bad_uid"]:
            assert e["thumbnail"] == f"thumbs/{e['uid']}.jpg" and e["thumbnail"] in refs.src
            im = np.asarray(Image.open(os.path.join(out, e["thumbnail"])).convert("RGB"), np.float64)
            np.testing.assert_allclose(im.reshape(-1, 3).mean(0), _colour(e["uid"]), atol=4)
            with_thumb += 1
        else:
            assert e["thumbnail"] is None
    assert with_thumb > 0  # the image shard holds a third of the pool
    assert fig["report"]["thumbnails"] == len({e["uid"] for e in examples if e["thumbnail"]})


def test_opens_in_headless_chromium(report, tmp_path):
    from kl_filter.apps.report.browser import check_page, find_browser

    pytest.importorskip("selenium")
    if not find_browser():
        pytest.skip("Chromium/ChromeDriver not installed (bash tests/install_browser.sh, or apt-get install "
                    "chromium chromium-driver)")
    from PIL import Image

    shot = str(tmp_path / "report.png")
    got = check_page(os.path.join(report["out"], "index.html"), shot)
    assert got["ready"] == "complete" and got["title"].startswith("kl-filter report")
    assert got["errors"] == [] and got["broken_images"] == []
    assert got["images"] == len(report["fig"]["report"]["plots"]) + report["fig"]["report"]["thumbnails"] or \
        got["images"] >= len(report["fig"]["report"]["plots"])
    im = np.asarray(Image.open(shot).convert("L"), np.float64)
    assert im.shape[1] == 1280 and im.shape[0] > 2000 and im.std() > 10  # a full page, not a blank one
    # the check does see problems: a missing image and a script error
    broken = tmp_path / "broken"
    shutil.copytree(report["out"], broken)
    page = broken / "index.html"
    page.write_text(page.read_text().replace("</body>", '<img src="plots/missing.png"><script>throw new Error('
                                                       '"boom")</script></body>'))
    bad = check_page(str(page))
    assert bad["broken_images"] == ["plots/missing.png"]
    assert any("boom" in e for e in bad["errors"]) and any("missing.png" in e for e in bad["errors"])


def test_captions_are_escaped():
    from kl_filter.apps.report.page import _examples

    html = _examples("top", [{"uid": "ab" * 16, "score": 1.0, "caption": '<script>alert(1)</script> & "x"'}], {})
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;x&quot;" in html


def test_bad_input_leaves_nothing(report, tmp_path):
    # --out is somebody's directory, not a report: refused, untouched
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    p = run_cli("inspect", "--metadata_dir", report["pool"], "--out", mine, "--filters", "--no_progress")
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1
    assert str(mine) in p.stderr and "not a kl-filter report" in p.stderr
    assert os.listdir(mine) == ["thesis.tex"]
    # a score file missing for one shard: the error names it; no report, no temporary directory left
    scores = tmp_path / "scores"
    shutil.copytree(report["scores"], scores)
    victim = sorted(glob.glob(str(scores / "*.parquet")))[1]
    os.remove(victim)
    out = tmp_path / "rep"
    p = run_cli("inspect", "--metadata_dir", report["pool"], "--scores_dir", scores, "--out", out, "--filters",
                "--no_progress")
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and victim in p.stderr
    assert "score file missing" in p.stderr
    assert sorted(os.listdir(tmp_path)) == ["mine", "scores"]
    # an unknown recipe given explicitly is an error, not a silent skip
    p = run_cli("inspect", "--metadata_dir", report["pool"], "--out", out, "--filters", "no_such_recipe",
                "--no_progress")
    assert p.returncode == 2 and "no such recipe" in p.stderr and not out.exists()
    # an impossible figure size is refused before anything is read or written
    p = run_cli("inspect", "--metadata_dir", report["pool"], "--out", out, "--filters", "--bins", 0, "--no_progress")
    assert p.returncode == 2 and "--bins must be >= 1, got 0" in p.stderr and not out.exists()


def test_rebuild_replaces_a_previous_report(report, tmp_path):
    out = tmp_path / "rep"
    for sample in (500, 700):
        p = run_cli("inspect", "--metadata_dir", report["pool"], "--scores_dir", report["scores"], "--out", out,
                    "--filters", "--sample_size", sample, "--examples", 2, "--no_progress")
        assert p.returncode == 0, p.stderr
        fig = json.load(open(out / "figures.json"))
        assert fig["sample"]["size"] == sample and fig["subsets"] == {}
    assert sorted(os.listdir(tmp_path)) == ["rep"]


def test_streaming_accumulators_match_whole_arrays():
    """Fed in uneven chunks with NaNs and ties, the accumulators equal the whole-array answers."""
    from kl_filter.apps.report.accumulate import BottomKSample, CoMoments, Extremes, Moments

    rng = np.random.default_rng(5)
    n = 3001
    a = rng.normal(size=n)
    b = 0.5 * a + rng.normal(size=n) + 1e6  # a large offset: the centred sums must not cancel
    c = np.round(rng.normal(size=n), 1)      # many ties
    a[rng.choice(n, 200, replace=False)] = np.nan
    c[rng.choice(n, 50, replace=False)] = np.nan
    uids = np.zeros(n, "u8,u8")
    uids["f0"], uids["f1"] = rng.permutation(n), rng.integers(0, 2**63, n)
    cols = {"a": a, "b": b, "c": c}
    cuts = [0, 7, 500, 501, 1800, n]
    m = Moments(list(cols))
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        m.update({k: v[lo:hi] for k, v in cols.items()})
    co, ex, smp = CoMoments(list(cols), m.mean), Extremes(5), BottomKSample(100)
    keys = rng.integers(0, 2**63, n).astype(np.uint64)
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        co.update({k: v[lo:hi] for k, v in cols.items()})
        ex.update(c[lo:hi], uids[lo:hi], np.arange(lo, hi))
        smp.update(keys[lo:hi], {"i": np.arange(lo, hi)})
    np.testing.assert_allclose(co.pearson(), pd.DataFrame(cols).corr().values, rtol=0, atol=1e-9)
    assert m.count.tolist() == [n - 200, n, n - 50]
    order = sorted((i for i in range(n) if np.isfinite(c[i])), key=lambda i: (-c[i], uids[i]["f0"]))
    assert [t[3] for t in ex.top] == order[:5]
    order = sorted((i for i in range(n) if np.isfinite(c[i])), key=lambda i: (c[i], uids[i]["f0"]))
    assert [t[3] for t in ex.bottom] == order[:5]
    assert smp.rows["i"].tolist() == np.argsort(keys)[:100].tolist()


def test_recipes_rows_removed_are_their_sidecars(report):
    """The recipes the report ran: each step's count is the runner's, and the steps end at the subset's size."""
    fig = report["fig"]
    for name in FILTERS:
        side = json.load(open(os.path.join(report["out"], "uids", f"{name}.npy.json")))
        got = fig["subsets"][name]["removed"]
        assert [{k: st[k] for k in ("step", "kind", "removed")} for st in got["steps"]] == side["removed"]
        assert got["pool_rows"] == fig["pool"]["rows"] and got["steps"][-1]["remaining"] == got["kept"] == \
            fig["subsets"][name]["kept"]
    assert [st["kind"] for st in fig["subsets"]["laion2b"]["removed"]["steps"]] == ["rule", "refine"]
    assert fig["subsets"]["handpicked"]["removed"] is None  # a .npy without a sidecar


def test_rows_removed_per_step_from_the_sidecars(tmp_path):
    """A subset whose sidecar counts each step's removals: figures.json carries the steps with share and rows
    remaining, the page shows them (escaped); an older sidecar and a bare .npy say "not recorded"; counts that do
    not add up stop the report."""
    import pyarrow.parquet as pq

    from kl_filter.core.errors import KLFilterError
    from kl_filter.pool.synth import synth_pool
    from kl_filter.apps.report import build_report
    from kl_filter.core.uids import hex_to_u8u8, save_uids

    pool = str(tmp_path / "pool")
    synth_pool(pool, rows=1200, shards=2, seed=1, num_workers=1)
    uids = hex_to_u8u8([u for p in sorted(glob.glob(os.path.join(pool, "*.parquet")))
                        for u in pq.read_table(p, columns=["uid"]).column("uid").to_pylist()])
    removed = [{"step": "top clip_b32_similarity_score >= 0.28", "kind": "rule", "removed": 600},
               {"step": "english (gcld3)", "kind": "refine", "removed": 100}]
    sidecars = {"counted": {"pool_rows": 1200, "kept": 500, "removed": removed},
                "older": {"pool_rows": 1200, "kept": 500, "rules": []}, "bare": None}
    for name, side in sidecars.items():
        save_uids(str(tmp_path / f"{name}.npy"), uids[:500])
        if side is not None:
            (tmp_path / f"{name}.npy.json").write_text(json.dumps(side))
    out = str(tmp_path / "rep")
    fig = build_report(pool, out, filters=[str(tmp_path / f"{n}.npy") for n in sidecars], sample_size=200,
                       examples=1, bins=5, ngram_top_k=5)
    assert fig == json.load(open(os.path.join(out, "figures.json")))
    assert fig["subsets"]["counted"]["removed"] == {"pool_rows": 1200, "kept": 500, "steps": [
        dict(removed[0], share=0.5, remaining=600), dict(removed[1], share=100 / 1200, remaining=500)]}
    assert fig["subsets"]["older"]["removed"] is None and fig["subsets"]["bare"]["removed"] is None
    page = open(os.path.join(out, "index.html"), encoding="utf-8").read()
    section = page.split('<h2 id="removed">')[1].split("<h2")[0]
    row = lambda *c: "<tr>" + "".join(f'<td class="l">{x}</td>' for x in c[:3]) + "".join(  # noqa: E731
        f"<td>{x}</td>" for x in c[3:]) + "</tr>"
    for want in (row("counted", "<i>pool</i>", "–", "–", "–", "1,200"),
                 row("counted", "top clip_b32_similarity_score &gt;= 0.28", "rule", "600", "50.00%", "600"),
                 row("counted", "english (gcld3)", "refine", "100", "8.33%", "500"),
                 row("older", "<i>not recorded</i>", "–", "–", "–", "–"),
                 row("bare", "<i>not recorded</i>", "–", "–", "–", "–")):
        assert want in section, want
    assert "<script" not in page.lower()
    # counts that do not add up: one line naming the sidecar, no report written
    (tmp_path / "counted.npy.json").write_text(json.dumps(dict(sidecars["counted"], kept=499)))
    with pytest.raises(KLFilterError, match="does not add up: pool_rows 1,200 != kept 499 \\+ removed 700") as e:
        build_report(pool, str(tmp_path / "rep2"), filters=[str(tmp_path / "counted.npy")], sample_size=200)
    assert str(tmp_path / "counted.npy.json") in str(e.value) and not (tmp_path / "rep2").exists()
