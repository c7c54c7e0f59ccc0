"""SemDeDup (Abbas et al., 2023): drop the rows that are near-duplicates of an earlier row of their k-means
cluster (:mod:`kl_filter.scores.semdedup`). The stored column ``semdedup_{arch}_maxsim`` serves every ε: a row
is a duplicate when maxsim > 1 − ε (the paper's ``M > 1 - eps``), so the rule keeps maxsim <= 1 − ε."""

from __future__ import annotations

import math
from typing import Literal

from ..errors import KLFilterError
from ..scores.semdedup import DEFAULT_ITERATIONS, SemDeDupScorer, duplicate_threshold
from .base import Filter, Top


class SemDeDup(Filter):
    """Semantic deduplication: keep one row of each set of near-duplicate images (cosine > 1 − --eps).

    arch: embedding family whose image embeddings are clustered and compared
    eps: drop a row whose cosine to an earlier row of its cluster exceeds 1 − eps; in (0, 2)
    num_clusters: K, the number of k-means clusters (at most the pool's rows)
    keep: the member of a duplicate set that survives: hard (farthest from the centroid), easy, clip_score, random
    kmeans_iterations: Lloyd iterations of the spherical k-means (fixed)
    kmeans_init: k-means++ (seeded) or random (K distinct sample rows; for very large K)
    """

    name = "semdedup"

    def __init__(self, eps: float, num_clusters: int, arch: Literal["b32", "l14"] = "l14",
                 keep: Literal["hard", "easy", "clip_score", "random"] = "hard",
                 kmeans_iterations: int = DEFAULT_ITERATIONS,
                 kmeans_init: Literal["k-means++", "random"] = "k-means++"):
        if not (math.isfinite(eps) and 0.0 < eps < 2.0):
            raise KLFilterError(f"--eps must be in (0, 2) (a duplicate has cosine > 1 - eps), got {eps}")
        self.eps, self.num_clusters, self.arch, self.keep = eps, num_clusters, arch, keep
        self.kmeans_iterations, self.kmeans_init = kmeans_iterations, kmeans_init
        self.scorer = SemDeDupScorer(arch, num_clusters, keep, kmeans_iterations, kmeans_init)  # checks its own

    def scorers(self):
        return (self.scorer,)

    def score(self, shard):
        column = self.scorer.outputs()[0]
        return {column: shard[column]}

    def rules(self):
        return [Top(self.scorer.outputs()[0], threshold=duplicate_threshold(self.eps), reverse=True)]
