"""The score stage: per shard, the KL-family columns written to ``SCORES_DIR/<shard>.parquet``.

Column ``{mode}_{arch}_{target}``: ``mode`` ∈ kl, kl_reverse, centered, whitened; ``arch`` ∈ b32, l14;
``target`` ∈ txt, img. ``target=txt`` scores the row's TEXT embedding against IMAGE reference samples (and
for centered/whitened: text mean, image covariance) — the paper's best DataComp rows.

Record shape of a score file: ``uid`` (string, the pool's row order) + one float32 column per score, and in
the parquet key-value metadata ``kl_filter`` a JSON of what made it (pool fingerprint, statistics id, logit
scale, shard, rows). A score file is reused column by column only when all of that matches; anything else
is recomputed and the file is replaced atomically.
"""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..atomic import atomic_open
from ..errors import KLFilterError
from ..progress import NoProgress

MODES = ("kl", "kl_reverse", "centered", "whitened")
ARCHS = ("b32", "l14")
TARGETS = ("txt", "img")
DEFAULT_LOGIT_SCALE = 100.0
OTHER = {"txt": "img", "img": "txt"}
META_KEY = b"kl_filter"


def column_name(mode: str, arch: str, target: str) -> str:
    return f"{mode}_{arch}_{target}"


def all_columns(modes=MODES, archs=ARCHS, targets=TARGETS) -> list[tuple[str, str, str]]:
    for m in modes:
        if m not in MODES:
            raise KLFilterError(f"--modes must be among {MODES}, got {m!r}")
    for t in targets:
        if t not in TARGETS:
            raise KLFilterError(f"--target must be among {TARGETS}, got {t!r}")
    return list(itertools.product(modes, archs, targets))


def kl_ceiling(stats, arch: str, target: str) -> float:
    """D_KL <= log N, N = the number of reference samples of the other modality."""
    return math.log(stats.num_samples(arch, OTHER[target]))


def compute_columns(targets_by_key: dict, stats, specs, logit_scale: float, device: str) -> dict:
    """Score columns for one shard from its target-modality embeddings (``{arch}_{target}`` → float16[n, d])."""
    from . import centered, density_ratio_kl, whitened

    out = {}
    for arch, target in dict.fromkeys((a, t) for _, a, t in specs):
        x = targets_by_key[f"{arch}_{target}"]
        modes = {m for m, a, t in specs if (a, t) == (arch, target)}
        other = OTHER[target]
        if modes & {"kl", "kl_reverse"}:
            kl, klr = density_ratio_kl(x, stats[f"{arch}_{other}_sample"], logit_scale=logit_scale, device=device)
            out[column_name("kl", arch, target)], out[column_name("kl_reverse", arch, target)] = kl, klr
        if "centered" in modes:
            out[column_name("centered", arch, target)] = centered(x, stats[f"{arch}_{target}_mean"], device=device)
        if "whitened" in modes:
            out[column_name("whitened", arch, target)] = whitened(
                x, stats[f"{arch}_{target}_mean"], stats[f"{arch}_{other}_cov"], device=device)
    wanted = {column_name(*s) for s in specs}
    for name in wanted:
        bad = ~np.isfinite(out[name])
        if bad.any():
            raise KLFilterError(f"score {name} is not finite for {int(bad.sum())} rows (row {int(np.flatnonzero(bad)[0])})")
    return {k: np.asarray(v, dtype=np.float32) for k, v in out.items() if k in wanted}


def score_shard(pool, shard, stats, specs, logit_scale: float = DEFAULT_LOGIT_SCALE, device: str = "cpu",
                data=None) -> tuple[object, dict]:
    """Read one shard's needed embeddings (one key at a time) and compute ``specs``' columns."""
    if data is None:
        data = pool.read(shard)
    cols: dict = {}
    for arch, target in dict.fromkeys((a, t) for _, a, t in specs):
        key = f"{arch}_{target}"
        emb = pool.read_embeddings(shard, [key], data.num_rows)
        sub = [s for s in specs if (s[1], s[2]) == (arch, target)]
        try:
            cols.update(compute_columns(emb, stats, sub, logit_scale, device))
        except KLFilterError as e:
            raise KLFilterError(str(e), shard.npz) from e
    return data, cols


def provenance(pool, stats, shard, rows: int, logit_scale: float) -> dict:
    return {"pool_fingerprint": pool.fingerprint, "stats_id": stats.stats_id, "logit_scale": logit_scale,
            "shard": shard.name, "rows": rows, "format": 1}


def score_path(scores_dir: str, shard) -> str:
    return f"{scores_dir.rstrip('/')}/{shard.name}.parquet"


def read_existing(path: str, expect: dict) -> dict:
    """Columns of an existing score file whose provenance matches ``expect`` (else ``{}``)."""
    import fsspec

    fs, p = fsspec.core.url_to_fs(path)
    if not fs.exists(p):
        return {}
    try:
        with fs.open(p, "rb") as f:
            table = pq.read_table(f)
        meta = json.loads((table.schema.metadata or {}).get(META_KEY, b"{}"))
    except (pa.ArrowException, OSError, ValueError):
        return {}  # unreadable or foreign: recomputed and replaced
    if meta != expect or table.num_rows != expect["rows"]:
        return {}
    return {c: table.column(c).to_numpy() for c in table.column_names if c != "uid"}


def write_scores(path: str, uid_column, columns: dict, meta: dict) -> None:
    table = pa.table({"uid": uid_column, **{k: pa.array(v, pa.float32()) for k, v in sorted(columns.items())}})
    table = table.replace_schema_metadata({META_KEY: json.dumps(meta, sort_keys=True).encode()})
    with atomic_open(path, "wb") as f:
        pq.write_table(table, f)


def ensure_shard_scores(pool, shard, stats, specs, scores_dir: str | None, logit_scale: float, device: str,
                        overwrite: bool = False) -> tuple[dict, bool]:
    """The score columns of one shard: reused from ``scores_dir`` when present and valid, else computed
    (and written there). Returns ``(columns, computed)``."""
    wanted = [column_name(*s) for s in specs]
    expect = provenance(pool, stats, shard, pool.row_counts[shard.index], logit_scale)
    have = {} if (overwrite or not scores_dir) else read_existing(score_path(scores_dir, shard), expect)
    missing = [s for s in specs if column_name(*s) not in have]
    if not missing:
        return {c: have[c] for c in wanted}, False
    data, new = score_shard(pool, shard, stats, missing, logit_scale, device)
    have.update(new)
    if scores_dir:
        write_scores(score_path(scores_dir, shard), data.columns["uid"], have, expect)
    return {c: have[c] for c in wanted}, True


def score_pool(pool, stats, scores_dir: str, specs, logit_scale: float = DEFAULT_LOGIT_SCALE, device: str = "cpu",
               num_workers: int = 1, overwrite: bool = False, progress=None) -> dict:
    """Write every shard's score file; returns counts of computed and reused shards."""
    import concurrent.futures as cf

    bar = (progress or NoProgress)(desc="score", total=len(pool))
    counts = {"computed": 0, "reused": 0}
    with cf.ThreadPoolExecutor(max(1, num_workers)) as ex:
        futs = [ex.submit(ensure_shard_scores, pool, s, stats, specs, scores_dir, logit_scale, device, overwrite)
                for s in pool.shards]
        for f in futs:
            _, computed = f.result()
            counts["computed" if computed else "reused"] += 1
            bar.update(1)
            bar.set_postfix(counts)
    bar.close()
    return counts
