"""The run: statistics → scores → rules → per-shard keep masks (+ refine) → one UID file, on ONE executor.

The runner plans from what the filter declares (:mod:`kl_filter.filters.base`) and only loops; each rule resolves
itself (:mod:`kl_filter.rules.base`). Stages and the record shape at each boundary::

    scorers' StatsNeed ──stats stage──▶ Stats (samples, moments)           --stats / SCORES_DIR/stats.npz / memory
    shards ──score stage (each scorer once per shard, resumed)──▶ SCORES_DIR/<shard>.parquet (float32 columns)
           ──filter.score()──▶ ShardScores(uids u8,u8[n], {column: array[n]})   one handle per shard (maybe remote)
           ──rules, in order──▶ Resolved(piece per shard, facts): each rule over the WHOLE pool (a threshold by
                        exact k-th largest without gathering, or a whole-pool mask), a ``then`` rule among the
                        rows the rules before it keep
           ──keep─────▶ per shard: AND of the rules' masks, then refine() on the candidates → kept uids + rows
                        removed per step (+ draws per kept row for a rule that repeats rows)
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
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from kl_filter.core.version import __version__
from kl_filter.engines import LocalEngine, Parallel, get_engine
from kl_filter.core.errors import KLFilterError
from kl_filter.filters.base import Filter
from kl_filter.core.outputs import check_run
from kl_filter.pool import Pool
from kl_filter.core.progress import NoProgress
from kl_filter.core.uids import concat_uids, save_uids_with_sidecar, sort_uids, u8u8_to_hex
from kl_filter.rules.base import PoolScores, ShardScores, check_rules, resolve_rules

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
    task_timeout: float | None = None  # seconds a task may run (kl_filter.engines.watchdog); None: no bound
    _engine: object = field(default=None, repr=False)

    def get_engine(self):
        if self._engine is None:
            self._engine = get_engine(self.engine, self.num_workers, self.progress, self.ray_address,
                                      self.task_timeout)
        return self._engine


# ---- per-shard functions (run by any engine) ----------------------------------------------------------------
def _score_shard(flt: Filter, pool: Pool, shard, derived) -> ShardScores:
    data = pool.read(shard, flt.columns, flt.keys)
    data.scores = derived.read(shard)
    cols = check_score_output(flt, flt.score(data), data.num_rows, shard.parquet)
    for name, arr in cols.items():
        if arr.dtype.kind in "iuf" and arr.dtype != np.float32:
            # one dtype pool-wide: thresholds and radix keys take shard 0's dtype (float64 in one shard and
            # float32 in another would mix 32- and 64-bit keys)
            cols[name] = arr.astype(np.float32)
    return ShardScores(data.uids, cols)


def _plugin_words(flt) -> str:
    """How a message names a filter: its name and, for a third-party plugin, the distribution declaring it."""
    from kl_filter.filters.registry import FILTERS
    from kl_filter.scorers.registry import SCORERS

    name = getattr(flt, "name", "") or type(flt).__name__
    reg = FILTERS if name in FILTERS.names() or name not in SCORERS.names() else SCORERS
    return reg.describe(name)


def check_score_output(flt, cols, rows: int, path: str) -> dict:
    """A filter's ``score()`` output checked at the boundary: a dict of 1-d numeric or boolean arrays of the
    shard's length holding every column its rules read; anything else (strings, objects, complex values, 2-d
    arrays, a list, a missing column) is one line naming the filter, its distribution and the shard."""
    who = _plugin_words(flt)
    if not isinstance(cols, dict):
        raise KLFilterError(f"{who}: score() returned a {type(cols).__name__}, not a dict of columns", path)
    out = {}
    for name, arr in cols.items():
        if not isinstance(name, str):
            raise KLFilterError(f"{who}: score() returned a column named {name!r}, not a string", path)
        try:
            a = np.asarray(arr)
        except Exception as e:  # noqa: BLE001 - whatever the plugin returned: one line
            raise KLFilterError(f"{who}: column {name!r} is not an array ({type(e).__name__})", path) from e
        if a.dtype.kind not in "biuf":
            raise KLFilterError(f"{who}: column {name!r} has dtype {a.dtype}, not numbers or booleans", path)
        if a.ndim != 1:
            raise KLFilterError(f"{who}: column {name!r} has shape {a.shape}, expected ({rows},)", path)
        if len(a) != rows:
            raise KLFilterError(f"{who} returned {len(a)} values for column {name!r}, expected {rows}", path)
        out[name] = a
    missing = [c for r in flt.rules() for c in r.reads() if c not in out]
    if missing:
        raise KLFilterError(f"{who}: score() has no column {missing[0]!r}, which its rules read "
                            f"(it returned {sorted(out)})", path)
    return out


def _keep_shard(flt: Filter, pool: Pool, shard, s: ShardScores, steps) -> tuple[np.ndarray, list[int], np.ndarray | None]:
    """Kept uids of one shard (the AND of every rule, then the filter's refine() on the candidates), the rows
    each step removed from what the steps before it kept, and the draws per kept uid of a rule that repeats rows.
    ``steps``: (rule, this shard's piece) per rule."""
    keep = np.ones(len(s.uids), dtype=bool)
    removed, draws = [], None
    for rule, piece in steps:
        before = int(keep.sum())
        keep &= rule.mask(s, piece)
        removed.append(before - int(keep.sum()))
        d = rule.draws(s, piece)
        draws = d if d is not None else draws
    if flt.refine is not None:
        before = int(keep.sum())
        if before:
            keep = np.asarray(flt.refine(pool.read(shard, flt.refine_columns), keep), dtype=bool)
        removed.append(before - int(keep.sum()))
    return s.uids[keep], removed, (draws[keep] if draws is not None else None)


def evaluate_rules(rules, per_shard: list[ShardScores], seed: int) -> tuple[list[np.ndarray], list[dict]]:
    """The intersected mask per (local) shard and per-rule facts: the rules on in-memory scores."""
    pool = PoolScores(per_shard, LocalEngine(1), [len(s.uids) for s in per_shard], seed)
    resolved = resolve_rules(rules, pool)
    masks = []
    for j, s in enumerate(per_shard):
        keep = np.ones(len(s.uids), dtype=bool)
        for r in resolved:
            keep &= r.rule.mask(s, r.pieces[j])
        masks.append(keep)
    return masks, [r.facts for r in resolved]


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
    f0 = np.sort(uids["f0"])  # a uid twice has its first half twice: one uint64 sort clears the usual pool
    if not (f0[1:] == f0[:-1]).any():  # (600k uids: 0.01 s against the two-key sort's 0.17 s)
        return
    order = np.lexsort((uids["f1"], uids["f0"]))
    u = uids[order]
    dup = np.flatnonzero((u["f0"][1:] == u["f0"][:-1]) & (u["f1"][1:] == u["f1"][:-1]))
    if dup.size:
        offsets = np.cumsum([len(x) for x in uid_lists])
        shard = pool.shards[int(np.searchsorted(offsets, max(order[dup[0]], order[dup[0] + 1]), side="right"))]
        _check_unique(u, shard.parquet)


# ---- the run -------------------------------------------------------------------------------------------------
def _stats_facts(stats, path) -> dict | None:
    if stats is None:
        return None
    return {"path": path, "seed": stats.sampling()["seed"], "archs": stats.archs,
            "num_reference_samples": {f"{a}_{m}": stats.num_samples(a, m) for a in stats.archs for m in ("img", "txt")},
            "samples_id": {a: stats.samples_id(a) for a in stats.archs},
            "moments_id": {a: stats.moments_id(a) for a in stats.archs if stats.has_moments(a)}}


class _Clock:
    """Seconds per stage, into the summary's ``timings``."""

    def __init__(self):
        self.t0 = self.t = time.perf_counter()
        self.timings = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name], self.t = now - self.t, now

    def done(self) -> dict:
        return {k: round(v, 4) for k, v in {**self.timings, "total_s": time.perf_counter() - self.t0}.items()}


def run_filter(flt: Filter, metadata_dir: str, save_path: str | None, ctx: RunContext | None = None,
               recipe: str | None = None) -> dict:
    """Run one filter over a pool and write the subset file (when ``save_path`` is given) and its sidecar."""
    from kl_filter.stages.scores import run_scores
    from kl_filter.stages.stats import ensure_stats

    ctx = ctx or RunContext()
    check_run(flt, metadata_dir, save_path, ctx)  # outputs never replace inputs: refused before any work
    engine, pool, clock = ctx.get_engine(), Pool(metadata_dir), _Clock()
    flt.check_assets()
    rules = flt.rules()  # the filter's own checks fail here, before any work
    check_rules(rules, flt.refine is not None, flt.name)

    scorers = list(flt.scorers())
    for s in scorers:  # what they take from the pool (its recorded temperature): a bad manifest stops here
        s.bind(pool)
    stats, stats_path = ensure_stats(pool, [s.stats() for s in scorers], stats_path=ctx.stats,
                                     scores_dir=ctx.scores_dir, seed=ctx.seed, overwrite=ctx.overwrite,
                                     num_workers=ctx.num_workers, progress=ctx.progress,
                                     device=ctx.device, engine=engine)
    clock.lap("stats_s")
    derived = run_scores(pool, scorers, stats, ctx.scores_dir, engine, ctx.device, ctx.overwrite, ctx.seed)
    clock.lap("scores_s")

    handles = engine.map(_score_shard, [(flt, pool, s, derived.piece(s)) for s in pool.shards],
                         parallel=flt.parallel, desc=f"{flt.name}: score", fetch=False)
    sizes = engine.apply(lambda s: len(s.uids), handles)
    if not engine.remote:  # the whole pool's uids fit here: refuse duplicates wherever they are
        _locate_duplicate(pool, [h.uids for h in handles])
    empty = [s.name for s, n in zip(pool.shards, sizes) if n == 0]
    if empty:
        log.warning("%d empty shard(s): %s", len(empty), ", ".join(empty[:5]))
    clock.lap("score_s")

    ceilings = {c: s.ceiling(c, stats) for s in scorers for c in s.outputs()}
    resolved = resolve_rules(rules, PoolScores(handles, engine, sizes, ctx.seed,
                                               {c: v for c, v in ceilings.items() if v is not None}))
    clock.lap("rules_s")

    parts = engine.map(_keep_shard, [(flt, pool, s, h, [(r.rule, r.pieces[j]) for r in resolved])
                                     for j, (s, h) in enumerate(zip(pool.shards, handles))],
                       parallel=flt.parallel if flt.refine is not None else Parallel.THREADS, desc=f"{flt.name}: keep")
    distinct = sort_uids(concat_uids([p[0] for p in parts]))
    _check_unique(distinct, metadata_dir)  # a uid twice in the POOL; a rule's draws repeat uids below
    drawn = [p[2] for p in parts if p[2] is not None]
    kept = sort_uids(np.repeat(concat_uids([p[0] for p in parts]), np.concatenate(drawn))) if drawn else distinct
    clock.lap("keep_s")

    steps = [(r.rule.label(r.facts), "rule") for r in resolved]
    if flt.refine is not None:
        steps.append((flt.refine_reason, "refine"))
    n = int(sum(sizes))
    summary = {
        "name": flt.name,
        "recipe": recipe,
        "params": flt.params(),
        "rules": [r.facts for r in resolved],
        "removed": [{"step": label, "kind": kind, "removed": int(sum(p[1][i] for p in parts))}
                    for i, (label, kind) in enumerate(steps)],
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
        "timings": clock.done(),
    }
    if save_path:  # one output: the sidecar names the UID file's hash; the UID file is renamed into place last
        save_uids_with_sidecar(save_path, kept, summary, presorted=True)
    return summary
