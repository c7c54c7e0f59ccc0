"""The importance-weights file: one row per uid of the pool (pool order) with each column's self-normalised
``weight`` and ``log_weight`` (``kl-filter score --scorer iwl --weights W.parquet``; the arithmetic is
:mod:`kl_filter.rules.weights`)."""

from __future__ import annotations

import numpy as np

from kl_filter.core.errors import KLFilterError
from kl_filter.rules.weights import (META_KEY, WEIGHTS_FORMAT, WeightSums, check_weights, combine, normalised,
                                     shard_sums, weight_names)


def write_weights(metadata_dir: str, scorer, out: str, *, engine, scores_dir: str | None = None,
                  device: str = "auto", overwrite: bool = False, logit_scale: float | None = None) -> dict:
    """One row per uid of the pool (pool order) with each column's self-normalised ``weight`` (mean 1 over the
    pool, float64 arithmetic, stored float32) and ``log_weight`` (the scorer's float32 column), written
    atomically to ``out`` (parquet, one row group per shard; key-value metadata ``kl_filter``: the provenance,
    the normaliser and the effective sample size of each column).

    The log-weights come from the score stage (:func:`kl_filter.stages.scores.run_scores`): with ``scores_dir``
    they are computed once per shard, resumed and reused like any score column; the whole-pool sums are then
    reduced from per-shard float64 pieces in shard order (:func:`combine`)."""
    import json
    import time

    import pyarrow as pa
    import pyarrow.parquet as pq

    from kl_filter.core.version import __version__
    from kl_filter.core.atomic import atomic_open
    from kl_filter.pool import Pool
    from kl_filter.stages.scores import run_scores

    t0 = time.perf_counter()
    pool = Pool(metadata_dir)
    derived = run_scores(pool, [scorer], None, scores_dir, engine, device=device, overwrite=overwrite)
    t_scores = time.perf_counter() - t0
    names = weight_names(scorer.outputs())
    parts: dict[str, list[WeightSums]] = {c: [] for c in names}
    for shard in pool.shards:  # pass 1: per-shard float64 sums
        got = derived.read(shard)
        for c in names:
            parts[c].append(shard_sums(got[c]))
    totals = {c: combine(p) for c, p in parts.items()}
    scale = logit_scale if logit_scale is not None else getattr(scorer, "scale", None)  # bound by run_scores
    for c, total in totals.items():
        check_weights(total, c, scale)
        if total.rows != sum(pool.row_counts):
            raise KLFilterError(f"{sum(pool.row_counts) - total.rows} rows of {c!r} have no finite log-weight")
    columns = {}
    for c, (w, lw) in names.items():
        t = totals[c]
        columns[w] = {"log_weight_column": lw, "score_column": c, "provenance": scorer.provenance(c, None),
                      "rows": t.rows, "max_log_weight": t.max, "sum_exp": t.s1,
                      "weight": "exp(log_weight - max_log_weight) * rows / sum_exp",
                      "effective_sample_size": t.ess, "effective_sample_share": t.ess_share,
                      "log_weight_std": t.std}
    meta = {"format": WEIGHTS_FORMAT, "pool_fingerprint": pool.fingerprint, "metadata_dir": metadata_dir,
            "rows": sum(pool.row_counts), "shards": len(pool), "columns": columns, "version": __version__,
            "scorer": scorer.describe() if hasattr(scorer, "describe") else scorer.provenance(next(iter(names)), None)}
    fields = [("uid", pa.string())] + [(n, pa.float32()) for c in names for n in names[c]]
    schema = pa.schema(fields, metadata={META_KEY: json.dumps(meta, sort_keys=True, default=float).encode()})
    with atomic_open(out, "wb") as f:  # pass 2: one row group per shard, in pool order
        with pq.ParquetWriter(f, schema) as writer:
            for shard in pool.shards:
                got = derived.read(shard)
                arrays = {"uid": pool.read(shard).columns["uid"].cast(pa.string())}
                for c, (w, lw) in names.items():
                    arrays[w] = pa.array(normalised(got[c], totals[c]).astype(np.float32), pa.float32())
                    arrays[lw] = pa.array(np.asarray(got[c], dtype=np.float32), pa.float32())
                writer.write_table(pa.table(arrays, schema=schema))
    return {"out": out, "rows": meta["rows"], "shards": len(pool), "columns": columns,
            "shards_computed": derived.computed, "shards_reused": derived.reused, "scores_dir": scores_dir,
            "timings": {"scores_s": round(t_scores, 4), "total_s": round(time.perf_counter() - t0, 4)}}
