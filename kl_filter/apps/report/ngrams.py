"""The paper's n-gram analysis: does a score separate repetitive captions from varied ones?

Rows (of the report's uniform sample) are ordered by score — ascending, ties by uid — and cut into ten groups
of equal size (``np.array_split``: the first ``n mod 10`` deciles get one row more). In each decile, for
n = 1, 2, 3, the **coverage of the top-K n-grams** is the share of all n-gram occurrences in that decile that
belong to the decile's K most frequent n-grams. High coverage = captions reuse a few phrases (low semantic
diversity); the paper reports it falling as D_KL rises.

Tokens: the caption lower-cased, split into runs of letters and digits (``[^\\W_]+``, any script).
"""

from __future__ import annotations

import re

import numpy as np

TOKEN_RE = re.compile(r"[^\W_]+")
ORDERS = (1, 2, 3)


def tokens(caption: str) -> list[str]:
    return TOKEN_RE.findall(caption.lower())


class NgramIndex:
    """Every caption's n-grams as integer ids (one vocabulary per order), built once and shared by all columns."""

    def __init__(self, captions, orders=ORDERS):
        self.orders = orders
        self.vocab: dict[int, dict] = {n: {} for n in orders}
        self.ids: dict[int, np.ndarray] = {}
        self.offsets: dict[int, np.ndarray] = {}
        toks = [tokens(c) for c in captions]
        for n in orders:
            vocab, flat, offs = self.vocab[n], [], [0]
            for t in toks:
                for i in range(len(t) - n + 1):
                    g = " ".join(t[i:i + n])
                    gid = vocab.get(g)
                    if gid is None:
                        gid = vocab[g] = len(vocab)
                    flat.append(gid)
                offs.append(len(flat))
            self.ids[n] = np.asarray(flat, np.int64)
            self.offsets[n] = np.asarray(offs, np.int64)
        self.names = {n: np.array(list(v), dtype=object) for n, v in self.vocab.items()}

    def counts(self, n: int, rows: np.ndarray) -> np.ndarray:
        """Occurrences of every n-gram id over the given caption rows."""
        starts, ends = self.offsets[n][rows], self.offsets[n][rows + 1]
        lens = ends - starts
        if not lens.sum():
            return np.zeros(len(self.vocab[n]), np.int64)
        pos = np.repeat(starts - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens) + np.arange(lens.sum())
        return np.bincount(self.ids[n][pos], minlength=len(self.vocab[n]))


def decile_rows(score: np.ndarray, uids: np.ndarray, groups: int = 10) -> list[np.ndarray]:
    """Indices of the finite rows, ordered by (score, uid) ascending, cut into ``groups`` equal parts."""
    ok = np.flatnonzero(np.isfinite(score))
    order = ok[np.lexsort((uids["f1"][ok], uids["f0"][ok], score[ok]))]
    return np.array_split(order, groups)


def coverage(index: NgramIndex, score: np.ndarray, uids: np.ndarray, top_k: int, show: int = 5,
             groups: int = 10) -> dict:
    parts = decile_rows(np.asarray(score, np.float64), uids, groups)
    out = {"top_k": top_k, "deciles": [], "coverage": {str(n): [] for n in index.orders},
           "top_ngrams": {str(n): {} for n in index.orders}}
    for d, rows in enumerate(parts):
        s = np.asarray(score, np.float64)[rows]
        out["deciles"].append({"rows": int(len(rows)), "min": float(s.min()) if len(s) else None,
                               "max": float(s.max()) if len(s) else None})
        for n in index.orders:
            c = index.counts(n, rows)
            total = int(c.sum())
            k = min(top_k, int((c > 0).sum()))
            top = np.sort(np.partition(c, len(c) - k)[len(c) - k:])[::-1] if k else np.zeros(0, np.int64)
            out["coverage"][str(n)].append(float(top.sum() / total) if total else None)
            if d in (0, len(parts) - 1):  # the words behind the lowest and the highest decile
                best = np.lexsort((np.arange(len(c)), -c))[:show]
                out["top_ngrams"][str(n)]["lowest" if d == 0 else "highest"] = [
                    [str(index.names[n][i]), int(c[i])] for i in best if c[i] > 0]
    return out
