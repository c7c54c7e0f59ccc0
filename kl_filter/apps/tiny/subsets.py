"""What a subset holds, by the pool's ground truth (``truth.parquet``, :mod:`.pool`): its share of each kind of
row, and of rows that repeat a pair already in it."""

from __future__ import annotations

import numpy as np


def repeated_share(uids_u8u8: np.ndarray, truth) -> float:
    """Share of a subset's distinct rows that repeat a pair already in it: rows minus distinct contents, where a
    planted duplicate's content is that of the row it copies (``truth["dup_of"]``, followed to the first copy).
    This is what deduplication should bring to 0 (the ``duplicate`` kind share counts the copies, and SemDeDup may
    keep the copy and drop its original: both are one content)."""
    from kl_filter.core.uids import u8u8_to_hex

    root = {}
    for u, d in zip(truth["uid"], truth.get("dup_of") or [""] * len(truth["uid"])):
        root[u] = root.get(d, d) if d else u  # a copy appears after what it copies: its root is known
    kept = {u.decode() for u in u8u8_to_hex(np.unique(uids_u8u8))}
    contents = {root[u] for u in kept if u in root}
    return (len(kept) - len(contents)) / max(1, len(kept))


def kind_shares(uids_u8u8: np.ndarray, truth) -> dict:
    """Share of the subset's rows (those in the pool) of each kind of row the pool planted (``truth["kind"]``)."""
    from kl_filter.core.uids import hex_to_u8u8, uids_in

    pool_u = hex_to_u8u8(truth["uid"])
    order = np.lexsort((pool_u["f1"], pool_u["f0"]))
    sorted_pool = pool_u[order]
    pos = np.searchsorted(sorted_pool, uids_u8u8)
    hit = uids_in(sorted_pool, uids_u8u8)
    kinds = np.asarray(truth["kind"], dtype=object)[order[np.minimum(pos, len(order) - 1)][hit]]
    n = max(1, len(kinds))
    all_kinds = sorted(set(truth["kind"]))
    return {k: float((kinds == k).sum() / n) for k in all_kinds}
