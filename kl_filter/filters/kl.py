"""The KL-guided filter: keep the top fraction of the pool by a density-ratio score (SPEC §1–3).

A declaration: the KL scorer (:mod:`kl_filter.scores.kl`) makes the column, the runner computes or reuses the
statistics and scores; this class only says which column and which cuts.
"""

from __future__ import annotations

from typing import Literal

from ..errors import KLFilterError
from ..scores.kl import KLScorer, Mode, column_name
from ..text.langid import gcld3_english
from .base import Filter, Top, Uniform, check_cut
from .datacomp import clip_column, refine_by_text


class KLFilter(Filter):
    """Top fraction by a KL density-ratio score (D_KL, D_KLR, D_C, D_W) of CLIP embeddings.

    mode: the score: kl = D_KL, kl_reverse = D_KLR, centered = D_C, whitened = D_W
    arch: embedding family
    target: scored modality (txt: the caption scored against image samples)
    fraction: keep this top fraction of the pool, in (0, 1]
    threshold: keep rows with score >= threshold
    reverse: keep the bottom fraction instead
    uniform: flatten the score histogram instead of a top cut (needs --fraction)
    num_bins: bins for --uniform
    clip_score_fraction: intersect with the top CLIP-score fraction (same --arch)
    clip_score_threshold: intersect with CLIP score >= this (same --arch)
    english_filter: intersect with gcld3 English
    ties: keep = DataComp's >= rule; exact = the requested count, ties broken by --seed
    num_samples: reference samples per modality (instead of --sample_ratio)
    sample_ratio: reference sample share of caption-filtered rows (default 0.002)
    logit_scale: CLIP logit scale a (default: the temperature the pool's embedding model learned, recorded in embeddings.json; else 100)
    """

    name = "kl"
    refine_reason = "english (gcld3)"

    def __init__(self, mode: Mode = "kl", arch: Literal["b32", "l14"] = "l14", target: Literal["txt", "img"] = "txt",
                 fraction: float | None = None, threshold: float | None = None, reverse: bool = False,
                 uniform: bool = False, num_bins: int = 1000, clip_score_fraction: float | None = None,
                 clip_score_threshold: float | None = None, english_filter: bool = False,
                 ties: Literal["keep", "exact"] = "keep", num_samples: int | None = None,
                 sample_ratio: float | None = None, logit_scale: float | None = None):
        self.mode, self.arch, self.target, self.fraction, self.threshold = mode, arch, target, fraction, threshold
        self.reverse, self.uniform, self.num_bins, self.ties = reverse, uniform, num_bins, ties
        self.english_filter = english_filter
        self.clip_score_fraction, self.clip_score_threshold = clip_score_fraction, clip_score_threshold
        self.num_samples, self.sample_ratio, self.logit_scale = num_samples, sample_ratio, logit_scale
        check_cut("kl filter", fraction, threshold)
        for flag, given in (("--reverse", reverse), ("--ties exact", ties == "exact")):
            if uniform and given or threshold is not None and given:  # the flag would be silently ignored
                raise KLFilterError(f"{flag} does not apply with {'--uniform' if uniform else '--threshold'}")
        self.column = column_name(mode, arch, target)
        self.clip = clip_score_fraction is not None or clip_score_threshold is not None
        if self.clip:
            check_cut("kl filter", clip_score_fraction, clip_score_threshold, prefix="clip_score_")
        self.columns = (clip_column(arch),) if self.clip else ()
        self.refine_columns = ("text",) if english_filter else ()
        if not english_filter:
            self.refine = None  # nothing to refine: the runner skips that pass
        self.rules(), self.scorers()  # --uniform without --fraction, --logit_scale 0, ...: refused at construction

    def scorers(self):
        return (KLScorer([self.mode], self.arch, self.target, self.logit_scale, self.num_samples, self.sample_ratio),)

    def score(self, shard):
        return {c: shard[c] for c in (self.column, *self.columns)}

    def rules(self):
        cut = (Uniform(self.column, self.fraction, self.num_bins) if self.uniform else
               Top(self.column, self.fraction, self.threshold, self.reverse, self.ties))
        return [cut, Top(self.columns[0], self.clip_score_fraction, self.clip_score_threshold)] if self.clip else [cut]

    def refine(self, shard, keep):
        return refine_by_text(shard, keep, gcld3_english)
