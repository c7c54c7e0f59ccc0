"""The KL-guided filter: keep the top fraction of the pool by a density-ratio score (SPEC §1–3).

``mode`` picks the score (kl = D_KL, kl_reverse = D_KLR, centered = D_C, whitened = D_W), ``arch`` the
embedding family, ``target`` the scored modality (txt: the caption scored against image samples).
Statistics and scores are computed on the way when absent (``ctx.stats`` / ``ctx.scores_dir`` are read when
valid and written when not), then the usual rules apply: the KL cut (or ``uniform``), optionally intersected
with a CLIP-score cut computed over the whole pool, and optionally gcld3 English (in ``refine``).
"""

from __future__ import annotations

import logging
import os

from ..errors import KLFilterError
from ..scores.stage import (ARCHS, DEFAULT_LOGIT_SCALE, MODES, MOMENT_MODES, TARGETS, column_name, kl_ceiling,
                            resolve_devices, score_path, score_pool)
from .base import Filter, Top, Uniform, check_fraction, check_threshold
from .datacomp import clip_column, refine_by_text

log = logging.getLogger(__name__)


class KLFilter(Filter):
    """Top fraction by a KL density-ratio score (D_KL, D_KLR, D_C, D_W) of CLIP embeddings."""

    name = "kl"

    def __init__(self, mode: str = "kl", arch: str = "l14", target: str = "txt", fraction: float | None = None,
                 threshold: float | None = None, reverse: bool = False, uniform: bool = False, num_bins: int = 1000,
                 clip_score_fraction: float | None = None, clip_score_threshold: float | None = None,
                 english_filter: bool = False, ties: str = "keep", num_samples: int | None = None,
                 sample_ratio: float | None = None, logit_scale: float = DEFAULT_LOGIT_SCALE):
        if mode not in MODES or arch not in ARCHS or target not in TARGETS:
            raise KLFilterError(f"kl filter: --mode in {MODES}, --arch in {ARCHS}, --target in {TARGETS}")
        if (fraction is None) == (threshold is None):
            raise KLFilterError("kl filter needs exactly one of --fraction or --threshold")
        if uniform and fraction is None:
            raise KLFilterError("--uniform needs --fraction")
        if clip_score_fraction is not None and clip_score_threshold is not None:
            raise KLFilterError("give --clip_score_fraction or --clip_score_threshold, not both")
        if ties not in ("keep", "exact"):
            raise KLFilterError(f"--ties must be keep or exact, got {ties!r}")
        if num_bins < 1:
            raise KLFilterError(f"--num_bins must be >= 1, got {num_bins}")
        check_fraction(fraction)
        check_fraction(clip_score_fraction, "--clip_score_fraction")
        check_threshold(threshold)
        check_threshold(clip_score_threshold, "--clip_score_threshold")
        self.mode, self.arch, self.target = mode, arch, target
        self.fraction, self.threshold, self.reverse, self.ties = fraction, threshold, reverse, ties
        self.uniform, self.num_bins = uniform, num_bins
        self.clip_score_fraction, self.clip_score_threshold = clip_score_fraction, clip_score_threshold
        self.english_filter = english_filter
        self.num_samples, self.sample_ratio, self.logit_scale = num_samples, sample_ratio, logit_scale
        self.column = column_name(mode, arch, target)
        self._clip = clip_column(arch) if (clip_score_fraction is not None or clip_score_threshold is not None) else None
        self.columns = (self._clip,) if self._clip else ()
        self.refine_columns = ("text",) if english_filter else ()
        if not english_filter:
            self.refine = None  # nothing to refine: the runner skips the second pass
        self._stats = self._scores = None

    def setup(self, pool, ctx):
        from ..stats.reference import compute_stats, load_stats, parts_dir_for, save_stats

        engine = ctx.get_engine()
        if engine.remote and not ctx.scores_dir:
            raise KLFilterError("--engine ray needs --scores_dir (on storage every node can read)")
        path = ctx.stats or (os.path.join(ctx.scores_dir, "stats.npz") if ctx.scores_dir else None)
        moments = self.mode in MOMENT_MODES  # D_KL/D_KLR need only the samples: skip the costly covariance
        exists = bool(path) and not ctx.overwrite and _exists(path)
        archs, want_moments = [self.arch], moments
        if exists and ctx.stats:  # a file the user named: use it as it is, or say what it lacks
            self._stats = load_stats(path, pool, archs=[self.arch], moments=moments)
        elif exists:
            # a file this tool manages in --scores_dir: extend it (other families, moments) rather than lose it,
            # and redraw it when the sampling parameters asked for differ
            have = load_stats(path, pool)
            same = have.sampling() == self._sampling(ctx, have)
            if same and self.arch in have.archs and (not moments or have.has_moments(self.arch)):
                self._stats = have
            else:
                archs = sorted(set(have.archs) | {self.arch}) if same else [self.arch]
                want_moments = moments or (same and all(have.has_moments(a) for a in have.archs))
        if self._stats is None:
            self._stats = compute_stats(pool, archs=archs, sample_ratio=self.sample_ratio,
                                        num_samples=self.num_samples, seed=ctx.seed, num_workers=ctx.num_workers,
                                        progress=ctx.progress, parts_dir=parts_dir_for(path) if path else None,
                                        reuse_parts=not ctx.overwrite, moments=want_moments,
                                        device=resolve_devices(ctx.device, 1)[0], engine=engine)
            if path:
                save_stats(path, self._stats)
        else:
            log.debug("using statistics %s", path)
        self.stats_path = path
        # every shard's score through the overlapped pipeline; kept in memory (4 bytes a row) for the rules,
        # or, on a remote engine, left in the score files that each shard's task reads back
        counts = score_pool(pool, self._stats, ctx.scores_dir, [(self.mode, self.arch, self.target)],
                            self.logit_scale, ctx.device, ctx.num_workers, ctx.overwrite, ctx.progress,
                            keep=not engine.remote, engine=engine)
        self._scores = counts.pop("columns", None)
        self._scores_dir = ctx.scores_dir
        self.score_shards = counts

    def score(self, data):
        if self._scores is not None:
            cols = dict(self._scores[data.shard.name])
        else:
            import pyarrow.parquet as pq

            table = pq.read_table(score_path(self._scores_dir, data.shard), columns=[self.column])
            cols = {self.column: table.column(self.column).to_numpy()}
        if self._clip:
            cols[self._clip] = data.columns[self._clip]
        return cols

    def rules(self):
        ceiling = kl_ceiling(self._stats, self.arch, self.target) if self.mode == "kl" else None
        if self.uniform:
            rules = [Uniform(self.column, self.fraction, self.num_bins)]
        else:
            rules = [Top(self.column, self.fraction, self.threshold, self.reverse, self.ties, ceiling)]
        if self._clip:
            rules.append(Top(self._clip, self.clip_score_fraction, self.clip_score_threshold))
        return rules

    def refine(self, data, keep):
        from ..text.langid import gcld3_english

        return refine_by_text(data, keep, gcld3_english)

    def params(self):
        p = super().params()
        p.pop("column", None)
        p["score_column"] = self.column
        if self._stats is not None:
            p["stats_samples_id"] = self._stats.samples_id(self.arch)
            p["num_reference_samples"] = self._stats.num_samples(self.arch, "img" if self.target == "txt" else "txt")
        return p


    def _sampling(self, ctx, have) -> dict:
        """The sampling parameters this run asks for, in the form ``Stats.sampling()`` reports them."""
        from ..stats.reference import DEFAULT_SAMPLE_RATIO

        ratio = -1.0 if self.num_samples is not None else (self.sample_ratio or DEFAULT_SAMPLE_RATIO)
        num = self.num_samples if self.num_samples is not None else have.sampling()["num_samples"]
        if self.num_samples is None and ratio != have.sampling()["sample_ratio"]:
            num = -1
        return {"seed": ctx.seed, "num_samples": num, "sample_ratio": ratio, "caption_filter": True}


def _exists(path: str) -> bool:
    import fsspec

    fs, p = fsspec.core.url_to_fs(path)
    return fs.exists(p)
