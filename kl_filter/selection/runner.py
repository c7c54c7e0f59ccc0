"""The run: statistics → scores → global rules → per-shard keep masks (+ refine) → one UID file, on ONE executor.

The runner plans from what the filter declares (:mod:`kl_filter.filters.base`); stages and the record shape at
each boundary::

    scorers' StatsNeed ──stats stage──▶ Stats (samples, moments)           --stats / SCORES_DIR/stats.npz / memory
    shards ──score stage (each scorer once per shard, resumed)──▶ SCORES_DIR/<shard>.parquet (float32 columns)
           ──filter.score()──▶ ShardScores(uids u8,u8[n], {column: array[n]})   one handle per shard (maybe remote)
           ──rules────▶ resolved rules: thresholds over the WHOLE pool (exact k-th largest by radix
                        refinement, no gathering), or whole-pool masks for uniform / exact ties
           ──keep─────▶ per shard: AND of the rules, then refine() on the candidates → kept uids + rows
                        removed per step (+ draws per kept row for a Resample rule)
           ──merge────▶ sorted u8,u8 array (a resampled uid repeated once per draw) → save_path (atomic)
                        + save_path.json sidecar

The engine (:mod:`kl_filter.engines`) decides where the per-shard functions run; the functions are the same.
Library code does not print: progress goes through the engine's progress callable, warnings through
``logging``, and every count ends up in the returned summary and the sidecar.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from .. import __version__
from ..engines import LocalEngine, Parallel, get_engine
from ..errors import KLFilterError
from ..filters.base import Filter, Keep, Resample, Ties, Top, Uniform, rule_dict, rule_label
from ..pool import Pool
from ..progress import NoProgress
from ..outputs import check_run
from ..uids import concat_uids, save_uids_with_sidecar, sort_uids, u8u8_to_hex
from .kth import kth_largest
from .threshold import exact_count, keep_mask, kth_index
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
    engine: str = "local"
    ray_address: str | None = None
    _engine: object = field(default=None, repr=False)

    def get_engine(self):
        if self._engine is None:
            self._engine = get_engine(self.engine, self.num_workers, self.progress, self.ray_address)
        return self._engine


@dataclass
class ShardScores:
    uids: np.ndarray
    columns: dict


# ---- per-shard functions (run by any engine) ----------------------------------------------------------------
def _score_shard(flt: Filter, pool: Pool, shard, derived) -> ShardScores:
    data = pool.read(shard, flt.columns, flt.keys)
    data.scores = derived.read(shard)
    cols = flt.score(data)
    for name, arr in cols.items():
        if len(arr) != data.num_rows:
            raise KLFilterError(f"filter {flt.name!r} returned {len(arr)} values for column {name!r}, "
                                f"expected {data.num_rows}", shard.parquet)
        arr = np.asarray(arr)
        if arr.dtype.kind in "iuf" and arr.dtype != np.float32:
            # one dtype pool-wide: thresholds and radix keys take shard 0's dtype (float64 in one shard and
            # float32 in another would mix 32- and 64-bit keys)
            cols[name] = arr.astype(np.float32)
    return ShardScores(data.uids, cols)


def _rule_mask(s: ShardScores, rule, resolved) -> np.ndarray:
    if isinstance(resolved, np.ndarray):  # a whole-pool decision already cut to this shard
        return resolved if resolved.dtype == bool else resolved > 0  # Resample: draws per row
    col = s.columns[rule.column]
    if isinstance(rule, Keep):
        return col.astype(bool)
    return keep_mask(col, resolved, rule.reverse)


def _keep_shard(flt: Filter, pool: Pool, shard, s: ShardScores, rules,
                resolved) -> tuple[np.ndarray, list[int], np.ndarray | None]:
    """Kept uids of one shard (the AND of every rule, then the filter's refine() on the candidates), the rows
    each step removed from what the steps before it kept, and with a ``Resample`` rule the draws per kept uid."""
    keep = np.ones(len(s.uids), dtype=bool)
    removed = []
    for rule, r in zip(rules, resolved):
        before = int(keep.sum())
        keep &= _rule_mask(s, rule, r)
        removed.append(before - int(keep.sum()))
    if flt.refine is not None:
        before = int(keep.sum())
        if before:
            keep = np.asarray(flt.refine(pool.read(shard, flt.refine_columns), keep), dtype=bool)
        removed.append(before - int(keep.sum()))
    draws = next((r for rule, r in zip(rules, resolved) if isinstance(rule, Resample)), None)
    return s.uids[keep], removed, (draws[keep] if draws is not None else None)


def _rule_counts(s: ShardScores, rule, resolved) -> dict:
    mask = _rule_mask(s, rule, resolved)
    out = {"kept_by_rule": int(mask.sum())}
    if isinstance(rule, Top):
        col = s.columns[rule.column]
        out["nan"] = int(np.isnan(col).sum()) if col.dtype.kind == "f" else 0
        thr = resolved if not isinstance(resolved, np.ndarray) else None
        if thr is not None:
            out["ties_at_threshold"] = int((col == thr).sum())
        if rule.ceiling is not None:
            c = np.float32(rule.ceiling)
            out["saturated"] = int((col >= c - np.float32(1e-6) * max(np.float32(1), abs(c))).sum())
    return out


# ---- global step -------------------------------------------------------------------------------------------
def resolve_rules(rules, handles, engine, seed: int, sizes: list[int]) -> tuple[list, list[dict]]:
    """Each rule over the whole pool: a threshold (exact k-th largest without gathering the column), or, for
    ``Uniform`` and ``Top(ties="exact")``, a whole-pool mask cut back into per-shard pieces."""
    n = sum(sizes)
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    resolved, facts = [], []
    for i, rule in enumerate(rules):
        info = rule_dict(rule)
        if isinstance(rule, Keep):
            r = None
        elif isinstance(rule, Top):
            if rule.fraction is None:
                r = rule.threshold
            else:
                col = rule.column
                dtype = engine.apply(lambda s, c=col: s.columns[c].dtype, handles[:1])[0] if handles else np.float32
                frac = (1.0 - rule.fraction) if rule.reverse else rule.fraction
                r = kth_largest(handles, kth_index(n, frac), dtype,
                                mapper=lambda fn, hs, c=col: engine.apply(lambda s: fn(s.columns[c]), hs))
            info["computed_threshold"] = float(r)
            if rule.ties is Ties.EXACT and rule.fraction is not None:
                colv = np.concatenate(engine.apply(lambda s, c=rule.column: s.columns[c], handles))
                mask = _break_ties(colv, r, keep_mask(colv, r, rule.reverse), exact_count(n, rule.fraction),
                                   np.random.default_rng([seed, i]))
                r = [mask[offsets[j]: offsets[j + 1]] for j in range(len(sizes))]
        elif isinstance(rule, Uniform):
            colv = np.concatenate(engine.apply(lambda s, c=rule.column: s.columns[c], handles))
            mask = uniform_keep(colv, rule.fraction, rule.num_bins, seed)
            r = [mask[offsets[j]: offsets[j + 1]] for j in range(len(sizes))]
        elif isinstance(rule, Resample):
            r = None  # drawn below, among the rows the other rules keep
        else:
            raise TypeError(f"unknown rule {rule!r}")
        resolved.append(r)
        facts.append(info)
    for i, rule in enumerate(rules):
        if isinstance(rule, Resample):
            resolved[i], more = _resolve_resample(i, rules, resolved, handles, engine, seed)
            facts[i].update(more)
    # counts per rule, summed over shards (the shard's piece of a whole-pool mask goes with it)
    for i, rule in enumerate(rules):
        pieces = resolved[i] if isinstance(resolved[i], list) else [resolved[i]] * len(handles)
        per = engine.apply(lambda hr, rule=rule: _rule_counts(hr[0], rule, hr[1]), list(zip(handles, pieces)))
        for k in per[0] if per else {}:
            facts[i][k] = int(sum(p[k] for p in per))
        sat = facts[i].get("saturated")
        if sat is not None and sat > SATURATION_WARN_SHARE * max(n, 1):
            log.warning("%d of %d rows (%.1f%%) of %r saturate at log N = %.4f: the reference sample is too small "
                        "for this pool and many rows tie (use more samples, or --ties exact)",
                        sat, n, 100 * sat / n, rule.column, rule.ceiling)
        if facts[i].get("nan"):
            log.warning("%d rows have NaN in %r: they are never kept", facts[i]["nan"], rule.column)
    return resolved, facts


def _pieces(resolved, j: int) -> list:
    """Shard ``j``'s part of each resolved rule."""
    return [r[j] if isinstance(r, list) else r for r in resolved]


def _eligible(s: ShardScores, rules, pieces, skip: int) -> np.ndarray:
    """The AND of every rule but rule ``skip`` on one shard."""
    keep = np.ones(len(s.uids), dtype=bool)
    for k, (rule, r) in enumerate(zip(rules, pieces)):
        if k != skip:
            keep &= _rule_mask(s, rule, r)
    return keep


def _resolve_resample(i: int, rules, resolved, handles, engine, seed: int) -> tuple[list[np.ndarray], dict]:
    """Per-shard draw counts of ``rules[i]`` (a Resample) among the rows every other rule keeps: per-shard
    float64 sums, combined in shard order, one seeded uniform, then each shard's systematic counts
    (:mod:`kl_filter.selection.weights`): the same counts for any engine and worker count."""
    from .weights import boundaries, check_weights, combine, log_weights, shard_sums, systematic_counts

    rule = rules[i]
    items = [(h, _pieces(resolved, j)) for j, h in enumerate(handles)]

    def sums(item):
        s, pieces = item
        return shard_sums(log_weights(s.columns[rule.column], rule.log), _eligible(s, rules, pieces, i))

    parts = engine.apply(sums, items)
    total = combine(parts)
    if not total.rows:
        raise KLFilterError(f"{rule_label(rule)}: no row to draw from (the other rules keep none with a finite weight)")
    check_weights(total, rule.column)
    u = float(np.random.default_rng([seed, i]).random())
    bounds = boundaries(parts, total, rule.n, u)

    def draws(item):
        s, pieces, b = item
        return systematic_counts(log_weights(s.columns[rule.column], rule.log), _eligible(s, rules, pieces, i),
                                 total, rule.n, u, b)

    counts = engine.apply(draws, [(h, p, b) for (h, p), b in zip(items, bounds)])
    return counts, {"method": "systematic", "uniform_draw": u, "eligible_rows": total.rows,
                    "effective_sample_size": total.ess, "effective_sample_share": total.ess_share,
                    "max_log_weight": total.max, "draws": int(sum(int(c.sum()) for c in counts)),
                    "distinct_uids": int(sum(int((c > 0).sum()) for c in counts))}


def _break_ties(col, thr, mask, want, rng) -> np.ndarray:
    """Keep exactly ``want`` rows: all strictly past the threshold, then a seeded draw among the ties."""
    tied = np.flatnonzero(col == thr)
    strict = int(mask.sum()) - len(tied)
    need = max(0, min(len(tied), want - strict))
    mask = mask.copy()
    mask[tied] = False
    mask[np.sort(rng.choice(tied, size=need, replace=False))] = True
    return mask


def evaluate_rules(rules, per_shard: list[ShardScores], seed: int) -> tuple[list[np.ndarray], list[dict]]:
    """The intersected mask per (local) shard and per-rule facts: the global step on in-memory scores."""
    engine = LocalEngine(1)
    resolved, facts = resolve_rules(rules, per_shard, engine, seed, [len(s.uids) for s in per_shard])
    masks = []
    for j, s in enumerate(per_shard):
        keep = np.ones(len(s.uids), dtype=bool)
        for rule, r in zip(rules, resolved):
            keep &= _rule_mask(s, rule, r[j] if isinstance(r, list) else r)
        masks.append(keep)
    return masks, facts


def _check_resample(flt: Filter, rules) -> None:
    n = sum(isinstance(r, Resample) for r in rules)
    if n > 1:
        raise KLFilterError(f"filter {flt.name!r} has {n} Resample rules; one at most")
    if n and flt.refine is not None:
        raise KLFilterError(f"filter {flt.name!r}: a Resample rule cannot be combined with its refine step "
                            f"({flt.refine_reason}), which would drop draws after they are made")


def _check_unique(uids_sorted: np.ndarray, where: str) -> None:
    """A uid twice in the pool would make the subset ambiguous (and upsample silently): refuse it."""
    u = uids_sorted
    dup = np.flatnonzero((u["f0"][1:] == u["f0"][:-1]) & (u["f1"][1:] == u["f1"][:-1]))
    if dup.size:
        raise KLFilterError(f"uid {u8u8_to_hex(u[dup[0]:dup[0] + 1])[0].decode()} appears more than once in the "
                            f"pool ({dup.size} duplicates)", where)


def _locate_duplicate(pool: Pool, uid_lists: list[np.ndarray]) -> None:
    """Name the shard holding the second copy of a duplicated uid (the local engine checks the whole pool)."""
    uids = concat_uids(uid_lists)
    if len(uids) < 2:
        return
    order = np.lexsort((uids["f1"], uids["f0"]))
    u = uids[order]
    dup = np.flatnonzero((u["f0"][1:] == u["f0"][:-1]) & (u["f1"][1:] == u["f1"][:-1]))
    if dup.size:
        offsets = np.cumsum([len(x) for x in uid_lists])
        shard = pool.shards[int(np.searchsorted(offsets, max(order[dup[0]], order[dup[0] + 1]), side="right"))]
        _check_unique(u, shard.parquet)


# ---- the run -------------------------------------------------------------------------------------------------
def _with_ceilings(rules, scorers, stats) -> list:
    """``Top`` rules on a scorer's column get the column's largest attainable value (to count saturation)."""
    ceilings = {c: s.ceiling(c, stats) for s in scorers for c in s.outputs()}
    return [replace(r, ceiling=ceilings[r.column]) if isinstance(r, Top) and r.ceiling is None
            and ceilings.get(r.column) is not None else r for r in rules]


def _stats_facts(stats, path) -> dict | None:
    if stats is None:
        return None
    return {"path": path, "seed": stats.sampling()["seed"], "archs": stats.archs,
            "num_reference_samples": {f"{a}_{m}": stats.num_samples(a, m) for a in stats.archs for m in ("img", "txt")},
            "samples_id": {a: stats.samples_id(a) for a in stats.archs},
            "moments_id": {a: stats.moments_id(a) for a in stats.archs if stats.has_moments(a)}}


def run_filter(flt: Filter, metadata_dir: str, save_path: str | None, ctx: RunContext | None = None,
               recipe: str | None = None) -> dict:
    """Run one filter over a pool and write the subset file (when ``save_path`` is given) and its sidecar."""
    from ..scores.stage import run_scores
    from ..stats.stage import ensure_stats

    ctx = ctx or RunContext()
    check_run(flt, metadata_dir, save_path, ctx)  # outputs never replace inputs: refused before any work
    engine = ctx.get_engine()
    t0 = time.perf_counter()
    timings = {}
    pool = Pool(metadata_dir)
    flt.check_assets()
    rules = flt.rules()  # the filter's own checks fail here, before any work
    _check_resample(flt, rules)

    t = time.perf_counter()
    scorers = list(flt.scorers())
    for s in scorers:  # what they take from the pool (its recorded temperature): a bad manifest stops here
        s.bind(pool)
    stats, stats_path = ensure_stats(pool, [s.stats() for s in scorers], stats_path=ctx.stats,
                                     scores_dir=ctx.scores_dir, seed=ctx.seed, overwrite=ctx.overwrite,
                                     num_workers=ctx.num_workers, progress=ctx.progress,
                                     device=ctx.device, engine=engine)
    timings["stats_s"] = time.perf_counter() - t
    t = time.perf_counter()
    derived = run_scores(pool, scorers, stats, ctx.scores_dir, engine, ctx.device, ctx.overwrite, ctx.seed)
    timings["scores_s"] = time.perf_counter() - t

    t = time.perf_counter()
    handles = engine.map(_score_shard, [(flt, pool, s, derived.piece(s)) for s in pool.shards],
                         parallel=flt.parallel, desc=f"{flt.name}: score", fetch=False)
    sizes = engine.apply(lambda s: len(s.uids), handles)
    timings["score_s"] = time.perf_counter() - t
    if not engine.remote:  # the whole pool's uids fit here: refuse duplicates wherever they are
        _locate_duplicate(pool, [h.uids for h in handles])
    empty = [s.name for s, n in zip(pool.shards, sizes) if n == 0]
    if empty:
        log.warning("%d empty shard(s): %s", len(empty), ", ".join(empty[:5]))

    t = time.perf_counter()
    rules = _with_ceilings(rules, scorers, stats)
    resolved, facts = resolve_rules(rules, handles, engine, ctx.seed, sizes)
    timings["rules_s"] = time.perf_counter() - t

    t = time.perf_counter()
    per_shard = [[r[j] if isinstance(r, list) else r for r in resolved] for j in range(len(handles))]
    parts = engine.map(_keep_shard, [(flt, pool, s, h, rules, per_shard[j])
                                     for j, (s, h) in enumerate(zip(pool.shards, handles))],
                       parallel=flt.parallel if flt.refine is not None else Parallel.THREADS, desc=f"{flt.name}: keep")
    distinct = sort_uids(concat_uids([p[0] for p in parts]))
    _check_unique(distinct, metadata_dir)  # a uid twice in the POOL; the draws of a Resample repeat uids below
    if any(isinstance(r, Resample) for r in rules):
        kept = sort_uids(np.repeat(concat_uids([p[0] for p in parts]), np.concatenate([p[2] for p in parts])))
    else:
        kept = distinct
    timings["keep_s"] = time.perf_counter() - t

    steps = [(rule_label(r, f.get("computed_threshold", getattr(r, "threshold", None))), "rule")
             for r, f in zip(rules, facts)]
    if flt.refine is not None:
        steps.append((flt.refine_reason, "refine"))
    removed = [{"step": label, "kind": kind, "removed": int(sum(p[1][i] for p in parts))}
               for i, (label, kind) in enumerate(steps)]
    n = int(sum(sizes))
    summary = {
        "name": flt.name,
        "recipe": recipe,
        "params": flt.params(),
        "rules": facts,
        "removed": removed,
        "stats": _stats_facts(stats, stats_path),
        "scores": {"columns": list(derived.names), "scores_dir": ctx.scores_dir,
                   "shards_computed": derived.computed, "shards_reused": derived.reused,
                   "temperature": derived.temperatures()},
        "seed": ctx.seed,
        "engine": engine.name,
        "metadata_dir": metadata_dir,
        "pool_fingerprint": pool.fingerprint,
        "pool_rows": n,
        "shards": len(pool),
        "empty_shards": empty,
        "kept": int(len(kept)),  # entries of the UID file (a resampled uid once per draw)
        "kept_distinct": int(len(distinct)),  # pool_rows = kept_distinct + Σ removed
        "kept_share": len(kept) / n if n else 0.0,
        "version": __version__,
        "argv": sys.argv,
    }
    timings["total_s"] = time.perf_counter() - t0
    summary["timings"] = {k: round(v, 4) for k, v in timings.items()}
    if save_path:  # one output: the sidecar names the UID file's hash; the UID file is renamed into place last
        save_uids_with_sidecar(save_path, kept, summary, presorted=True)
    return summary
