"""The reference-statistics pass (docs/methods.md#reference-statistics): one streaming pass over the pool.

For each embedding family ``arch`` (b32, l14) and modality ``mod`` (img, txt), over the rows that pass
DataComp's caption filter (fastText English, more than one token, more than 5 characters):

* ``{arch}_{mod}_sample``: a uniform random sample WITHOUT replacement of those rows' embeddings (float16,
  as stored). The authors draw ``int(n·0.002)`` rows per shard WITH replacement from an unseeded global RNG;
  we draw ``round(ratio·n_filtered)`` rows over the whole pool without replacement (no duplicated reference
  points), by bottom-k sampling: every row gets a key from a 64-bit hash of (seed, family, modality, uid)
  and the N rows with the smallest keys win. The key depends on the row only, so the sample is identical
  whatever the number of workers or the order in which shards finish, and image and text samples are
  independent draws.
* ``{arch}_{mod}_mean`` / ``{arch}_{mod}_cov``: float64 mean and covariance (ddof=1) of ALL filtered rows,
  from per-shard float64 sums added in a canonical order (by each shard's smallest uid), so the
  arrays are bit-identical for any worker count, shard naming or shard order.

The file also records the seed, counts, the sampling parameters and the pool fingerprint, and is refused
for another pool (the file: :mod:`.statsfile`).
"""

from __future__ import annotations

import io
import json
import math
import os
from dataclasses import dataclass

import logging

import numpy as np
from fsspec.implementations.local import LocalFileSystem

from kl_filter.core.atomic import write_bytes
from kl_filter.core.errors import KLFilterError
from kl_filter.core.fspath import url_to_fs
from kl_filter.core.npyfile import NpzReader, check_regular_file, read_errors
from kl_filter.core.uids import UID_DTYPE
from kl_filter.core.hashing import sample_keys
from kl_filter.pool import EMBED_DIMS, Pool
from kl_filter.stats.statsfile import MODS, SMALL_MEMBER_BYTES, Stats, check_member, remove_parts_dir
from kl_filter.text.caption import caption_filter

log = logging.getLogger(__name__)
ARCHS = ("b32", "l14")
DEFAULT_SAMPLE_RATIO = 0.002
_BLOCK = 65536


@dataclass
class _Partial:
    """One shard's contribution, per (arch, mod): candidate samples and float64 moments."""

    n: int
    candidates: dict  # name -> (keys u64[k], uids u8u8[k], emb f16[k, d])
    sums: dict        # name -> f64[d]
    outer: dict       # name -> f64[d, d]
    first_uid: tuple = (0, 0)  # the shard's smallest filtered uid: a canonical order for summing partials


@dataclass(frozen=True)
class _Plan:
    """What every shard of one statistics pass does (also its partials' provenance)."""

    archs: tuple
    seed: int
    cand_share: float
    caption_filter: bool
    moments: bool
    device: str = "cpu"

    def provenance(self, pool, shard) -> dict:
        return {"pool_fingerprint": pool.fingerprint, "shard": shard.name, "archs": list(self.archs),
                "seed": self.seed, "cand_share": self.cand_share, "caption_filter": self.caption_filter,
                "moments": self.moments, "format": 3}


def _moments(x: np.ndarray, device: str) -> tuple[np.ndarray, np.ndarray]:
    """float64 row sum and Xᵀ X of float16 rows, blocked; on a GPU when ``device`` is one."""
    d = x.shape[1]
    if device.startswith("cuda"):
        import torch

        s = torch.zeros(d, dtype=torch.float64, device=device)
        o = torch.zeros((d, d), dtype=torch.float64, device=device)
        for i in range(0, len(x), _BLOCK):
            b = torch.from_numpy(x[i: i + _BLOCK]).to(device, non_blocking=True).double()
            s += b.sum(0)
            o += b.T @ b
        return s.cpu().numpy(), o.cpu().numpy()
    from kl_filter.engines import single_blas_thread

    s = np.zeros(d, np.float64)
    o = np.zeros((d, d), np.float64)
    with single_blas_thread():  # the same bits for any BLAS thread count (the blocks are fixed)
        for i in range(0, len(x), _BLOCK):
            b = x[i: i + _BLOCK].astype(np.float64)
            s += b.sum(axis=0)
            o += b.T @ b
    return s, o


def _shard_partial(pool: Pool, shard, plan: _Plan) -> _Partial:
    data = pool.read(shard, ["text"] if plan.caption_filter else [])
    mask = caption_filter(data.columns["text"].to_pylist()) if plan.caption_filter else np.ones(data.num_rows, bool)
    idx = np.flatnonzero(mask)
    uids = data.uids[idx]
    first = tuple(int(v) for v in np.sort(uids)[0]) if len(uids) else (2**64 - 1, 2**64 - 1)
    part = _Partial(len(idx), {}, {}, {}, first)
    for arch in plan.archs:
        for m_i, mod in enumerate(MODS):
            name = f"{arch}_{mod}"
            x = pool.read_embeddings(shard, [name], data.num_rows)[name][idx]
            if plan.moments:
                part.sums[name], part.outer[name] = _moments(x, plan.device)
            keys = sample_keys(uids, plan.seed, ARCHS.index(arch) * 2 + m_i)
            # keep a superset of this shard's possible winners: keys below a share comfortably above the ratio
            sel = (np.arange(len(keys)) if plan.cand_share >= 1
                   else np.flatnonzero(keys <= np.uint64(plan.cand_share * 2.0**64)))
            part.candidates[name] = (keys[sel], uids[sel], x[sel])
    return part


def compute_stats(pool: Pool, archs=ARCHS, sample_ratio: float | None = None, num_samples: int | None = None,
                  seed: int = 0, use_caption_filter: bool = True, num_workers: int = 1, progress=None,
                  parts_dir: str | None = None, reuse_parts: bool = True, moments: bool = True,
                  device: str = "cpu", engine=None) -> Stats:
    """One pass over ``pool``; see the module docstring for what is computed.

    With ``parts_dir``, each shard's partial result (moments and sample candidates) is written there
    atomically with its provenance, and a rerun reuses matching partials: an interrupted pass resumes.
    ``moments=False`` skips the mean and covariance (D_KL and D_KLR need only the samples; the covariance
    is the expensive part: 2·n·d² float64 flops). ``device`` may name a GPU for the float64 moments.
    """
    if sample_ratio is not None and num_samples is not None:
        raise KLFilterError("give either --sample_ratio or --num_samples, not both")
    if num_samples is None:
        sample_ratio = DEFAULT_SAMPLE_RATIO if sample_ratio is None else sample_ratio
        if not 0 < sample_ratio <= 1:
            raise KLFilterError(f"--sample_ratio must be in (0, 1], got {sample_ratio}")
    elif num_samples < 1:
        raise KLFilterError(f"--num_samples must be >= 1, got {num_samples}")
    for a in archs:
        if a not in EMBED_DIMS:
            raise KLFilterError(f"--arch must be among {tuple(EMBED_DIMS)}, got {a!r}")
    total_rows = sum(pool.row_counts)
    # Candidate share per shard: 2x the expected need plus slack; a shortfall triggers an exact second pass.
    want = num_samples if num_samples is not None else math.ceil(sample_ratio * total_rows)
    cand_share = min(1.0, 2.0 * want / max(total_rows, 1) + 64.0 / max(min(pool.row_counts), 1))
    for share in (cand_share, 1.0):  # a shortfall of candidates (astronomically rare) reruns with all rows
        plan = _Plan(tuple(archs), seed, share, use_caption_filter, moments, device)
        parts = _run(pool, plan, num_workers, progress, parts_dir, reuse_parts, engine)
        n = sum(p.n for p in parts)
        if n < 2:  # the same parameters fail again on this pool: its partials are of no use
            if parts_dir:
                remove_parts_dir(parts_dir)
            raise KLFilterError(f"only {n} rows pass the caption filter: no statistics can be computed "
                                "(use --no_caption_filter for non-English pools)", pool.metadata_dir)
        target = min(num_samples if num_samples is not None else max(1, round(sample_ratio * n)), n)
        if min(sum(len(p.candidates[k][0]) for p in parts) for k in parts[0].candidates) >= target:
            break
    out: dict = {}
    for arch in archs:
        for mod in MODS:
            name = f"{arch}_{mod}"
            keys = np.concatenate([p.candidates[name][0] for p in parts])
            uids = np.concatenate([p.candidates[name][1] for p in parts])
            emb = np.concatenate([p.candidates[name][2] for p in parts])
            order = np.lexsort((uids["f1"], uids["f0"], keys))[:target]
            order = order[np.lexsort((uids["f1"][order], uids["f0"][order]))]  # stored in uid order
            out[f"{name}_sample"] = emb[order]
            out[f"{name}_sample_uids"] = uids[order]
            if moments:
                s = np.zeros_like(parts[0].sums[name])
                o = np.zeros_like(parts[0].outer[name])
                # summed in the order of each shard's smallest uid: bit-identical float64 results for any worker
                # count and any shard naming or order
                for p in sorted(parts, key=lambda q: q.first_uid):
                    s += p.sums[name]
                    o += p.outer[name]
                mean = s / n
                cov = (o - n * np.outer(mean, mean)) / (n - 1)
                out[f"{name}_mean"] = mean
                out[f"{name}_cov"] = (cov + cov.T) / 2
    out.update(seed=np.int64(seed), filtered_rows=np.int64(n), pool_rows=np.int64(total_rows),
               num_samples=np.int64(target), num_samples_asked=np.int64(-1 if num_samples is None else num_samples),
               sample_ratio=np.float64(sample_ratio if num_samples is None else -1),
               caption_filter=np.bool_(use_caption_filter), archs=np.array(list(archs)),
               pool_fingerprint=np.array(pool.fingerprint), sampling=np.array("bottom-k without replacement"))
    return Stats(out)


def _partial_to_arrays(part: _Partial, provenance: dict) -> dict:
    out = {"n": np.int64(part.n), "first_uid": np.array(part.first_uid, dtype=np.uint64),
           "provenance": np.array(json.dumps(provenance, sort_keys=True))}
    for name, (keys, uids, emb) in part.candidates.items():
        out.update({f"{name}.keys": keys, f"{name}.uids": uids, f"{name}.emb": emb})
        if name in part.sums:
            out.update({f"{name}.sums": part.sums[name], f"{name}.outer": part.outer[name]})
    return out


def _cached_partial(pool, shard, plan: _Plan, parts_dir, reuse: bool = True) -> tuple[_Partial, bool]:
    """A shard's partial, reused from ``parts_dir`` when its provenance matches (resume), else computed."""
    if parts_dir is None:
        return _shard_partial(pool, shard, plan), True
    prov = plan.provenance(pool, shard)
    path = f"{parts_dir.rstrip('/')}/{shard.name}.npz"
    fs, p = url_to_fs(path)
    if reuse and (os.path.lexists(p) if isinstance(fs, LocalFileSystem) else fs.exists(p)):
        try:
            size = check_regular_file(fs, p, "statistics partial")  # a FIFO would block: never opened
            with fs.open(p, "rb") as f:
                part = read_partial(f, size, prov, pool.row_counts[shard.index], plan)
            if part is not None:
                return part, False
            log.debug("%s: statistics partial made with other parameters; recomputed", path)
        except (KLFilterError, *read_errors()) as e:  # not what it claims: recomputed and replaced
            log.warning("%s: statistics partial unusable (%s); recomputed", path,
                        str(e).splitlines()[0][:200] if str(e) else type(e).__name__)
    part = _shard_partial(pool, shard, plan)
    buf = io.BytesIO()
    np.savez(buf, **_partial_to_arrays(part, prov))
    write_bytes(path, buf.getvalue())
    return part, True


def read_partial(f, size: int, prov: dict, rows: int, plan: _Plan) -> _Partial | None:
    """A shard's partial from an open ``.parts/<shard>.npz``: None when made with other parameters; ValueError
    when it is not what it claims (every member's header is checked against the shard's row count and the
    family's width before any data is inflated)."""
    with NpzReader(f, size) as z:
        if "provenance" not in z:
            raise ValueError("no provenance")
        stored = z.read("provenance", check=lambda h: check_member(h, "provenance", kinds="U", max_bytes=SMALL_MEMBER_BYTES))
        if json.loads(str(stored)) != prov:
            return None
        want = {f"{a}_{m}" for a in plan.archs for m in MODS}
        names = {k.split(".")[0] for k in z.files if "." in k}
        if names != want:
            raise ValueError(f"holds families {sorted(names)}, expected {sorted(want)}")
        n = z.read("n", check=lambda h: check_member(h, "n", (), kinds="iu"))
        first = z.read("first_uid", check=lambda h: check_member(h, "first_uid", (2,), kinds="u"))
        part = _Partial(int(n), {}, {}, {}, tuple(int(v) for v in first))
        if not 0 <= part.n <= rows:
            raise ValueError(f"counts {part.n} filtered rows, the shard has {rows}")
        for name in sorted(names):
            d = EMBED_DIMS[name.split("_")[0]]
            k = z.header(f"{name}.keys").shape[:1] or (None,)
            if k[0] is None or k[0] > rows:
                raise ValueError(f"member '{name}.keys' has shape {z.header(f'{name}.keys').shape} for {rows} rows")
            part.candidates[name] = (
                z.read(f"{name}.keys", check=lambda h, key=f"{name}.keys": check_member(h, key, k, kinds="u")),
                z.read(f"{name}.uids", check=lambda h, key=f"{name}.uids": check_member(h, key, k, kinds="", allowed=(UID_DTYPE,))),
                z.read(f"{name}.emb", check=lambda h, key=f"{name}.emb": check_member(h, key, (k[0], d), kinds="f")))
            if plan.moments:
                part.sums[name] = z.read(f"{name}.sums", check=lambda h, key=f"{name}.sums": check_member(h, key, (d,), kinds="f"))
                part.outer[name] = z.read(f"{name}.outer",
                                          check=lambda h, key=f"{name}.outer": check_member(h, key, (d, d), kinds="f"))
    return part


def _run(pool, plan: _Plan, num_workers, progress, parts_dir=None, reuse=True, engine=None):
    from kl_filter.engines import LocalEngine

    engine = engine or LocalEngine(num_workers, progress)
    try:
        results = engine.map(_cached_partial, [(pool, s, plan, parts_dir, reuse) for s in pool.shards], desc="stats")
    except KLFilterError as e:
        if parts_dir is None:
            raise
        raise _after_failure(e, pool, plan, parts_dir) from e
    reused = sum(not computed for _, computed in results)
    if reused:
        log.info("statistics: %d shard partials reused, %d computed", reused, len(results) - reused)
    return [part for part, _ in results]


def _after_failure(err: KLFilterError, pool, plan, parts_dir: str) -> KLFilterError:
    """A pass stopped by a fault in some shard: keep only the partials a rerun can resume from (readable, made
    for this pool and these parameters), remove the rest (other parameters, temp files), and say so in the
    error's one line."""
    fs, root = url_to_fs(parts_dir)
    try:
        names = [n.rstrip("/").rsplit("/", 1)[-1] for n in fs.ls(root, detail=False)] if fs.isdir(root) else []
    except OSError:
        return err
    shards = {f"{s.name}.npz": s for s in pool.shards}
    kept = 0
    for n in names:
        shard, p = shards.get(n), f"{root.rstrip('/')}/{n}"
        valid = False
        if shard is not None:
            try:  # a FIFO or a bomb in the partials: never opened / inflated (read_partial checks headers)
                size = check_regular_file(fs, p, "statistics partial")
                with fs.open(p, "rb") as f:
                    valid = read_partial(f, size, plan.provenance(pool, shard), pool.row_counts[shard.index],
                                         plan) is not None
            except (KLFilterError, *read_errors()):
                valid = False
        if valid:
            kept += 1
        else:
            try:
                fs.rm(p, recursive=True)
            except OSError:
                pass
    if not kept:
        remove_parts_dir(parts_dir)
        return err
    return KLFilterError(f"{err} ({kept} valid statistics partial(s) of other shards kept in {parts_dir}: a rerun "
                         "with the same pool files and parameters resumes from them)")
