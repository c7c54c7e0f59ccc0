"""NormSim (Wang et al., NeurIPS 2024): keep the pool's top fraction by NormSim_p, the p-norm of a row's image
similarities to target embeddings (``--norm inf``: the largest |similarity|). A declaration: the NormSim scorer
(:mod:`kl_filter.scores.normsim`) makes the column ``normsim_{norm}_{arch}``; this class says which cut."""

from __future__ import annotations

from typing import Literal

from ..scores.normsim import NormSimScorer
from .base import ScorerCut, check_cut


class NormSim(ScorerCut):
    """Top fraction by NormSim_p of the row's image embedding against --target_embeddings.

    target_embeddings: target image embeddings: .npy (N_t x D, unit rows) or DataComp's in1k_clip_vit_l14_{0..4}.pt
    arch: embedding family (its img embeddings are scored; the targets must have its width)
    norm: inf = largest |similarity| (the authors' NormSim∞); max = nearest target's (signed); 2 = sqrt(sum of squares)
    fraction: keep this top fraction of the pool, in (0, 1]
    threshold: keep rows with score >= threshold
    """

    name = "normsim"

    def __init__(self, target_embeddings: list[str] | None = None, arch: Literal["b32", "l14"] = "l14",
                 norm: Literal["inf", "max", "2"] = "inf", fraction: float | None = None, threshold: float | None = None):
        check_cut("normsim filter", fraction, threshold)
        self.arch, self.norm, self.fraction, self.threshold = arch, norm, fraction, threshold
        self.target_embeddings = list(target_embeddings) if target_embeddings else None
        self._scorer = NormSimScorer(arch, self.target_embeddings, norm)
        self.column = self._scorer.outputs()[0]

    def check_assets(self):
        self._scorer.targets(plan=True)  # read and validate the files once, before any pass (none given: the hint)
