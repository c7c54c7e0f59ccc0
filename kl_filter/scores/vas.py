"""VAS, the variance alignment score (Wang et al. 2023, ypwang61/VAS): column ``vas_{arch}``.

    VAS_i = f_iᵀ S f_i        f_i = the row's ``{arch}_img``, S = a target distribution's second moment

* ``target=embeddings``: S = (1/N_t) Σ_k t_k t_kᵀ over ``--target_embeddings`` (e.g. DataComp's ImageNet-1k
  L/14 features, the paper's VAS(ImageNet-1k)); provenance: the targets' content hash.
* ``target=pool``: S from the pool's own image embeddings, as the uncentred second moment of the same rows
  the KL statistics use (caption-filtered, SPEC §2): S = Σ·(n−1)/n + μμᵀ from the statistics' float64
  ``{arch}_img_mean`` and ``{arch}_img_cov`` (ddof=1) over n = ``filtered_rows``. So VAS(pool) costs no extra
  pass over the pool when the statistics exist, and its provenance is the statistics' moments hash.

The per-row arithmetic is a D × D quadratic form (float32 from float16 rows; CPU or CUDA), as D_W's.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from ..errors import KLFilterError
from .normsim import TargetsScorer, checked, quadratic_form
from .scorer import StatsNeed


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

    def __init__(self, arch: Literal["b32", "l14"] = "l14", target: Literal["embeddings", "pool"] = "embeddings",
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
        v = quadratic_form(shard[self.keys[0]], self.second_moment(stats), device)
        return {self.outputs()[0]: checked(self.outputs()[0], v)}
