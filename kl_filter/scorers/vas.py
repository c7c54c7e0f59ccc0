"""VAS, the variance alignment score (Wang et al. 2023, ypwang61/VAS): column ``vas_{arch}``.

    VAS_i = f_iᵀ S f_i        f_i = the row's ``{arch}_img``, S = a target distribution's second moment

* ``target=embeddings``: S = (1/N_t) Σ_k t_k t_kᵀ over ``--target_embeddings`` (e.g. DataComp's ImageNet-1k
  L/14 features, the paper's VAS(ImageNet-1k)); provenance: the targets' content hash.
* ``target=pool``: S from the pool's own image embeddings, as the uncentred second moment of the same rows
  the KL statistics use (caption-filtered: docs/methods.md#reference-statistics): S = Σ·(n−1)/n + μμᵀ from the
  statistics' float64
  ``{arch}_img_mean`` and ``{arch}_img_cov`` (ddof=1) over n = ``filtered_rows``. So VAS(pool) costs no extra
  pass over the pool when the statistics exist, and its provenance is the statistics' moments hash.

The per-row arithmetic is a D × D quadratic form, float32 from float16 rows: on the CPU :func:`second_moment_form`
(blocks of BLOCK_ROWS rows: one product with S and one row-wise dot, one BLAS thread; the engine runs shards in
parallel), on CUDA D_W's torch path with a zero mean.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from kl_filter.engines import single_blas_thread
from kl_filter.core.errors import KLFilterError
from kl_filter.scorers.normsim import TargetsScorer, checked, quadratic_form
from kl_filter.scorers.base import Arch, StatsNeed

BLOCK_ROWS = 2048  # rows per product with S: the float32 block and its product stay in cache (2 × 6 MB at D = 768)


@single_blas_thread()
def second_moment_form(rows: np.ndarray, s: np.ndarray, block_rows: int = BLOCK_ROWS) -> np.ndarray:
    """fᵀ S f (float32) for every row of ``rows`` (float16 or float32): ``BLOCK_ROWS`` rows at a time, a float32
    product with S and a row-wise dot with the rows. No centring pass (VAS has no mean, unlike D_W); one BLAS
    thread and fixed blocks, so the bits do not depend on the caller's threads or worker count."""
    s32 = np.ascontiguousarray(s, dtype=np.float32)
    n = len(rows)
    out = np.empty(n, np.float32)
    buf = np.empty((min(block_rows, max(n, 1)), s32.shape[1]), np.float32)
    for r0 in range(0, n, block_rows):
        x = np.asarray(rows[r0: r0 + block_rows], dtype=np.float32)
        y = np.matmul(x, s32, out=buf[: len(x)])
        out[r0: r0 + len(x)] = np.einsum("ij,ij->i", y, x)
    return out


def column_name(arch: str) -> str:
    return f"vas_{arch}"


def pool_second_moment(stats, arch: str) -> np.ndarray:
    """S = Σ·(n−1)/n + μμᵀ (float64): the mean of f fᵀ over the caption-filtered rows the statistics saw."""
    n = int(stats["filtered_rows"])
    if n < 2:
        raise KLFilterError(f"--target pool needs at least 2 caption-filtered rows, the statistics have {n}")
    mu = np.asarray(stats[f"{arch}_img_mean"], np.float64)
    return np.asarray(stats[f"{arch}_img_cov"], np.float64) * ((n - 1) / n) + np.outer(mu, mu)


class VASScorer(TargetsScorer):
    """VAS_i = f_i^T S f_i, S the second moment of target embeddings or of the pool's own image embeddings.

    arch: embedding family
    target: embeddings = S from --target_embeddings; pool = S from the pool's caption-filtered image embeddings
    target_embeddings: target embedding files (.npy N_t x D, or DataComp's in1k_clip_vit_l14_{0..4}.pt)
    """

    name = "vas"

    def __init__(self, arch: Arch = "l14", target: Literal["embeddings", "pool"] = "embeddings",
                 target_embeddings: list[str] | None = None):
        if target not in ("embeddings", "pool"):
            raise KLFilterError(f"--target must be embeddings or pool, got {target!r}")
        self.arch, self.target = arch, target
        self.target_embeddings = list(target_embeddings) if target_embeddings else None
        if target == "pool" and self.target_embeddings:
            raise KLFilterError("vas: give --target_embeddings or --target pool, not both")
        self.keys = (f"{arch}_img",)

    def outputs(self):
        return (column_name(self.arch),)

    def stats(self):
        return StatsNeed(self.arch, moments=True) if self.target == "pool" else None

    def provenance(self, column, stats):
        if self.target == "pool":
            return {"scorer": self.name, "target": "pool", "moments_id": stats.moments_id(self.arch)}
        return {"scorer": self.name, "target": "embeddings", "targets_id": self.targets(plan=True).digest}

    def second_moment(self, stats) -> np.ndarray:
        if self.target == "pool":
            return pool_second_moment(stats, self.arch)
        t = self.targets()
        return t.gram() / len(t)

    def compute(self, shard, stats, device="cpu"):
        from kl_filter.kernels.kl import _use_cuda

        x, s = shard[self.keys[0]], self.second_moment(stats)
        v = quadratic_form(x, s, device) if _use_cuda(device) else second_moment_form(np.asarray(x), s)
        return {self.outputs()[0]: checked(self.outputs()[0], v)}
