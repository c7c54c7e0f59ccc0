"""negCLIPLoss (Wang et al., NeurIPS 2024): keep the top fraction of the pool by the CLIP score minus its
in-batch log-normaliser (:mod:`kl_filter.scores.negcliploss`), batches drawn over the whole pool by ``--seed``;
optionally intersected with a NormSim cut (the paper's best DataComp-medium recipe: negCLIPLoss ∩ NormSim∞ with
ImageNet-1k targets), each cut over the whole pool independently, as every rule here."""

from __future__ import annotations

from typing import Literal

from ..errors import KLFilterError
from ..scores.negcliploss import DEFAULT_BATCH_SIZE, DEFAULT_PASSES, NegCLIPLossScorer
from ..scores.normsim import NormSimScorer
from .base import Filter, Top, check_cut


class NegCLIPLoss(Filter):
    """Top fraction by negCLIPLoss: the CLIP score minus its log-normaliser over random batches of the pool.

    arch: embedding family
    fraction: keep this top fraction of the pool, in (0, 1]
    threshold: keep rows with negCLIPLoss >= threshold
    batch_size: rows per random batch (>= the pool size: one batch, the whole pool)
    num_batches: random partitions (passes) averaged, each drawn from --seed
    logit_scale: a = 1/τ (default: the temperature the pool's embedding model learned, recorded in embeddings.json; else 100)
    target_embeddings: intersect with a NormSim cut against these target image embeddings (.npy or DataComp's .pt)
    norm: the NormSim norm (inf: largest |similarity|, the authors'; max: nearest target, signed; 2)
    normsim_fraction: keep the top fraction of the pool by NormSim too
    normsim_threshold: keep rows with NormSim >= this too
    """

    name = "negcliploss"

    def __init__(self, arch: Literal["b32", "l14"], fraction: float | None = None, threshold: float | None = None,
                 batch_size: int = DEFAULT_BATCH_SIZE, num_batches: int = DEFAULT_PASSES, logit_scale: float | None = None,
                 target_embeddings: list[str] | None = None, norm: Literal["inf", "max", "2"] = "inf",
                 normsim_fraction: float | None = None, normsim_threshold: float | None = None):
        check_cut("negcliploss", fraction, threshold)
        self.arch, self.fraction, self.threshold = arch, fraction, threshold
        self.batch_size, self.num_batches, self.logit_scale = batch_size, num_batches, logit_scale
        self.target_embeddings, self.norm = list(target_embeddings) if target_embeddings else None, norm
        self.normsim_fraction, self.normsim_threshold = normsim_fraction, normsim_threshold
        if self.target_embeddings or normsim_fraction is not None or normsim_threshold is not None:
            if not self.target_embeddings:
                raise KLFilterError("--normsim_fraction/--normsim_threshold need --target_embeddings (e.g. DataComp's "
                                   "in1k_clip_vit_l14_{0..4}.pt)")
            check_cut("negcliploss with --target_embeddings", normsim_fraction, normsim_threshold, prefix="normsim_")
        self.cut_columns = tuple(s.outputs()[0] for s in self.scorers())  # the scorers check their own parameters

    def scorers(self):
        ncl = NegCLIPLossScorer(self.arch, self.batch_size, self.num_batches, self.logit_scale)
        return (ncl, NormSimScorer(self.arch, self.target_embeddings, self.norm)) if self.target_embeddings else (ncl,)

    def check_assets(self):
        for s in self.scorers()[1:]:
            s.targets()  # read and validate the target files once, before any pass

    def score(self, shard):
        return {c: shard[c] for c in self.cut_columns}

    def rules(self):
        cuts = [(self.fraction, self.threshold), (self.normsim_fraction, self.normsim_threshold)]
        return [Top(c, f, t) for c, (f, t) in zip(self.cut_columns, cuts)]
