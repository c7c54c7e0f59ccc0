"""SemDeDup's section of the inspection report (``kl-filter inspect``): :class:`SemDeDupSection`, the ``semdedup``
filter's :meth:`~kl_filter.filters.base.Filter.report_section` (the interface: :mod:`kl_filter.filters.report`).

It reads every pair of score-file columns ``semdedup_{arch}_maxsim`` / ``semdedup_{arch}_cluster`` (written by
``kl-filter select --name semdedup ... --scores_dir``). The cluster column is an id, not a score: it is left out of
the report's score columns and checked to be an integer in [0, num_clusters) when read. Its figures (cluster
sizes, kept share against ε, duplicate pairs) are computed by :mod:`.semdedup_figures`; the plots and the page's
section are drawn here from ``figures["dedup"]`` alone.
"""

from __future__ import annotations

import re

import numpy as np

from kl_filter.core.errors import KLFilterError
from kl_filter.filters.report import ReportSection
from kl_filter.filters.semdedup_figures import DedupAccumulator, dedup_figures
from kl_filter.pool.schema import read_score
from kl_filter.scorers.semdedup import MAX_CLUSTERS


# ---- the columns ----------------------------------------------------------------------------------------------
DEDUP_RE = re.compile(r"^semdedup_([a-z0-9]+)_maxsim$")


def dedup_columns(names) -> dict:
    """``{arch: (maxsim column, cluster column)}`` for every SemDeDup pair of columns among ``names``."""
    names = set(names)
    out = {}
    for n in sorted(names):
        m = DEDUP_RE.match(n)
        if m and f"semdedup_{m.group(1)}_cluster" in names:
            out[m.group(1)] = (n, f"semdedup_{m.group(1)}_cluster")
    return out


def check_cluster_ids(ids: np.ndarray, num_clusters: int, path: str, column: str) -> np.ndarray:
    """A stored cluster column as int64, or one line: every value an integer in [0, num_clusters)."""
    ok = np.isfinite(ids) & (ids >= 0) & (ids < num_clusters) & (ids == np.floor(ids))
    if not ok.all():
        bad = ids[~ok][0]
        raise KLFilterError(f"column {column!r}: {int((~ok).sum())} values are not cluster ids in "
                            f"[0, {num_clusters}) (first: {bad})", path)
    return ids.astype(np.int64)


# ---- the section ----------------------------------------------------------------------------------------------
class SemDeDupSection(ReportSection):
    """``figures["dedup"][arch]`` for every SemDeDup column pair of the score files (see the module docstring)."""

    key = "dedup"
    title = "SemDeDup"

    def __init__(self, columns: list[str], provenance: dict):
        self.provenance = provenance
        self.groups = dedup_columns(columns)  # arch -> (maxsim column, cluster column)
        self.id_columns = [cluster for _, cluster in self.groups.values()]
        self.accs: dict = {}

    def num_clusters(self, arch: str) -> int | None:
        """K of one column pair, from the first shard's provenance (None when it records none)."""
        k = (self.provenance.get(self.groups[arch][0]) or {}).get("num_clusters")
        return k if isinstance(k, int) and not isinstance(k, bool) and 1 <= k <= MAX_CLUSTERS else None

    def read_ids(self, table, path: str) -> dict:
        # the first shard's K (one count array pool-wide); without one, any id a float32 holds exactly
        return {c: check_cluster_ids(read_score(table.column(c), path, c), self.num_clusters(arch) or MAX_CLUSTERS,
                                     path, c) for arch, (_, c) in self.groups.items()}

    def start(self, pairs: int) -> None:
        self.accs = {arch: DedupAccumulator(arch, m, c, self.num_clusters(arch), pairs)
                     for arch, (m, c) in self.groups.items()}

    def update(self, shard_index: int, data: dict, texts) -> None:
        for acc in self.accs.values():
            acc.update(shard_index, data["scores"][acc.maxsim_column], data["ids"][acc.cluster_column],
                       data["uids"], texts)

    def figures(self, source, engine, shown, mixed) -> dict:
        return dedup_figures(source, self.accs, engine, shown, mixed)

    @staticmethod
    def plots(fig: dict, kit) -> dict:
        out = {}
        for arch, d in fig.items():
            out[f"plots/dedup_sizes_{kit.slug(arch)}.png"] = _cluster_sizes(d, kit)
            out[f"plots/dedup_kept_{kit.slug(arch)}.png"] = _kept_against_eps(arch, d, kit)
        return out

    @staticmethod
    def html(fig: dict, plots: set, thumbs: dict, kit) -> list[str]:
        return _html(fig, plots, thumbs, kit)

    @staticmethod
    def examples(fig: dict) -> list[dict]:
        """Both rows of each duplicate pair."""
        return [e for d in fig.values() for p in d["pairs"] for e in (p["row"], p["partner"]) if e]

    @staticmethod
    def summary(fig: dict) -> list[str]:
        out = []
        for arch, d in fig.items():
            k, c = d["kept"], d["clusters"]
            kept = ", ".join(f"eps {e:g} {100 * k['share'][k['eps'].index(e)]:.1f}%" for e in k["marks"])
            pairs = d["pairs_unavailable"] and f"no pairs ({d['pairs_unavailable']})" or f"{len(d['pairs'])} pairs"
            out.append(f"SemDeDup {arch}: {c['num_clusters']:,} clusters (largest {c['largest']:,}), kept {kept}; "
                       f"{pairs}")
        return out


# ---- drawn from the figures alone -------------------------------------------------------------------------------
def _cluster_sizes(d: dict, kit) -> bytes:
    """Number of clusters by rows per cluster (power-of-2 bins, log axis: sizes are heavy-tailed)."""
    plt = kit.pyplot()
    from matplotlib.ticker import MaxNLocator

    c = d["clusters"]
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    edges, counts = np.asarray(c["histogram"]["edges"], np.float64), np.asarray(c["histogram"]["counts"])
    used = np.flatnonzero(counts)
    if len(used):  # from the first to the last non-empty bin
        lo, hi = used[0], used[-1] + 1
        ax.stairs(counts[lo:hi], edges[lo: hi + 1], fill=True, color="#4c78a8", alpha=0.85)
        ax.set_xscale("log", base=2)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("rows per cluster")
    ax.set_ylabel("clusters")
    empty = f", {c['empty']:,} empty" if c["empty"] else ""
    ax.set_title(f"{d['cluster_column']}: {c['num_clusters']:,} clusters{empty} (largest {c['largest']:,}, "
                 f"median {c['median']:g})", fontsize=10)
    return kit.png(fig)


def _kept_against_eps(arch: str, d: dict, kit) -> bytes:
    """Share of the pool SemDeDup keeps at each ε of the grid (log ε), the common choices marked."""
    plt = kit.pyplot()
    k = d["kept"]
    eps, share = np.asarray(k["eps"]), np.asarray(k["share"])
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    ax.plot(eps, share, "o-", color="#4c78a8", lw=1.5, ms=2.5)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, e in enumerate(k["marks"]):
        ax.axvline(e, color=colours[(i + 1) % len(colours)], ls="--", lw=1,
                   label=f"ε = {e:g}: {100 * share[k['eps'].index(e)]:.2f}% kept")
    ax.legend(fontsize=7, loc="lower left", frameon=False)
    ax.set_xscale("log")
    ax.set_xlabel("ε (a row is a duplicate when maxsim > 1 − ε)")
    ax.set_ylabel("share of the pool kept")
    ax.set_title(f"SemDeDup {arch}: kept share against ε ({d['maxsim_column']})", fontsize=10)
    return kit.png(fig)


def _pair(p: dict, thumbs: dict, kit) -> str:
    """One duplicate pair: the row (score: its maxsim) beside the earlier row of its cluster it duplicates (score:
    their cosine)."""
    head = (f"<p class='muted'>cluster {p['cluster']:,} · maxsim {p['maxsim']:.6f} · cosine of the pair "
            f"{kit.number(p['cosine'], '{:.6f}')}{'' if p['agrees'] else ' <b>(≠ maxsim)</b>'}</p>")
    right = kit.example(p["partner"], thumbs) if p["partner"] else "<p class='muted'>not found</p>"
    return head + f'<div class="pair"><div>{kit.example(p["row"], thumbs)}</div><div>{right}</div></div>'


def _html(dedup: dict, plots: set, thumbs: dict, kit) -> list[str]:
    p = ['<h2 id="dedup">Semantic deduplication (SemDeDup)</h2>',
         "<p class='muted'>From the score files' <code>semdedup_{arch}_maxsim</code> (each row's largest cosine to an "
         "earlier row of its k-means cluster) and <code>semdedup_{arch}_cluster</code> columns, written by "
         "<code>kl-filter select --name semdedup ... --scores_dir</code>. A row is a duplicate at ε when "
         "maxsim &gt; 1 − ε: the kept counts are what <code>select --eps ε</code> keeps, exactly.</p>"]
    for arch, d in dedup.items():
        c, k, prov = d["clusters"], d["kept"], d["provenance"] or {}
        run = ", ".join(f"{key} {kit.escape(prov[key])}" for key in ("num_clusters", "keep", "seed",
                                                                    "kmeans_iterations", "kmeans_init") if key in prov)
        p.append(f"<h3>{kit.escape(arch)}</h3><p class='muted'>{run or 'provenance not recorded'}</p>")
        p.append(kit.table(["clusters", "non-empty", "empty", "rows", "largest", "median", "mean",
                            "smallest non-empty"],
                           [[f"{c['num_clusters']:,}", f"{c['nonempty']:,}", f"{c['empty']:,}", f"{c['rows']:,}",
                             f"{c['largest']:,}", kit.number(c["median"], "{:g}"), kit.number(c["mean"], "{:.1f}"),
                             "–" if c["smallest_nonempty"] is None else f"{c['smallest_nonempty']:,}"]], left=0))
        p.append('<div class="pair">' + "".join(f"<div>{kit.image(f, f)}</div>" for f in
                                                (f"plots/dedup_sizes_{kit.slug(arch)}.png",
                                                 f"plots/dedup_kept_{kit.slug(arch)}.png") if f in plots) + "</div>")
        rows = []
        for e in k["marks"]:
            i = k["eps"].index(e)
            rows.append([f"{e:g}", f"{k['threshold'][i]:.9g}", f"{k['kept'][i]:,}", kit.percent(k["share"][i]),
                         f"{d['rows'] - k['kept'][i]:,}"])
        p.append(kit.table(["ε", "keep maxsim ≤", "rows kept", "share of pool", "rows dropped"], rows, left=0))
        p.append(f"<p class='muted'>{len(k['eps'])} values of ε from {k['eps'][0]:g} to {k['eps'][-1]:g} in "
                 "figures.json; the threshold is the largest float32 not above 1 − ε.</p>")
        if d["pairs_unavailable"]:
            p.append(f"<p class='muted'>Duplicate pairs not shown: {kit.escape(d['pairs_unavailable'])}.</p>")
        elif d["pairs"]:
            p.append(f"<p class='muted'>The {len(d['pairs'])} rows with the highest maxsim, each beside the earlier "
                     "row of its cluster (in the scorer's order, recomputed from the saved centroids) with the "
                     "largest cosine: the row it is a duplicate of.</p>")
            p.append('<div class="pair"><h4>duplicate (score: maxsim)</h4>'
                     "<h4>the earlier row it duplicates (score: cosine)</h4></div>")
            p += [_pair(x, thumbs, kit) for x in d["pairs"]]
    return p
