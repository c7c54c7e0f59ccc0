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


MOMENT_MODES = ("centered", "whitened")


def provenance(pool, stats, shard, rows: int, logit_scale: float) -> dict:
    """What a score file was made from. D_KL/D_KLR columns depend on the samples (``samples_id``), D_C/D_W
    columns on the means and covariances (``moments_id``): each column is reused only if its own inputs match."""
    return {"pool_fingerprint": pool.fingerprint, "logit_scale": logit_scale, "shard": shard.name, "rows": rows,
            "format": 3, "samples_id": {a: stats.samples_id(a) for a in stats.archs},
            "moments_id": {a: stats.moments_id(a) for a in stats.archs}}


def _column_valid(name: str, meta: dict, expect: dict) -> bool:
    """A column is valid when the statistics it was computed from (its family's samples, or its family's
    moments for D_C/D_W) are the ones in force now."""
    mode, arch = name.rsplit("_", 2)[0], name.rsplit("_", 2)[1]
    key = "moments_id" if mode in MOMENT_MODES else "samples_id"
    made, now = meta.get(key, {}).get(arch), expect[key].get(arch)
    return made is not None and made == now


def score_path(scores_dir: str, shard) -> str:
    return f"{scores_dir.rstrip('/')}/{shard.name}.parquet"


def read_existing(path: str, expect: dict, columns=None) -> dict:
    """Columns of an existing score file whose provenance matches ``expect`` (else ``{}``).

    The footer (provenance, row count, column names) is checked first; ``columns`` limits what is read.
    """
    import fsspec

    fs, p = fsspec.core.url_to_fs(path)
    if not fs.exists(p):
        return {}
    try:
        with fs.open(p, "rb") as f:
            pf = pq.ParquetFile(f)
            meta = json.loads((pf.schema_arrow.metadata or {}).get(META_KEY, b"{}"))
            base = [k for k in expect if k not in ("samples_id", "moments_id")]
            if any(meta.get(k) != expect[k] for k in base) or pf.metadata.num_rows != expect["rows"]:
                return {}
            names = [c for c in pf.schema_arrow.names if c != "uid" and (columns is None or c in columns)
                     and _column_valid(c, meta, expect)]
            table = pf.read(columns=names)
    except (pa.ArrowException, OSError, ValueError):
        return {}  # unreadable or foreign: recomputed and replaced
    return {c: table.column(c).to_numpy() for c in names}


def write_scores(path: str, uid_column, columns: dict, meta: dict) -> None:
    table = pa.table({"uid": uid_column, **{k: pa.array(v, pa.float32()) for k, v in sorted(columns.items())}})
    table = table.replace_schema_metadata({META_KEY: json.dumps(meta, sort_keys=True).encode()})
    with atomic_open(path, "wb") as f:
        pq.write_table(table, f)


def resolve_devices(device: str, num_workers: int) -> list[str]:
    """One entry per compute worker: every visible GPU for cuda, else ``num_workers`` CPU workers."""
    if device in ("auto", "cuda"):
        import importlib.util

        if importlib.util.find_spec("torch") is not None:
            import torch

            if torch.cuda.is_available():
                return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
        if device == "cuda":
            raise KLFilterError("--device cuda but no CUDA device is visible (or torch is not installed)")
    return ["cpu"] * max(1, num_workers)


def _load_job(pool, specs, job):
    shard, _, have = job
    data = pool.read(shard)
    missing = [s for s in specs if column_name(*s) not in have]
    keys = list(dict.fromkeys(f"{a}_{t}" for _, a, t in missing))
    return data, missing, pool.read_embeddings(shard, keys, data.num_rows)


def _work_job(stats, specs, scores_dir, logit_scale, device, job, loaded) -> dict:
    shard, expect, have = job
    data, missing, emb = loaded
    try:
        new = compute_columns(emb, stats, missing, logit_scale, device)
    except KLFilterError as e:
        raise KLFilterError(str(e), shard.npz) from e
    cols = {**have, **new}
    if scores_dir:
        write_scores(score_path(scores_dir, shard), data.columns["uid"], cols, expect)
    return {column_name(*s): cols[column_name(*s)] for s in specs}


def _score_job(pool, stats, specs, scores_dir, logit_scale, device, job) -> dict:
    """Load, compute and write one shard (the unit of work a remote engine schedules)."""
    return _work_job(stats, specs, scores_dir, logit_scale, device, job, _load_job(pool, specs, job))


def score_pool(pool, stats, scores_dir: str | None, specs, logit_scale: float = DEFAULT_LOGIT_SCALE,
               device: str = "auto", num_workers: int = 1, overwrite: bool = False, progress=None,
               keep: bool = False, engine=None) -> dict:
    """Score every shard through the overlapped pipeline (loaders decode the next shards while workers
    compute), writing ``scores_dir/<shard>.parquet`` when given. Shards whose score file already holds the
    wanted columns with matching provenance are skipped (resume). Returns counts, and with ``keep`` the
    columns per shard name (float32, a few bytes per row) for an in-memory selection.
    """
    from ..pipeline import run_pipeline

    wanted = [column_name(*s) for s in specs]
    columns: dict = {}
    todo = []
    for shard in pool.shards:
        expect = provenance(pool, stats, shard, pool.row_counts[shard.index], logit_scale)
        have = {}
        if scores_dir and not overwrite:
            path = score_path(scores_dir, shard)
            have = read_existing(path, expect, wanted)
            if len(have) == len(wanted):
                columns[shard.name] = have
                continue
            have = read_existing(path, expect)  # every column, so a rewrite keeps the others
        todo.append((shard, expect, have))
    bar = (progress or NoProgress)(desc="score", total=len(pool))
    counts = {"computed": len(todo), "reused": len(pool) - len(todo)}
    bar.update(counts["reused"])
    bar.set_postfix(counts)
    if engine is not None and engine.remote:  # one task per shard; a GPU each when the cluster has them
        bar.close()
        gpu = device in ("auto", "cuda") and engine.ray.cluster_resources().get("GPU", 0) > 0
        done = engine.map(_score_job, [(pool, stats, specs, scores_dir, logit_scale, "cuda" if gpu else "cpu", job)
                                       for job in todo], desc="score", num_gpus=1 if gpu else 0,
                          fetch=keep)
    else:
        devices = resolve_devices(device, num_workers)

        def work(w, job, loaded):
            out = _work_job(stats, specs, scores_dir, logit_scale, devices[w], job, loaded)
            bar.update(1)
            return out

        try:
            done = run_pipeline(todo, lambda job: _load_job(pool, specs, job), work, loaders=max(1, num_workers),
                                workers=len(devices), depth=max(2, len(devices)))
        finally:
            bar.close()
    if keep:
        for (shard, _, _), cols in zip(todo, done):
            columns[shard.name] = cols
        counts["columns"] = columns
    return counts
