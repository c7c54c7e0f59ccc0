"""The reference-statistics pass (SPEC §2): one streaming pass over the pool.

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
for another pool (:func:`load_stats`).
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from dataclasses import dataclass

import logging

import fsspec
import numpy as np

from ..atomic import write_bytes
from ..errors import KLFilterError
from ..pool import EMBED_DIMS, Pool
from ..text.caption import caption_filter

log = logging.getLogger(__name__)
ARCHS = ("b32", "l14")
MODS = ("img", "txt")
DEFAULT_SAMPLE_RATIO = 0.002
_BLOCK = 65536


def splitmix64(x: np.ndarray) -> np.ndarray:
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def sample_keys(uids: np.ndarray, seed: int, stream: int) -> np.ndarray:
    """A uniform 64-bit key per row, a pure function of (seed, stream, uid)."""
    with np.errstate(over="ignore"):
        base = splitmix64(np.uint64(seed & 0xFFFFFFFFFFFFFFFF) * np.uint64(4) + np.uint64(stream))
        return splitmix64(splitmix64(uids["f0"] ^ base) ^ uids["f1"])


@dataclass
class _Partial:
    """One shard's contribution, per (arch, mod): candidate samples and float64 moments."""

    n: int
    candidates: dict  # name -> (keys u64[k], uids u8u8[k], emb f16[k, d])
    sums: dict        # name -> f64[d]
    outer: dict       # name -> f64[d, d]
    first_uid: tuple = (0, 0)  # the shard's smallest filtered uid: a canonical order for summing partials


@dataclass
class Stats:
    arrays: dict
    path: str | None = None

    def __getitem__(self, k):
        return self.arrays[k]

    @property
    def fingerprint(self) -> str:
        return str(self.arrays["pool_fingerprint"])

    def _digest(self, keys) -> str | None:
        import hashlib

        keys = sorted(k for k in keys if k in self.arrays)
        if not keys:
            return None
        h = hashlib.sha256()
        for k in keys:
            h.update(k.encode())
            h.update(np.ascontiguousarray(self.arrays[k]).tobytes())
        return h.hexdigest()[:16]

    @property
    def archs(self) -> list[str]:
        return [str(a) for a in self.arrays.get("archs", [])]

    def samples_id(self, arch: str) -> str | None:
        """Content hash of one family's reference samples (what its D_KL and D_KLR depend on)."""
        return self._digest([f"{arch}_{m}_sample" for m in MODS])

    def moments_id(self, arch: str) -> str | None:
        """Content hash of one family's means and covariances (what its D_C and D_W depend on)."""
        return self._digest([f"{arch}_{m}_{k}" for m in MODS for k in ("mean", "cov")])

    def has_moments(self, arch: str) -> bool:
        return self.moments_id(arch) is not None

    def sampling(self) -> dict:
        """The parameters the samples were drawn with (a managed file is redrawn when they change).

        ``num_samples`` is the N that was asked for (``num_samples_asked``; files older than that field hold only
        the N drawn, which is the same unless fewer rows passed the caption filter than were asked for)."""
        asked = int(self.arrays.get("num_samples_asked", -1))
        return {"seed": int(self.arrays["seed"]),
                "num_samples": asked if asked > 0 else int(self.arrays["num_samples"]),
                "sample_ratio": float(self.arrays["sample_ratio"]), "caption_filter": bool(self.arrays["caption_filter"])}

    def num_samples(self, arch: str, mod: str) -> int:
        return int(self.arrays[f"{arch}_{mod}_sample"].shape[0])


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
    from ..engines import single_blas_thread

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
        if n < 2:
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
    fs, p = fsspec.core.url_to_fs(path)
    if reuse and fs.exists(p):
        try:
            with fs.open(p, "rb") as f, np.load(io.BytesIO(f.read()), allow_pickle=False) as z:
                if json.loads(str(z["provenance"])) == prov:
                    names = {k.split(".")[0] for k in z.files if "." in k}
                    part = _Partial(int(z["n"]), {}, {}, {}, tuple(int(v) for v in z["first_uid"]))
                    for name in sorted(names):
                        part.candidates[name] = (z[f"{name}.keys"], z[f"{name}.uids"], z[f"{name}.emb"])
                        if plan.moments:
                            part.sums[name], part.outer[name] = z[f"{name}.sums"], z[f"{name}.outer"]
                    return part, False
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            pass  # unreadable or foreign partial: recomputed and replaced
    part = _shard_partial(pool, shard, plan)
    buf = io.BytesIO()
    np.savez(buf, **_partial_to_arrays(part, prov))
    write_bytes(path, buf.getvalue())
    return part, True


def _run(pool, plan: _Plan, num_workers, progress, parts_dir=None, reuse=True, engine=None):
    from ..engines import LocalEngine

    engine = engine or LocalEngine(num_workers, progress)
    results = engine.map(_cached_partial, [(pool, s, plan, parts_dir, reuse) for s in pool.shards], desc="stats")
    reused = sum(not computed for _, computed in results)
    if reused:
        log.info("statistics: %d shard partials reused, %d computed", reused, len(results) - reused)
    return [part for part, _ in results]


def parts_dir_for(path: str) -> str:
    """Where a statistics file's per-shard partials live while it is being computed."""
    return path + ".parts"


def save_stats(path: str, stats: Stats, remove_parts: bool = True) -> None:
    buf = io.BytesIO()
    np.savez(buf, **stats.arrays)
    write_bytes(path, buf.getvalue())
    stats.path = path
    if remove_parts:  # the final file is complete: the partials are no longer needed
        fs, p = fsspec.core.url_to_fs(parts_dir_for(path))
        if fs.exists(p):
            fs.rm(p, recursive=True)


def load_stats(path: str, pool: Pool | None = None, archs=(), moments: bool = False) -> Stats:
    """Load a statistics file; refuse one made for another pool or lacking a needed family (or, with
    ``moments``, lacking the mean and covariance)."""
    import fsspec

    try:
        with fsspec.open(path, "rb") as f:
            with np.load(io.BytesIO(f.read()), allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
    except FileNotFoundError as e:
        raise KLFilterError("statistics file not found", path) from e
    except (ValueError, OSError) as e:
        raise KLFilterError(f"not a statistics .npz ({e})", path) from e
    if "pool_fingerprint" not in arrays:
        raise KLFilterError("not a kl-filter statistics file (no pool_fingerprint)", path)
    stats = Stats(arrays, path)
    if pool is not None and stats.fingerprint != pool.fingerprint:
        raise KLFilterError(f"statistics were computed on another pool (fingerprint {stats.fingerprint}, "
                            f"this pool {pool.fingerprint})", path)
    for arch in archs:
        for mod in MODS:
            k = f"{arch}_{mod}_sample"
            if k not in arrays:
                raise KLFilterError(f"statistics lack {k!r} (computed for --arch {list(arrays.get('archs', []))})", path)
            if arrays[k].shape[1] != EMBED_DIMS[arch]:
                raise KLFilterError(f"{k!r} has dimension {arrays[k].shape[1]}, expected {EMBED_DIMS[arch]}", path)
            if moments and f"{arch}_{mod}_cov" not in arrays:
                raise KLFilterError(f"statistics lack the mean/covariance for {arch}_{mod} (computed without "
                                    "moments: rerun `kl-filter stats` without --no_moments)", path)
    return stats
