"""The report's PNG figures, drawn with matplotlib (Agg, no screen) from ``figures.json`` alone.

Every plot is a function ``figures -> {file name: png bytes}``; nothing is recomputed here, so what a plot shows
is exactly what the JSON holds.
"""

from __future__ import annotations

import io
import re
from types import SimpleNamespace

import numpy as np

DPI = 100


def _plt():
    try:
        import matplotlib
    except ImportError as e:
        from kl_filter.core.errors import MissingDependency
        raise MissingDependency("the report's plots need matplotlib: pip install 'kl-filter[report]'") from e
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    _plt().close(fig)
    return buf.getvalue()


def histogram(name: str, col: dict) -> bytes:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    edges, counts = np.asarray(col["histogram"]["edges"]), np.asarray(col["histogram"]["counts"])
    ax.stairs(counts, edges, fill=True, color="#4c78a8", alpha=0.85)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, t in enumerate(col["thresholds"]):
        ax.axvline(t["value"], color=colours[(i + 1) % len(colours)], ls="--", lw=1.5,
                   label=f"{t['subset']}: keep {t['keep']} {t['value']:.4g}")
    if col["thresholds"]:
        ax.legend(fontsize=7, loc="upper left", frameon=False)
    ax.set_xlabel(name)
    ax.set_ylabel("rows")
    ax.set_title(f"{name} (n = {col['summary']['count']:,})", fontsize=10)
    return _png(fig)


def heatmap(title: str, labels: list[str], matrix, fmt: str = "{:.2f}", vmin=-1.0, vmax=1.0, cmap="RdBu_r") -> bytes:
    plt = _plt()
    m = np.array([[np.nan if v is None else v for v in row] for row in matrix], np.float64)
    k = len(labels)
    size = max(3.5, 0.42 * k + 1.8)
    fig, ax = plt.subplots(figsize=(size + 1.0, size))
    im = ax.imshow(m, vmin=vmin, vmax=vmax, cmap=cmap)
    ax.set_xticks(range(k), labels, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(k), labels, fontsize=7)
    if k <= 20:
        for i in range(k):
            for j in range(k):
                if np.isfinite(m[i, j]):
                    r, g, b, _ = im.cmap(im.norm(m[i, j]))  # dark cell: white text
                    ax.text(j, i, fmt.format(m[i, j]), ha="center", va="center", fontsize=5.5,
                            color="white" if 0.299 * r + 0.587 * g + 0.114 * b < 0.5 else "black")
    fig.colorbar(im, ax=ax, shrink=0.8)
    ax.set_title(title, fontsize=10)
    return _png(fig)


def ngram_coverage(name: str, ng: dict) -> bytes:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.2, 3.0))
    x = np.arange(1, len(ng["deciles"]) + 1)
    for n, vals in ng["coverage"].items():
        ax.plot(x, [np.nan if v is None else v for v in vals], marker="o", ms=3, label=f"{n}-grams")
    ax.set_xticks(x)
    ax.set_xlabel(f"decile of {name} (1 = lowest)")
    ax.set_ylabel(f"coverage of top-{ng['top_k']}")
    ax.set_ylim(0, None)
    ax.legend(fontsize=7, frameon=False)
    ax.set_title(f"n-gram coverage by decile: {name}", fontsize=10)
    return _png(fig)


def distribution(title: str, xlabel: str, pool: dict, subsets: dict, key: str) -> bytes:
    """Share of rows per bin, the pool beside each subset (bins may be uneven: drawn as categories)."""
    plt = _plt()
    edges = pool["edges"]
    labels = [f"{_num(a)}–{_num(b)}" if b is not None else f"≥{_num(a)}" for a, b in zip(edges[:-1], edges[1:])]
    series = [("pool", pool["counts"])] + [(n, s[key]["counts"]) for n, s in subsets.items() if s.get(key)]
    fig, ax = plt.subplots(figsize=(7.0, 3.2))
    x = np.arange(len(labels))
    for name, counts in series:
        c = np.asarray(counts, np.float64)
        ax.plot(x, c / c.sum() if c.sum() else c, marker="o", ms=3, lw=2.2 if name == "pool" else 1.2,
                color="black" if name == "pool" else None, label=name)
    ax.set_xticks(x, labels, rotation=45, ha="right", fontsize=7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("share of rows")
    ax.legend(fontsize=6, frameon=False, ncol=2)
    ax.set_title(title, fontsize=10)
    return _png(fig)


def _num(v) -> str:
    return f"{v:g}"


def all_plots(figures: dict, sections=()) -> dict:
    """``{relative png path: bytes}`` for every figure the page shows (``sections``: the filters' report sections,
    :mod:`.sections`)."""
    out = {}
    for c, col in figures["columns"].items():
        out[f"plots/hist_{slug(c)}.png"] = histogram(c, col)
    for c, ng in figures["ngrams"].items():
        out[f"plots/ngrams_{slug(c)}.png"] = ngram_coverage(c, ng)
    corr = figures["correlations"]
    if len(corr["columns"]) > 1:
        out["plots/pearson.png"] = heatmap("Pearson r (all rows)", corr["columns"], corr["pearson"])
        if corr["spearman"] is not None:
            out["plots/spearman.png"] = heatmap(f"Spearman ρ (sample of {corr['spearman_rows']:,})",
                                                corr["columns"], corr["spearman"])
    ov = figures["overlap"]
    if len(ov["subsets"]) > 1:
        out["plots/jaccard.png"] = heatmap("Jaccard index of kept uid sets", ov["subsets"], ov["jaccard"],
                                           vmin=0.0, vmax=1.0, cmap="viridis")
    kit = SimpleNamespace(pyplot=_plt, png=_png, slug=slug)  # what a section draws with
    for s in sections:
        out.update(s.plots(figures.get(s.key) or {}, kit))
    pool, subs = figures["pool"], figures["subsets"]
    out["plots/caption_words.png"] = distribution("Caption length of what is kept", "whitespace words",
                                                  pool["caption_words"], subs, "caption_words")
    if pool.get("short_side"):
        out["plots/short_side.png"] = distribution("Image size of what is kept", "min(width, height) in pixels",
                                                   pool["short_side"], subs, "short_side")
    return out
