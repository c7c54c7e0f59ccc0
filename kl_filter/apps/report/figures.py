"""Every number the report shows, from two streaming passes over the pool (``figures.json`` holds them all).

Pass 1 reads only the score columns: count, NaNs, sum, min and max per column (histogram edges, means).
Pass 2 reads the scores again with caption and image size, and feeds, in shard order:

==========================  ======================================================================  =========
figure                      what                                                                    rows
==========================  ======================================================================  =========
``columns[c].summary``      count, NaN count, mean, std (ddof 1, centred), min, max                 all
``columns[c].histogram``    ``bins`` equal-width bins over [min, max] (``np.histogram`` rule)         all
``columns[c].top/bottom``   the ``examples`` highest / lowest rows, ties by uid ascending            all
``correlations.pearson``    pairwise-complete Pearson r between score columns                       all
``correlations.spearman``   Spearman ρ (average ranks), pairwise complete                          sample
``ngrams[c]``               top-K n-gram coverage per score decile (:mod:`.ngrams`)                 sample
``subsets[s]``              kept rows of the pool, share, caption-word and short-side histograms    all
``subsets[s].english``      share English by fastText lid.176 (DataComp's basic-filter detector)   sample
``subsets[s].kept/dropped`` the first ``examples`` sample rows the subset keeps / drops             sample
``overlap``                 intersection counts and Jaccard index of the subsets' uid sets          all
``columns[c].temperature``  the logit scale a score file's column was computed at, and its source    all
``<section key>``           a filter's own section (:mod:`.sections`; SemDeDup's ``dedup``: rows    all
                            per cluster, kept share against ε, duplicate pairs)
==========================  ======================================================================  =========

``columns[c].temperature`` (score-file columns; None for the pool's CLIP columns) is ``{"logit_scale",
"source", "mixed", "values"}`` from each column's provenance (``logit_scale`` and ``logit_scale_source``, recorded
by the density-ratio scorers): the first shard's value and source (None when the provenance has none), and
``mixed`` when the shards' files disagree (``values``: each distinct (scale, source) with its number of shards).

The sample is the ``sample_size`` rows with the smallest ``sample_keys(uid, seed, SAMPLE_STREAM)``: uniform,
without replacement, and the same rows for any shard order or worker count; it is saved as ``sample.parquet``
in ascending key order, a uniformly random order, so its first rows that a subset keeps (or drops) are a random
draw of what the subset keeps (or drops), shown with the subset's first threshold column when it has one.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from kl_filter.engines import LocalEngine
from kl_filter.core.errors import KLFilterError
from kl_filter.core.progress import NoProgress
from kl_filter.core.hashing import sample_keys
from kl_filter.core.uids import u8u8_to_hex
from kl_filter.core.uids import uids_in
from kl_filter.apps.report.accumulate import BottomKSample, CoMoments, CountHistogram, Extremes, Histogram, Moments
from kl_filter.apps.report.ngrams import NgramIndex, coverage

SAMPLE_STREAM = 7  # sample_keys stream of the report (the reference statistics use streams 0-3)
WORD_EDGES = [0, 1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 30, 50, np.inf]           # whitespace words per caption
SIDE_EDGES = [0, 64, 128, 200, 256, 384, 512, 768, 1024, 2048, np.inf]          # min(width, height) in pixels
CAPTION_CHARS = 300                                                             # examples show this much


def _words(text: pa.Array) -> np.ndarray:
    """DataComp's word count: ``len(caption.split())`` (whitespace runs), per row."""
    return np.fromiter((len(t.split()) if t else 0 for t in text.to_pylist()), np.int64, count=len(text))


def _short_side(shard: dict) -> np.ndarray | None:
    if "original_width" not in shard or "original_height" not in shard:
        return None
    w = np.asarray(shard["original_width"], np.float64)
    h = np.asarray(shard["original_height"], np.float64)
    return np.fmin(w, h)


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (1-based), ties sharing the mean of their positions."""
    uniq, inv, counts = np.unique(x, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return ((ends - counts + 1 + ends) / 2.0)[inv]


def spearman(values: dict, columns: list[str]) -> list[list]:
    """Pairwise-complete Spearman ρ; a column without NaN is ranked once, not once per pair."""
    out = [[None] * len(columns) for _ in columns]
    finite = {c: np.isfinite(values[c]) for c in columns}
    whole = {c: _ranks(values[c]) for c in columns if finite[c].all()}
    for i, a in enumerate(columns):
        for j in range(i, len(columns)):
            b = columns[j]
            x, y = values[a], values[b]
            ok = finite[a] & finite[b]
            r = None
            if ok.sum() > 1:
                rx, ry = (whole[a], whole[b]) if a in whole and b in whole else (_ranks(x[ok]), _ranks(y[ok]))
                if rx.std() > 0 and ry.std() > 0:
                    r = float(np.corrcoef(rx, ry)[0, 1])
            out[i][j] = out[j][i] = r
    return out


def _finite_or_none(v):
    v = float(v)
    return v if np.isfinite(v) else None


def _temperature(provenance) -> tuple:
    """(logit scale, its source) of one column's provenance; None for what it does not record."""
    p = provenance if isinstance(provenance, dict) else {}
    scale, where = p.get("logit_scale"), p.get("logit_scale_source")
    ok = isinstance(scale, (int, float)) and not isinstance(scale, bool) and np.isfinite(scale)
    return (float(scale) if ok else None, where if isinstance(where, str) else None)


def compute_figures(source, subsets, seed: int = 0, sample_size: int = 100_000, examples: int = 8,
                    bins: int = 50, ngram_top_k: int = 50, loaders: int = 2, progress=NoProgress,
                    dedup_pairs: int = 6):
    """Return ``(figures, sample)``: the JSON-ready figures and the sample as a pyarrow table."""
    pool, columns = source.pool, source.columns
    shards = pool.shards

    # ---- pass 1: moments of every score column, the score files' provenance ----
    moments = Moments(columns)
    total_rows = 0
    engine = LocalEngine(loaders, progress)  # one compute thread: the accumulators see the shards in order
    temps = {c: {} for c in source.file_columns}  # (logit scale, source) -> shards
    mixed = set()  # score-file columns whose provenance differs from the first shard's

    def pass1(_shard, d):
        nonlocal total_rows
        moments.update(d["scores"])
        total_rows += d["num_rows"]
        for c in source.file_columns + source.id_columns:
            p = d["provenance"].get(c)
            if p != source.provenance.get(c):
                mixed.add(c)
            if c in temps:
                t = _temperature(p)
                temps[c][t] = temps[c].get(t, 0) + 1

    engine.map(pass1, shards, load=lambda s: source.read(s, facts=False), workers=1, desc="report: pass 1 (scores)")

    # ---- pass 2: histograms, correlations, extremes, sample, subsets ----
    hists = [Histogram(moments.edges(i, bins)) for i in range(len(columns))]
    co = CoMoments(columns, moments.mean)
    sq = np.zeros(len(columns))  # centred sums of squares, for the standard deviation
    extremes = {c: Extremes(examples) for c in columns}
    sample = BottomKSample(sample_size)
    pool_words, pool_side = CountHistogram(WORD_EDGES), CountHistogram(SIDE_EDGES)
    sub_words = {s.name: CountHistogram(WORD_EDGES) for s in subsets}
    sub_side = {s.name: CountHistogram(SIDE_EDGES) for s in subsets}
    sub_kept = {s.name: 0 for s in subsets}
    have_sizes = [True]
    for section in source.sections:
        section.start(dedup_pairs)

    def pass2(shard, d):
        uids, text = d["uids"], d["text"]
        words, side = _words(text), _short_side(d)
        if side is None:
            have_sizes[0] = False
            side = np.full(len(uids), np.nan)
        texts = text.to_numpy(zero_copy_only=False)
        for i, c in enumerate(columns):
            x = np.asarray(d["scores"][c], np.float64)
            hists[i].update(x)
            xc = x - moments.mean[i]
            sq[i] += np.square(xc[np.isfinite(xc)]).sum()
            extremes[c].update(x, uids, texts)
        co.update(d["scores"])
        pool_words.update(words)
        pool_side.update(side[np.isfinite(side)])
        rows = {"uid": d["uid_hex"], "text": texts, "words": words, "short_side": side,
                **{c: np.asarray(d["scores"][c], np.float32) for c in columns}}
        for s in subsets:
            m = uids_in(s.uids, uids)
            sub_kept[s.name] += int(m.sum())
            sub_words[s.name].update(words[m])
            sub_side[s.name].update(side[m & np.isfinite(side)])
            rows[f"in:{s.name}"] = m
        sample.update(sample_keys(uids, seed, SAMPLE_STREAM), rows)
        for section in source.sections:
            section.update(shard.index, d, texts)

    def load2(shard):
        d = source.read(shard, facts=True)
        if "text" not in d:
            raise KLFilterError("the report needs the 'text' column", shard.parquet)
        d["uid_hex"] = np.char.decode(u8u8_to_hex(d["uids"]), "ascii").astype(object)
        return d

    engine.map(pass2, shards, load=load2, workers=1, desc="report: pass 2 (rows)")

    # ---- figures ----
    sample_rows = sample.rows or {}
    sample_uids = _uids_from_hex(sample_rows.get("uid", np.zeros(0, object)))
    english = _english(sample_rows.get("text", np.zeros(0, object)))
    figures = {
        "pool": {"metadata_dir": pool.metadata_dir, "rows": int(total_rows), "shards": len(shards),
                 "fingerprint": pool.fingerprint},
        "seed": seed,
        "sample": {"size": int(len(sample.keys)), "requested": sample_size, "stream": SAMPLE_STREAM,
                   "method": "bottom-k of sample_keys(uid, seed, stream)", "english": float(english.mean())
                   if len(english) else None},
        "score_columns": columns,
        "column_source": {c: ("pool" if c in source.pool_columns else "scores") for c in columns},
        "columns": {},
        "ngrams": {},
    }
    for i, c in enumerate(columns):
        n = int(moments.count[i])
        figures["columns"][c] = {
            "summary": {"count": n, "nan": int(moments.nan[i]), "mean": _finite_or_none(moments.mean[i]),
                        "std": float(np.sqrt(sq[i] / (n - 1))) if n > 1 else None,
                        "min": _finite_or_none(moments.min[i]), "max": _finite_or_none(moments.max[i])},
            "histogram": {"edges": hists[i].edges.tolist(), "counts": hists[i].counts.tolist()},
            "thresholds": [dict(t, subset=s.name) for s in subsets for t in s.thresholds() if t["column"] == c],
            "top": [_example(e) for e in extremes[c].top],
            "bottom": [_example(e) for e in extremes[c].bottom],
            "temperature": None,
        }
        if c in temps:
            scale, where = _temperature(source.provenance.get(c))
            figures["columns"][c]["temperature"] = {
                "logit_scale": scale, "source": where, "mixed": len(temps[c]) > 1,
                "values": [{"logit_scale": a, "source": b, "shards": k} for (a, b), k in temps[c].items()]}
    figures["correlations"] = {
        "columns": columns,
        "pearson": [[_finite_or_none(v) for v in row] for row in co.pearson()],
        "pairs": co.n.astype(np.int64).tolist(),
        "spearman": spearman({c: np.asarray(sample_rows[c], np.float64) for c in columns}, columns)
        if sample_rows else None,
        "spearman_rows": int(len(sample.keys)),
    }
    if sample_rows:
        index = NgramIndex(sample_rows["text"])
        for c in columns:
            figures["ngrams"][c] = coverage(index, np.asarray(sample_rows[c], np.float64), sample_uids, ngram_top_k)
    figures["subsets"] = {}
    for s in subsets:
        m = np.asarray(sample_rows.get(f"in:{s.name}", np.zeros(0, bool)), bool)
        col = next((t["column"] for t in s.thresholds() if t["column"] in columns), None)
        figures["subsets"][s.name] = {
            "path": s.path, "kept": sub_kept[s.name], "share": sub_kept[s.name] / total_rows if total_rows else 0.0,
            "file_rows": s.file_rows, "unique_uids": int(len(s.uids)), "not_in_pool": int(len(s.uids)) - sub_kept[s.name],
            "thresholds": s.thresholds(),
            "english": float(english[m].mean()) if m.any() else None, "english_sample_rows": int(m.sum()),
            "caption_words": {"edges": _edges(WORD_EDGES), "counts": sub_words[s.name].counts.tolist()},
            "short_side": {"edges": _edges(SIDE_EDGES), "counts": sub_side[s.name].counts.tolist()}
            if have_sizes[0] else None,
            "examples_column": col,
            "kept_examples": _sample_examples(sample_rows, m, col, examples),
            "dropped_examples": _sample_examples(sample_rows, ~m, col, examples),
        }
    figures["pool"]["caption_words"] = {"edges": _edges(WORD_EDGES), "counts": pool_words.counts.tolist()}
    figures["pool"]["short_side"] = ({"edges": _edges(SIDE_EDGES), "counts": pool_side.counts.tolist()}
                                     if have_sizes[0] else None)
    figures["overlap"] = overlap(subsets)
    for section in source.sections:
        figures[section.key] = section.figures(source, engine, _shown, mixed)
    table = _sample_table(sample_rows, english, columns, subsets)
    return figures, table


def _edges(edges) -> list:
    return [None if not np.isfinite(e) else float(e) for e in edges]  # JSON has no inf: null = open end


def _example(e) -> dict:
    score, f0, f1, text = e
    return _shown(f"{f0:016x}{f1:016x}", score, text)


def _shown(uid: str, score, text) -> dict:
    text = "" if text is None else str(text)
    return {"uid": uid, "score": score, "caption": text[:CAPTION_CHARS], "truncated": len(text) > CAPTION_CHARS}


def _sample_examples(rows: dict, mask: np.ndarray, column: str | None, k: int) -> list[dict]:
    """The first ``k`` sample rows (ascending key: a random order) where ``mask`` holds, scored by ``column``."""
    return [_shown(str(rows["uid"][i]), None if column is None else _finite_or_none(rows[column][i]), rows["text"][i])
            for i in np.flatnonzero(mask)[:k]]


def _uids_from_hex(hex_uids) -> np.ndarray:
    from kl_filter.core.uids import hex_to_u8u8
    return hex_to_u8u8(pa.array(list(hex_uids), pa.string())) if len(hex_uids) else np.zeros(0, "u8,u8")


def _english(texts) -> np.ndarray:
    if not len(texts):
        return np.zeros(0, bool)
    from kl_filter.text.langid import fasttext_english
    return np.asarray(fasttext_english(list(texts)), bool)


def overlap(subsets) -> dict:
    """Intersection counts (diagonal: the set's size) and Jaccard index of every pair of uid sets."""
    k = len(subsets)
    inter = np.zeros((k, k), np.int64)
    for i, a in enumerate(subsets):
        inter[i, i] = len(a.uids)
        for j in range(i + 1, k):
            b = subsets[j]
            small, big = (a.uids, b.uids) if len(a.uids) <= len(b.uids) else (b.uids, a.uids)
            inter[i, j] = inter[j, i] = int(uids_in(big, small).sum())
    sizes = np.diag(inter).astype(np.float64)
    union = sizes[:, None] + sizes[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        jac = np.where(union > 0, inter / union, np.nan)
    return {"subsets": [s.name for s in subsets], "intersection": inter.tolist(),
            "jaccard": [[_finite_or_none(v) for v in row] for row in jac]}


def _sample_table(rows: dict, english, columns, subsets) -> pa.Table:
    if not rows:
        return pa.table({"uid": pa.array([], pa.string())})
    data = {"uid": pa.array(list(rows["uid"]), pa.string()), "text": pa.array(list(rows["text"]), pa.string()),
            "words": rows["words"], "short_side": rows["short_side"], "english": english}
    data.update({c: rows[c] for c in columns})
    data.update({f"in:{s.name}": rows[f"in:{s.name}"] for s in subsets})
    return pa.table(data)
