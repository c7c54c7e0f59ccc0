"""The score stage: every derived column a run's scorers declare, computed once per shard and resumed.

    per shard ──load (the scorers' parquet columns and npz keys)──▶ compute (each scorer that has work)
              ──write──▶ SCORES_DIR/<shard>.parquet   (atomic; uid + one float32 column per output)

Record shape of a score file: ``uid`` (string, the pool's row order) + float32 columns, and in the parquet
key-value metadata ``kl_filter`` a JSON ``{"format", "pool_fingerprint", "shard", "rows", "columns": {name:
provenance}}``. A column is reused, by any filter of any run, only when the shard facts match and its recorded
provenance equals what its scorer says now (:meth:`kl_filter.scorers.base.Scorer.provenance`); a file is
rewritten with the other valid columns it held, so runs of different filters add to one ``--scores_dir``.
Without a scores directory the columns stay in memory for the run (local engine only).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from kl_filter.core.atomic import atomic_open
from kl_filter.engines import worker_index
from kl_filter.core.errors import KLFilterError
from kl_filter.core.fspath import open_file, url_to_fs
from kl_filter.core.outputs import claim_dir

META_KEY = b"kl_filter"
FORMAT = 4


def score_path(scores_dir: str, shard) -> str:
    return f"{scores_dir.rstrip('/')}/{shard.name}.parquet"


def _shard_facts(pool, shard) -> dict:
    return {"format": FORMAT, "pool_fingerprint": pool.fingerprint, "shard": shard.name,
            "rows": pool.row_counts[shard.index]}


def stored_provenance(path: str, facts: dict) -> dict:
    """``{column: provenance}`` of an existing score file made for this shard (``{}`` when absent or foreign)."""
    from kl_filter.core.npyfile import check_regular_file

    fs, p = url_to_fs(path)
    try:
        if not fs.exists(p):
            return {}
        check_regular_file(fs, p, "score file")  # a FIFO or a directory there: one line, never opened
        with fs.open(p, "rb") as f:
            pf = pq.ParquetFile(f)
            meta = json.loads((pf.schema_arrow.metadata or {}).get(META_KEY, b"{}"))
            if any(meta.get(k) != v for k, v in facts.items()) or pf.metadata.num_rows != facts["rows"]:
                return {}
            names = set(pf.schema_arrow.names)
    except (pa.ArrowException, OSError, ValueError):
        return {}  # unreadable or foreign: recomputed and replaced
    return {c: p for c, p in meta.get("columns", {}).items() if c in names}


def read_columns(path: str, names) -> dict:
    """Float32 columns of a score file (through :mod:`kl_filter.pool.schema`: any other numeric type is cast to
    float32, a string or duplicated column is one line)."""
    from kl_filter.pool import schema

    try:
        with open_file(path, "rb") as f:
            pf = pq.ParquetFile(f)
            schema.check_columns(pf.schema_arrow, list(names), path)
            table = pf.read(columns=list(names))
    except KLFilterError:
        raise
    except (pa.ArrowException, OSError, KeyError) as e:
        raise KLFilterError(f"unreadable score file ({str(e).splitlines()[0][:200]})", path) from e
    return {c: schema.read_score(table.column(c), path, c) for c in names}


def write_scores(path: str, uid_column, columns: dict, meta: dict) -> None:
    table = pa.table({"uid": uid_column, **{k: pa.array(v, pa.float32()) for k, v in sorted(columns.items())}})
    table = table.replace_schema_metadata({META_KEY: json.dumps(meta, sort_keys=True).encode()})
    with atomic_open(path, "wb") as f:
        pq.write_table(table, f)


@dataclass
class ScoreColumns:
    """Where a run's derived columns are: a scores directory, or per-shard arrays held in memory."""

    names: tuple
    scores_dir: str | None = None
    in_memory: dict = field(default_factory=dict)  # shard name -> {column: float32[n]}
    computed: int = 0
    reused: int = 0
    provenance: dict = field(default_factory=dict)  # column -> its provenance in this run

    def temperatures(self) -> dict:
        """``{column: {"logit_scale", "source"}}`` of the density-ratio columns (what the sidecar records)."""
        return {c: {"logit_scale": p["logit_scale"], "source": p["logit_scale_source"]}
                for c, p in self.provenance.items() if "logit_scale_source" in p}

    def piece(self, shard) -> "ScoreColumns":
        """What one shard's task needs (its own in-memory columns, not the whole pool's)."""
        mem = {shard.name: self.in_memory[shard.name]} if shard.name in self.in_memory else {}
        return ScoreColumns(self.names, self.scores_dir, mem)

    def read(self, shard) -> dict:
        if not self.names:
            return {}
        if self.scores_dir is None:
            return dict(self.in_memory[shard.name])
        return read_columns(score_path(self.scores_dir, shard), self.names)


@dataclass(frozen=True)
class _Job:
    shard: object
    todo: tuple        # indices of the scorers with work on this shard
    keep: tuple        # valid stored columns (of any scorer) to carry over when the file is rewritten
    provenance: dict   # column -> provenance of every column the file will hold


def _check_outputs(scorer, cols: dict, rows: int, shard) -> dict:
    want = set(scorer.outputs())
    if set(cols) != want:
        raise KLFilterError(f"scorer {scorer.name!r} returned columns {sorted(cols)}, declared {sorted(want)}",
                            shard.parquet)
    out = {}
    for k, v in cols.items():
        v = np.asarray(v)
        if v.shape != (rows,) or v.dtype.kind not in "fiub":
            raise KLFilterError(f"scorer {scorer.name!r} column {k!r} has shape {v.shape} and dtype {v.dtype}, "
                                f"expected {rows} numbers", shard.parquet)
        out[k] = v.astype(np.float32, copy=False)
    return out


def run_scores(pool, scorers, stats, scores_dir: str | None, engine, device: str = "auto",
               overwrite: bool = False, seed: int = 0) -> ScoreColumns:
    """Compute (or reuse) every scorer's columns for every shard; see the module docstring. Bucket scorers
    (:mod:`kl_filter.stages.buckets`) run after the per-shard ones, over the whole pool at once."""
    from kl_filter.stages.buckets import BucketScorer, run_buckets

    names = tuple(dict.fromkeys(c for s in scorers for c in s.outputs()))
    result = ScoreColumns(names, scores_dir)
    if not scorers:
        return result
    for s in scorers:  # in this process, before any provenance: workers get the bound scorers
        s.bind(pool)
    if scores_dir is None and engine.remote:
        raise KLFilterError(f"--engine {engine.name} needs --scores_dir (on storage every node can read)")
    wanted = {}
    for s in scorers:
        for c in s.outputs():
            p = {**s.provenance(c, stats), **({"seed": seed} if getattr(s, "seeded", False) else {})}
            p = json.loads(json.dumps(p, sort_keys=True))  # as it reads back from the file
            if wanted.setdefault(c, p) != p:
                raise KLFilterError(f"two scorers of this run produce column {c!r} differently")
    result.provenance = wanted
    if scores_dir is not None:  # the marker proves the directory is ours (kl_filter.core.outputs)
        claim_dir(scores_dir, "scores")
    stored = {shard.name: {} if (scores_dir is None or overwrite) else
              stored_provenance(score_path(scores_dir, shard), _shard_facts(pool, shard)) for shard in pool.shards}

    def stale(scorer, shard) -> bool:
        return any(stored[shard.name].get(c) != wanted[c] for c in scorer.outputs())

    per_shard = [s for s in scorers if not isinstance(s, BucketScorer)]
    jobs = []
    for shard in pool.shards:
        todo = tuple(i for i, s in enumerate(per_shard) if stale(s, shard))
        fresh = {c for i in todo for c in per_shard[i].outputs()}
        keep = tuple(c for c in stored[shard.name] if c not in fresh)
        if todo:
            jobs.append(_Job(shard, todo, keep, {**{c: stored[shard.name][c] for c in keep},
                                                  **{c: wanted[c] for c in fresh}}))
    computed = {job.shard.name for job in jobs}
    devices = engine.devices(device if any(s.gpu for s in scorers) else "cpu")  # a GPU only for a GPU path
    if jobs:
        work = _Worker(pool, per_shard, stats, scores_dir, devices)
        done = engine.map(work, jobs, load=_Loader(pool, per_shard, scores_dir), desc="score", workers=len(devices),
                          num_gpus=1 if devices[0].startswith("cuda") else 0)
        if scores_dir is None:
            result.in_memory = {job.shard.name: cols for job, cols in zip(jobs, done)}
    for scorer in (s for s in scorers if isinstance(s, BucketScorer)):
        if not any(stale(scorer, shard) for shard in pool.shards):
            continue
        cols = run_buckets(pool, scorer, seed, scores_dir, wanted[scorer.outputs()[0]], engine, devices)
        computed |= set(cols)
        if scores_dir is None:
            for name, c in cols.items():
                result.in_memory.setdefault(name, {}).update(c)
        else:
            prov = {c: wanted[c] for c in scorer.outputs()}
            engine.map(_add_columns, [(pool, shard, scores_dir, cols[shard.name], prov) for shard in pool.shards],
                       desc=f"{scorer.name}: write")
    result.computed, result.reused = len(computed), len(pool) - len(computed)
    return result


def _add_columns(pool, shard, scores_dir: str, columns: dict, provenance: dict) -> None:
    """Write ``columns`` into a shard's score file, keeping the other valid columns it holds."""
    facts = _shard_facts(pool, shard)
    path = score_path(scores_dir, shard)
    stored = stored_provenance(path, facts)
    keep = [c for c in stored if c not in columns]
    cols = {**(read_columns(path, keep) if keep else {}), **columns}
    meta = {**facts, "columns": {**{c: stored[c] for c in keep}, **provenance}}
    write_scores(path, pool.read(shard).columns["uid"], cols, meta)


@dataclass
class _Loader:
    """Reads what one shard's pending scorers need (and the stored columns to carry over)."""

    pool: object
    scorers: list
    scores_dir: str | None

    def __call__(self, job: _Job):
        columns = [c for i in job.todo for c in self.scorers[i].columns]
        keys = list(dict.fromkeys(k for i in job.todo for k in self.scorers[i].keys))
        data = self.pool.read(job.shard, columns, keys)
        kept = read_columns(score_path(self.scores_dir, job.shard), job.keep) if job.keep else {}
        return data, kept


@dataclass
class _Worker:
    """Computes one shard's pending scorers and writes its score file (the unit a remote engine schedules)."""

    pool: object
    scorers: list
    stats: object
    scores_dir: str | None
    devices: list

    def __call__(self, job: _Job, loaded):
        data, cols = loaded
        device = self.devices[worker_index() % len(self.devices)]
        for i in job.todo:
            scorer = self.scorers[i]
            try:
                out = scorer.compute(data, self.stats, device)
            except KLFilterError as e:
                raise KLFilterError(str(e), job.shard.npz or job.shard.parquet) from e
            cols.update(_check_outputs(scorer, out, data.num_rows, job.shard))
        if self.scores_dir is None:
            return cols
        meta = {**_shard_facts(self.pool, job.shard), "columns": job.provenance}
        write_scores(score_path(self.scores_dir, job.shard), data.columns["uid"], cols, meta)
        return None
