"""The figures of SemDeDup's report section (:mod:`.semdedup_report`): what its stored columns say about the pool
(:mod:`kl_filter.scorers.semdedup`).

For every pair of score-file columns ``semdedup_{arch}_maxsim`` / ``semdedup_{arch}_cluster`` (written by
``kl-filter select --name semdedup ... --scores_dir``)::

    pass 2 of the report, per shard, in shard order (:class:`DedupAccumulator`, O(K + grid + k) memory)
        cluster ids ──bincount──▶ rows per cluster (K int64)
        maxsim ──the filter's rule at each ε of the grid──▶ rows kept (one count per ε)
        maxsim ──top k (maxsim descending, uid ascending; rows with an earlier row only)──▶ the pairs' rows
    after the pass (:func:`find_partners`, one shard's embeddings in memory at a time)
        each top row's partner: the EARLIER row of its cluster it is most similar to

* **Cluster sizes**: a histogram of rows per cluster over the K clusters of the column's provenance (empty
  clusters counted apart), with the largest, median (over all K) and mean size; every size when K <= 10,000.
* **Kept share against ε**: at each ε of :data:`EPS_GRID` (38 values from 1e-4 to 0.5, ten a decade, with the
  common marks 0.01, 0.05, 0.1), the rows ``select --name semdedup --eps ε`` keeps, by the filter's own rule:
  ``keep_mask(maxsim, duplicate_threshold(ε), reverse=True)`` (``maxsim <= t``, t the largest float32 not above
  1 − ε; NaN dropped), so the counts equal what ``select`` keeps, exactly.
* **Duplicate pairs**: the ``k`` rows with the highest maxsim, each beside the row it duplicates. The partner is
  not stored; it is found again as the scorer defined it: ``maxsim_j = max_{i<j} cos(x_i, x_j)`` over the rows
  ``i`` that come before ``j`` in the cluster's order. That order is recomputed with the scorer's own code
  (``assign_shard``: the saved centroids, the keep rule's 64-bit key; equal keys in shard then row order, as the
  bucket stage gathers them), the assignment is checked against the stored cluster column on every row, and the
  partner is the earlier row of the cluster with the largest float32 cosine (of the float32-renormalised rows,
  :func:`~kl_filter.scorers.semdedup.normalise_rows`; ties to the earliest). Its cosine equals the row's maxsim up to
  float32 rounding (another product order than the scorer's blocks); ``agrees`` records
  ``|cosine − maxsim| <= PAIR_TOLERANCE``. This needs the centroids the run saved
  (``SCORES_DIR/semdedup_centroids/``, found by their provenance) and one nearest-centroid pass over the pool's
  ``{arch}_img`` embeddings (the cost of select's assignment stage); without the centroids the pairs are left out
  with the reason in ``figures.json`` and the rest of the section stands.
"""

from __future__ import annotations

import json
import logging

import numpy as np

from kl_filter.core.errors import KLFilterError
from kl_filter.rules.threshold import keep_mask
from kl_filter.scorers.semdedup import SemDeDupScorer, assign_shard, duplicate_threshold, load_centroids, normalise_rows
from kl_filter.stages.scores import read_columns

log = logging.getLogger(__name__)

EPS_MARKS = (0.01, 0.05, 0.1)  # the common choices (the paper's 0.01-0.1 range), drawn and tabled
# ε from 1e-4 to 0.5, ten steps a decade (10^(k/10) rounded to the R10 preferred numbers 1, 1.25, 1.6, 2, 2.5,
# 3.2, 4, 5, 6.3, 8): even on a log axis, and the marks are among them
EPS_GRID = tuple(x for e in range(-4, 0) for m in (1, 1.25, 1.6, 2, 2.5, 3.2, 4, 5, 6.3, 8)
                 if (x := round(m * 10.0 ** e, 12)) <= 0.5)
MAX_LISTED_CLUSTERS = 10_000   # every cluster's size is written to figures.json up to this K
PAIR_TOLERANCE = 1e-5          # |recomputed cosine − stored maxsim| of a pair found as the scorer defined it


class DedupAccumulator:
    """One SemDeDup column pair, fed shard by shard in shard order (see the module docstring)."""

    def __init__(self, arch: str, maxsim_column: str, cluster_column: str, num_clusters: int | None, pairs: int):
        """``num_clusters``: K of the column's provenance (None when it records none: the clusters seen)."""
        self.arch, self.maxsim_column, self.cluster_column = arch, maxsim_column, cluster_column
        self.thresholds = [duplicate_threshold(e) for e in EPS_GRID]
        self.kept = np.zeros(len(EPS_GRID), np.int64)
        self.sizes = np.zeros(num_clusters or 0, np.int64)
        self.rows = self.nan = 0
        self.k = pairs
        self.top: list = []  # (maxsim, uid f0, uid f1, shard index, row, cluster, caption)

    def update(self, shard_index: int, maxsim: np.ndarray, cluster: np.ndarray, uids: np.ndarray, texts) -> None:
        self.rows += len(maxsim)
        self.nan += int(np.isnan(maxsim).sum())
        counts = np.bincount(cluster, minlength=len(self.sizes))  # ids checked in [0, K) when read
        if len(counts) > len(self.sizes):  # K not recorded: as many clusters as the largest id seen
            self.sizes = np.concatenate([self.sizes, np.zeros(len(counts) - len(self.sizes), np.int64)])
        self.sizes += counts
        for i, t in enumerate(self.thresholds):
            self.kept[i] += int(np.count_nonzero(keep_mask(maxsim, t, reverse=True)))
        if self.k > 0:  # rows with an earlier row of their cluster (the first row of each cluster stores -1)
            candidate = np.where(maxsim > -1, maxsim.astype(np.float64), np.nan)
            local = [(float(candidate[r]), int(uids[r]["f0"]), int(uids[r]["f1"]), shard_index, int(r),
                      int(cluster[r]), texts[r]) for r in _highest(candidate, uids, self.k)]
            self.top = sorted(self.top + local, key=lambda t: (-t[0], t[1], t[2]))[: self.k]

    def clusters(self) -> dict:
        """Rows per cluster: summary, a histogram over power-of-2 bins of rows, and (K <= 10,000) every size."""
        s = self.sizes
        nonempty = s[s > 0]
        top = int(s.max()) if len(s) else 0
        edges = [1]
        while edges[-1] <= top:
            edges.append(edges[-1] * 2)
        counts = np.histogram(nonempty, bins=edges)[0] if len(edges) > 1 else np.zeros(0, np.int64)
        return {"num_clusters": int(len(s)), "nonempty": int(len(nonempty)), "empty": int((s == 0).sum()),
                "rows": int(s.sum()), "largest": top, "median": float(np.median(s)) if len(s) else None,
                "mean": float(s.mean()) if len(s) else None,
                "smallest_nonempty": int(nonempty.min()) if len(nonempty) else None,
                "histogram": {"edges": edges, "counts": counts.tolist(),
                              "bins": "[edge_i, edge_i+1) rows per cluster; empty clusters counted apart"},
                "sizes": s.tolist() if len(s) <= MAX_LISTED_CLUSTERS else None}

    def kept_share(self) -> dict:
        n = self.rows
        return {"eps": list(EPS_GRID), "threshold": self.thresholds, "kept": self.kept.tolist(),
                "share": [k / n if n else 0.0 for k in self.kept.tolist()], "marks": list(EPS_MARKS),
                "rule": "kept when maxsim <= duplicate_threshold(eps) (select --name semdedup --eps eps)"}


def _highest(score: np.ndarray, uids: np.ndarray, k: int) -> np.ndarray:
    """The rows of the ``k`` highest finite scores, score descending then uid ascending."""
    ok = np.flatnonzero(np.isfinite(score))
    if not len(ok) or k <= 0:
        return ok[:0]
    s = score[ok]
    if len(s) > k:  # every row at or past the k-th value, ties included, then an exact order
        kth = np.partition(s, len(s) - k)[len(s) - k]
        ok, s = ok[s >= kth], s[s >= kth]
    u = uids[ok]
    return ok[np.lexsort((u["f1"], u["f0"], -s))[:k]]


# ---- the partners of the top rows ---------------------------------------------------------------------------

def _scorer(provenance: dict) -> tuple[SemDeDupScorer, int] | str:
    """The scorer that made a column (and its seed), rebuilt from its provenance; a reason string when it cannot
    be (a hand-written file, or another version of SemDeDup)."""
    try:
        params = {k: provenance[k] for k in ("arch", "num_clusters", "keep", "kmeans_iterations", "kmeans_init")}
        seed = provenance["seed"]
        scorer = SemDeDupScorer(**params)
    except (KeyError, TypeError, KLFilterError) as e:
        return f"the column's provenance does not name a SemDeDup run ({e})"
    now = json.loads(json.dumps({**scorer.provenance(scorer.outputs()[0], None), "seed": seed}, sort_keys=True))
    if now != provenance:
        return (f"the columns were made by another version of SemDeDup (algorithm {provenance.get('algorithm')!r}, "
                f"this is {now['algorithm']!r})")
    return scorer, int(seed)


def _centroids(scores_dir: str, scorer: SemDeDupScorer, pool, seed: int) -> tuple[np.ndarray, str] | None:
    """The saved centroids whose provenance is this run's (where the scorer saved them)."""
    path = scorer.centroid_path(scores_dir, pool, seed)
    c = load_centroids(path, scorer.centroid_provenance(pool, seed))
    return None if c is None else (c, path)


def _earlier(keys, shard_index: int, rows, key, t_shard: int, t_row: int) -> np.ndarray:
    """Rows that come before the target in its cluster: by key, then shard, then row (the bucket stage's order)."""
    key = np.uint64(key)
    same = keys == key
    return (keys < key) | (same & ((shard_index < t_shard) | ((shard_index == t_shard) & (rows < t_row))))


def find_partners(source, acc: DedupAccumulator, engine) -> tuple[list, str | None]:
    """``([(cosine, order key, shard index, row) of its partner, or None, per top row], None)``, or
    ``([], reason)`` when the pairs cannot be searched (see the module docstring)."""
    maxsim_col, cluster_col, arch, top = acc.maxsim_column, acc.cluster_column, acc.arch, acc.top
    pool = source.pool
    got = _scorer(source.provenance.get(maxsim_col) or {})
    if isinstance(got, str):
        return [], got
    scorer, seed = got
    found = _centroids(source.scores_dir, scorer, pool, seed)
    if found is None:
        return [], (f"no saved centroids for these columns in {source.scores_dir.rstrip('/')}/semdedup_centroids "
                    "(the pairs need them to recompute each cluster's order)")
    centroids, centroid_path = found
    key = scorer.keys[0]

    def assign(shard):
        """The scorer's own assignment of one shard, checked against the stored cluster column."""
        labels, keys = assign_shard(pool, shard, centroids, key, scorer.keep, seed, scorer.clip_column)
        path = source.score_path(shard)
        stored = read_columns(path, [cluster_col])[cluster_col]
        if len(stored) != len(labels) or not np.array_equal(stored, labels.astype(np.float32)):
            differ = int((stored != labels).sum()) if len(stored) == len(labels) else len(labels)
            raise KLFilterError(f"the saved centroids {centroid_path} do not give this file's {cluster_col} "
                                f"({differ} of {len(labels)} rows differ)", path)
        return labels, keys

    # the targets: their unit rows and order keys
    by_shard: dict = {}
    for t, (_, _, _, si, row, _, _) in enumerate(top):
        by_shard.setdefault(si, []).append((t, row))
    targets = [None] * len(top)

    def target_rows(si):
        shard = pool.shards[si]
        labels, keys = assign(shard)
        emb = pool.read_embeddings(shard, (key,), len(labels))[key]
        return [(t, keys[row], normalise_rows(emb[row: row + 1])[0]) for t, row in by_shard[si]]

    for got in engine.map(target_rows, [(si,) for si in sorted(by_shard)], desc=f"report: dedup {arch} pairs"):
        for t, k, vec in got:
            targets[t] = (k, vec)
    vecs = np.stack([v for _, v in targets]).astype(np.float32)
    clusters = np.array([t[5] for t in top], np.int64)

    def scan(shard):
        """Per target: the best earlier row of its cluster in this shard, (cosine, key, shard, row) or None."""
        labels, keys = assign(shard)
        rows = np.flatnonzero(np.isin(labels, clusters))
        out = [None] * len(top)
        if not len(rows):
            return out
        emb = pool.read_embeddings(shard, (key,), len(labels))[key]
        cos = normalise_rows(emb[rows]) @ vecs.T  # [rows, targets], float32
        lab, k = labels[rows], keys[rows]
        for t, (_, _, _, t_shard, t_row, c, _) in enumerate(top):
            m = (lab == c) & _earlier(k, shard.index, rows, targets[t][0], t_shard, t_row)
            if not m.any():
                continue
            cand = np.flatnonzero(m)
            best = cos[cand, t].max()
            tie = cand[cos[cand, t] == best]
            i = tie[np.lexsort((rows[tie], k[tie]))[0]]  # the earliest of equal cosines
            out[t] = (float(best), int(k[i]), shard.index, int(rows[i]))
        return out

    best = [None] * len(top)
    for got in engine.map(scan, [(s,) for s in pool.shards], desc=f"report: dedup {arch} partners"):
        for t, cand in enumerate(got):
            if cand is not None and (best[t] is None or (-cand[0], *cand[1:]) < (-best[t][0], *best[t][1:])):
                best[t] = cand
    return best, None


def partner_rows(pool, best: list) -> dict:
    """``{(shard index, row): (uid hex, caption)}`` of the partners found (one read of each of their shards)."""
    from kl_filter.core.uids import u8u8_to_hex

    want: dict = {}
    for b in best:
        if b is not None:
            want.setdefault(b[2], set()).add(b[3])
    out = {}
    for si, rows in sorted(want.items()):
        data = pool.read(pool.shards[si], ("text",))
        texts = data.columns["text"]
        for r in sorted(rows):
            out[(si, r)] = (u8u8_to_hex(data.uids[r: r + 1])[0].decode("ascii"), texts[r].as_py())
    return out


def dedup_figures(source, accs: dict, engine, shown, mixed=frozenset()) -> dict:
    """``figures["dedup"]``: per arch, cluster sizes, kept share against ε and the duplicate pairs.
    ``shown(uid, score, caption)`` makes an example row as the rest of the report shows them; ``mixed``: the
    columns whose provenance differs between shards (their pairs are not searched)."""
    out = {}
    for arch, acc in accs.items():
        fig = {"maxsim_column": acc.maxsim_column, "cluster_column": acc.cluster_column,
               "provenance": source.provenance.get(acc.maxsim_column), "rows": acc.rows, "nan": acc.nan,
               "clusters": acc.clusters(), "kept": acc.kept_share(), "pairs": [], "pairs_unavailable": None,
               "pair_tolerance": PAIR_TOLERANCE}
        if acc.top:
            if acc.maxsim_column in mixed or acc.cluster_column in mixed:
                best, reason = [], "the score files' provenance of this column differs between shards"
            else:
                best, reason = find_partners(source, acc, engine)
            if reason:
                log.warning("report: %s duplicate pairs left out: %s", arch, reason)
                fig["pairs_unavailable"] = reason
            found = partner_rows(source.pool, best)
            for (s, f0, f1, si, row, cluster, text), b in zip(acc.top, best):
                pair = {"cluster": cluster, "maxsim": s, "row": dict(shown(f"{f0:016x}{f1:016x}", s, text),
                                                                   shard=source.pool.shards[si].name, index=row)}
                if b is None:
                    pair.update(cosine=None, agrees=False, partner=None)
                else:
                    uid, caption = found[(b[2], b[3])]
                    pair.update(cosine=b[0], agrees=abs(b[0] - s) <= PAIR_TOLERANCE,
                                partner=dict(shown(uid, b[0], caption), shard=source.pool.shards[b[2]].name,
                                             index=b[3]))
                fig["pairs"].append(pair)
        out[arch] = fig
    return out
