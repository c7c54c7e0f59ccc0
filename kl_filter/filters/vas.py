"""VAS (Wang et al. 2023): keep the pool's top fraction by the variance alignment score f_iᵀ S f_i, S the second
moment of a target distribution: given embeddings (``--target_embeddings``, e.g. ImageNet-1k) or the pool's own
caption-filtered image embeddings (``--target pool``). A declaration over the VAS scorer
(:mod:`kl_filter.scores.vas`, column ``vas_{arch}``)."""

from __future__ import annotations

from typing import Literal

from ..scores.vas import VASScorer
from .base import ScorerCut, check_cut


class VAS(ScorerCut):
    """Top fraction by the variance alignment score f^T S f of the row's image embedding.

    target: embeddings = S from --target_embeddings; pool = S from the pool's own caption-filtered image embeddings
    target_embeddings: target image embeddings: .npy (N_t x D, unit rows) or DataComp's in1k_clip_vit_l14_{0..4}.pt
    arch: embedding family (its img embeddings are scored; the targets must have its width)
    fraction: keep this top fraction of the pool, in (0, 1]
    threshold: keep rows with score >= threshold
    """

    name = "vas"

    def __init__(self, target: Literal["embeddings", "pool"] = "embeddings", target_embeddings: list[str] | None = None,
                 arch: Literal["b32", "l14"] = "l14", fraction: float | None = None, threshold: float | None = None):
        check_cut("vas filter", fraction, threshold)
        self.target, self.arch, self.fraction, self.threshold = target, arch, fraction, threshold
        self.target_embeddings = list(target_embeddings) if target_embeddings else None
        self._scorer = VASScorer(arch, target, self.target_embeddings)
        self.column = self._scorer.outputs()[0]

    def check_assets(self):
        if self.target == "embeddings":
            self._scorer.targets(plan=True)  # read and validate the files once, before any pass (none given: the hint)
