"""The run loop: score every shard → global decisions → per-shard keep masks (+ refine) → one UID file.

Stages and the record shape at each boundary::

    shards ──score()──▶ ShardScores(uids u8,u8[n], {column: array[n]})      (parallel over shards)
           ──rules────▶ {rule index: mask pieces}   thresholds over the WHOLE pool, then intersected
           ──refine()─▶ kept uids per shard                                  (parallel, candidates only)
           ──merge────▶ sorted u8,u8 array → save_path (atomic) + save_path.json sidecar

Library code does not print: progress goes through ``ctx.progress(desc, total)`` (the CLI passes tqdm),
warnings through ``logging``, and every count ends up in the returned summary and the sidecar.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import multiprocessing as mp
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .. import __version__
from ..atomic import write_json
from ..errors import KLFilterError
from ..filters.base import Filter, Keep, Top, Uniform, rule_dict
from ..pool import Pool
from ..progress import NoProgress
from ..uids import concat_uids, save_uids
from .threshold import exact_count, fraction_threshold, keep_mask
from .uniform import uniform_keep

log = logging.getLogger(__name__)
SATURATION_WARN_SHARE = 0.01


@dataclass
class RunContext:
    """What a run knows beyond the filter's own parameters."""

    num_workers: int = os.cpu_count() or 1
    seed: int = 0
    device: str = "auto"
    scores_dir: str | None = None
    stats: str | None = None
    overwrite: bool = False
    progress: Callable = NoProgress


@dataclass
class ShardScores:
    uids: np.ndarray
    columns: dict


def sidecar_path(save_path: str) -> str:
    return save_path + ".json"


def _executor(kind: str, workers: int) -> cf.Executor:
    if kind == "processes" and workers > 1:
        ctx = mp.get_context("forkserver" if sys.platform.startswith("linux") else "spawn")
        return cf.ProcessPoolExecutor(workers, mp_context=ctx)
    return cf.ThreadPoolExecutor(max(1, workers))


def _score_shard(flt: Filter, pool: Pool, shard) -> ShardScores:
    data = pool.read(shard, flt.columns, flt.keys)
    cols = flt.score(data)
    for name, arr in cols.items():
        if len(arr) != data.num_rows:
            raise KLFilterError(f"filter {flt.name!r} returned {len(arr)} values for column {name!r}, "
                                f"expected {data.num_rows}", shard.parquet)
    return ShardScores(data.uids, cols)


def _refine_shard(flt: Filter, pool: Pool, shard, keep: np.ndarray) -> np.ndarray:
    if not keep.any():
        return keep
    data = pool.read(shard, flt.refine_columns)
    return flt.refine(data, keep)


def _map_shards(fn, items, kind, workers, progress, desc):
    bar = progress(desc=desc, total=len(items))
    try:
        with _executor(kind, workers) as ex:
            futs = [ex.submit(fn, *it) for it in items]
            out = []
            for f in futs:  # in shard order: results never depend on completion order
                out.append(f.result())
                bar.update(1)
            return out
    finally:
        bar.close()


def _check_unique_uids(per_shard: list[ShardScores], pool: Pool) -> None:
    """A uid twice in the pool would make the subset ambiguous (and upsample silently): refuse it."""
    uids = concat_uids(s.uids for s in per_shard)
    if len(uids) < 2:
        return
    order = np.lexsort((uids["f1"], uids["f0"]))
    u = uids[order]
    dup = np.flatnonzero((u["f0"][1:] == u["f0"][:-1]) & (u["f1"][1:] == u["f1"][:-1]))
    if dup.size:
        from ..uids import u8u8_to_hex

        offsets = np.cumsum([len(s.uids) for s in per_shard])
        where = [pool.shards[int(np.searchsorted(offsets, order[i], side="right"))].parquet for i in (dup[0], dup[0] + 1)]
        raise KLFilterError(f"uid {u8u8_to_hex(u[dup[0]:dup[0] + 1])[0].decode()} appears more than once in the pool "
                            f"({dup.size} duplicates; also in {where[0]})", where[1])


def evaluate_rules(rules, per_shard: list[ShardScores], seed: int) -> tuple[list[np.ndarray], list[dict]]:
    """Apply every rule over the whole pool; returns the intersected mask per shard and per-rule facts."""
    sizes = [len(s.uids) for s in per_shard]
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    n = int(offsets[-1])
    keep = np.ones(n, dtype=bool)
    facts = []
    for i, rule in enumerate(rules):
        col = np.concatenate([s.columns[rule.column] for s in per_shard]) if per_shard else np.zeros(0)
        info = rule_dict(rule)
        if isinstance(rule, Keep):
            mask = col.astype(bool)
        elif isinstance(rule, Top):
            nan = int(np.isnan(col).sum()) if col.dtype.kind == "f" else 0
            if nan:
                log.warning("%d rows have NaN in %r: they are never kept", nan, rule.column)
            thr = rule.threshold if rule.fraction is None else fraction_threshold(col, rule.fraction, rule.reverse)
            mask = keep_mask(col, thr, rule.reverse)
            ties = int((col == thr).sum())
            info.update(computed_threshold=float(thr), ties_at_threshold=ties, nan=nan)
            if rule.ceiling is not None:
                info.update(saturated=_saturation(col, rule))
            if rule.ties == "exact" and rule.fraction is not None:
                mask = _break_ties(col, thr, mask, exact_count(n, rule.fraction), np.random.default_rng([seed, i]))
        elif isinstance(rule, Uniform):
            mask = uniform_keep(col, rule.fraction, rule.num_bins, seed)
        else:
            raise TypeError(f"unknown rule {rule!r}")
        info["kept_by_rule"] = int(mask.sum())
        facts.append(info)
        keep &= mask
    return [keep[offsets[j]: offsets[j + 1]] for j in range(len(per_shard))], facts


def _saturation(col: np.ndarray, rule: Top) -> int:
    """Rows at the score's ceiling (D_KL <= log N); loud when they are more than 1% of the pool."""
    c = np.float32(rule.ceiling)
    sat = int((col >= c - np.float32(1e-6) * max(np.float32(1), abs(c))).sum())
    if sat > SATURATION_WARN_SHARE * len(col):
        log.warning("%d of %d rows (%.1f%%) of %r saturate at log N = %.4f: the reference sample is too small "
                    "for this pool and many rows tie (use more samples, or --ties exact)",
                    sat, len(col), 100 * sat / len(col), rule.column, rule.ceiling)
    return sat


def _break_ties(col, thr, mask, want, rng) -> np.ndarray:
    """Keep exactly ``want`` rows: all strictly past the threshold, then a seeded draw among the ties."""
    tied = np.flatnonzero(col == thr)
    strict = int(mask.sum()) - len(tied)
    need = max(0, min(len(tied), want - strict))
    mask = mask.copy()
    mask[tied] = False
    mask[np.sort(rng.choice(tied, size=need, replace=False))] = True
    return mask


def run_filter(flt: Filter, metadata_dir: str, save_path: str | None, ctx: RunContext | None = None,
               recipe: str | None = None) -> dict:
    """Run one filter over a pool and write the subset file (when ``save_path`` is given) and its sidecar."""
    ctx = ctx or RunContext()
    t0 = time.perf_counter()
    timings = {}
    pool = Pool(metadata_dir)
    flt.setup(pool, ctx)
    timings["setup_s"] = time.perf_counter() - t0

    t = time.perf_counter()
    per_shard = _map_shards(_score_shard, [(flt, pool, s) for s in pool.shards], flt.parallel,
                            ctx.num_workers, ctx.progress, f"{flt.name}: score")
    timings["score_s"] = time.perf_counter() - t

    _check_unique_uids(per_shard, pool)
    empty = [s.name for s, p in zip(pool.shards, per_shard) if len(p.uids) == 0]
    if empty:
        log.warning("%d empty shard(s): %s", len(empty), ", ".join(empty[:5]))

    t = time.perf_counter()
    rules = flt.rules()
    masks, facts = evaluate_rules(rules, per_shard, ctx.seed)
    timings["rules_s"] = time.perf_counter() - t

    t = time.perf_counter()
    if flt.refine is not None:
        masks = _map_shards(_refine_shard, [(flt, pool, s, m) for s, m in zip(pool.shards, masks)],
                            flt.parallel, ctx.num_workers, ctx.progress, f"{flt.name}: refine")
    timings["refine_s"] = time.perf_counter() - t

    kept = concat_uids(s.uids[m] for s, m in zip(per_shard, masks))
    n = sum(len(s.uids) for s in per_shard)
    summary = {
        "name": flt.name,
        "recipe": recipe,
        "params": flt.params(),
        "rules": facts,
        "seed": ctx.seed,
        "metadata_dir": metadata_dir,
        "pool_fingerprint": pool.fingerprint,
        "pool_rows": n,
        "shards": len(pool),
        "empty_shards": empty,
        "kept": int(len(kept)),
        "kept_share": len(kept) / n if n else 0.0,
        "version": __version__,
        "argv": sys.argv,
    }
    if save_path:
        t = time.perf_counter()
        save_uids(save_path, kept)
        timings["write_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t0
    summary["timings"] = {k: round(v, 4) for k, v in timings.items()}
    if save_path:
        write_json(sidecar_path(save_path), summary)
    return summary
