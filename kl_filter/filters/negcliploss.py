"""negCLIPLoss (Wang et al., NeurIPS 2024): keep the top fraction of the pool by the CLIP score minus its
in-batch log-normaliser (:mod:`kl_filter.scores.negcliploss`), batches drawn over the whole pool by ``--seed``."""

from __future__ import annotations

from typing import Literal

from ..scores.negcliploss import DEFAULT_BATCH_SIZE, DEFAULT_PASSES, NegCLIPLossScorer
from .base import Filter, Top, check_cut


class NegCLIPLoss(Filter):
    """Top fraction by negCLIPLoss: the CLIP score minus its log-normaliser over random batches of the pool.

    arch: embedding family
    fraction: keep this top fraction of the pool, in (0, 1]
    threshold: keep rows with negCLIPLoss >= threshold
    batch_size: rows per random batch (>= the pool size: one batch, the whole pool)
    num_batches: random partitions (passes) averaged, each drawn from --seed
    logit_scale: a = 1/τ (the paper's τ = 0.01)
    """

    name = "negcliploss"

    def __init__(self, arch: Literal["b32", "l14"], fraction: float | None = None, threshold: float | None = None,
                 batch_size: int = DEFAULT_BATCH_SIZE, num_batches: int = DEFAULT_PASSES, logit_scale: float = 100.0):
        check_cut("negcliploss", fraction, threshold)
        self.arch, self.fraction, self.threshold = arch, fraction, threshold
        self.batch_size, self.num_batches, self.logit_scale = batch_size, num_batches, logit_scale
        self.column = self.scorers()[0].outputs()[0]  # the scorer checks its own parameters here

    def scorers(self):
        return (NegCLIPLossScorer(self.arch, self.batch_size, self.num_batches, self.logit_scale),)

    def score(self, shard):
        return {self.column: shard[self.column]}

    def rules(self):
        return [Top(self.column, self.fraction, self.threshold)]
