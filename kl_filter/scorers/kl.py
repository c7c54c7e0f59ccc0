"""The density-ratio KL scorer: columns ``{mode}_{arch}_{target}`` of one embedding family and target
(docs/methods.md#the-kl-scores).

``target=txt`` scores the row's TEXT embedding against IMAGE reference samples (and, for D_C/D_W, the text mean
and the image covariance): the paper's best DataComp rows. D_KL and D_KLR depend on the family's samples and
the logit scale (by default the temperature the family's embedding model learned, recorded with the pool:
:mod:`kl_filter.pool.temperature`); D_C and D_W on the family's moments: each column records exactly that, so
changing the logit scale recomputes D_KL but reuses a stored D_C.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

from kl_filter.core.errors import KLFilterError
from kl_filter.scorers.base import ARCHS, Arch, DensityRatio, Scorer, StatsNeed  # noqa: F401  (ARCHS: the family list)

MODES = ("kl", "kl_reverse", "centered", "whitened")
MOMENT_MODES = ("centered", "whitened")
TARGETS = ("txt", "img")
OTHER = {"txt": "img", "img": "txt"}
Mode = Literal["kl", "kl_reverse", "centered", "whitened"]


def column_name(mode: str, arch: str, target: str) -> str:
    return f"{mode}_{arch}_{target}"


class KLScorer(DensityRatio, Scorer):
    """D_KL, D_KLR, D_C, D_W of CLIP embeddings against pool reference statistics.

    mode: the scores, one column each (kl = D_KL, kl_reverse = D_KLR, centered = D_C, whitened = D_W)
    arch: embedding family
    target: scored modality (txt: the caption scored against image samples)
    num_samples: reference samples per modality (instead of --sample_ratio)
    sample_ratio: reference sample share of caption-filtered rows (default 0.002)
    """

    name = "kl"
    gpu = True

    def __init__(self, mode: list[Mode] = ("kl",), arch: Arch = "l14", target: Literal["txt", "img"] = "txt",
                 num_samples: int | None = None, sample_ratio: float | None = None, **temperature):
        super().__init__(**temperature)
        if num_samples is not None and sample_ratio is not None:
            raise KLFilterError("give either --sample_ratio or --num_samples, not both")
        if num_samples is not None and num_samples < 1 or sample_ratio is not None and not 0 < sample_ratio <= 1:
            raise KLFilterError(f"--num_samples must be >= 1 and --sample_ratio in (0, 1], got {num_samples} "
                                f"and {sample_ratio}")
        self.mode = list(dict.fromkeys([mode] if isinstance(mode, str) else mode))
        self.arch, self.target, self.num_samples, self.sample_ratio = arch, target, num_samples, sample_ratio
        self.keys = (f"{arch}_{target}",)

    def outputs(self):
        return tuple(column_name(m, self.arch, self.target) for m in self.mode)

    def stats(self):
        return StatsNeed(self.arch, bool(set(self.mode) & set(MOMENT_MODES)), self.num_samples, self.sample_ratio)

    def provenance(self, column, stats):
        if column.startswith(MOMENT_MODES):
            return {"scorer": self.name, "moments_id": stats.moments_id(self.arch)}
        return {"scorer": self.name, **self.temperature_provenance(), "samples_id": stats.samples_id(self.arch)}

    def ceiling(self, column, stats):
        """D_KL <= log N, N = the number of reference samples of the other modality."""
        if column == column_name("kl", self.arch, self.target):
            return math.log(stats.num_samples(self.arch, OTHER[self.target]))
        return None

    def compute(self, shard, stats, device="cpu"):
        from kl_filter.kernels.kl import centered, density_ratio_kl, whitened

        x, a, t, other = shard[self.keys[0]], self.arch, self.target, OTHER[self.target]
        out = {}
        if {"kl", "kl_reverse"} & set(self.mode):
            out["kl"], out["kl_reverse"] = density_ratio_kl(x, stats[f"{a}_{other}_sample"],
                                                            logit_scale=self.scale, device=device)
        if "centered" in self.mode:
            out["centered"] = centered(x, stats[f"{a}_{t}_mean"], device=device)
        if "whitened" in self.mode:
            out["whitened"] = whitened(x, stats[f"{a}_{t}_mean"], stats[f"{a}_{other}_cov"], device=device)
        cols = {}
        for m in self.mode:
            v = np.asarray(out[m], dtype=np.float32)
            bad = np.flatnonzero(~np.isfinite(v))
            if bad.size:  # never a silent NaN/inf score (docs/methods.md#numerics)
                raise KLFilterError(f"score {column_name(m, a, t)} is not finite for {bad.size} rows (row {bad[0]})")
            cols[column_name(m, a, t)] = v
        return cols
