"""DataComp's metadata baselines (SPEC §6), with the rules of DataComp's ``baselines/apply_filter.py``.

Expensive per-row checks (language ID) run in ``refine`` on the rows the cheap rules already keep: the
result is the same AND, computed on fewer rows.
"""

from __future__ import annotations

import numpy as np

from ..errors import KLFilterError
from ..text.langid import fasttext_english, gcld3_english
from .base import Filter, Keep, Top, check_fraction, check_threshold

ARCHS = ("b32", "l14")
LAION2B_THRESHOLD = 0.28


def clip_column(arch: str) -> str:
    if arch not in ARCHS:
        raise KLFilterError(f"--arch must be one of {ARCHS}, got {arch!r}")
    return f"clip_{arch}_similarity_score"


def texts_at(data, keep: np.ndarray) -> tuple[np.ndarray, list[str]]:
    idx = np.flatnonzero(keep)
    col = data.columns["text"]
    return idx, col.take(idx).to_pylist()


def refine_by_text(data, keep: np.ndarray, check) -> np.ndarray:
    """``keep`` narrowed to the candidates whose caption passes ``check(texts) -> bool array``."""
    idx, texts = texts_at(data, keep)
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
    """Top fraction (or ``>= threshold``) by the pool's CLIP B/32 or L/14 cosine column."""

    name = "clip_score"

    def __init__(self, arch: str, fraction: float | None = None, threshold: float | None = None):
        if (fraction is None) == (threshold is None):
            raise KLFilterError("clip_score needs exactly one of --fraction or --threshold")
        check_fraction(fraction)
        check_threshold(threshold)
        self.arch, self.fraction, self.threshold = arch, fraction, threshold
        self.columns = (clip_column(arch),)

    def score(self, data):
        return {self.columns[0]: data.columns[self.columns[0]]}

    def rules(self):
        return [Top(self.columns[0], fraction=self.fraction, threshold=self.threshold)]


class Laion2B(Filter):
    """CLIP B/32 cosine >= 0.28 AND English by gcld3 (DataComp's reproduction of LAION-2B's rule)."""

    name = "laion2b"
    columns = ("clip_b32_similarity_score",)
    refine_columns = ("text",)
    parallel = "processes"  # gcld3 is a Python loop per caption

    def score(self, data):
        return {"clip_b32_similarity_score": data.columns["clip_b32_similarity_score"]}

    def rules(self):
        return [Top("clip_b32_similarity_score", threshold=LAION2B_THRESHOLD)]

    def refine(self, data, keep):
        return refine_by_text(data, keep, gcld3_english)


class BasicFilter(Filter):
    """fastText English, > 2 words, > 5 characters, shorter side >= 200 px, aspect ratio <= 3."""

    name = "basic_filter"
    columns = ("text", "original_width", "original_height")
    refine_columns = ("text",)
    parallel = "processes"

    def __init__(self, fasttext_model: str | None = None):
        self.fasttext_model = fasttext_model

    def score(self, data):
        texts = data.columns["text"].to_pylist()
        words = np.fromiter((len(t.split()) for t in texts), dtype=np.int64, count=len(texts))
        chars = np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))
        w = data.columns["original_width"].astype(np.float64)
        h = data.columns["original_height"].astype(np.float64)
        lo, hi = np.minimum(w, h), np.maximum(w, h)
        with np.errstate(divide="ignore", invalid="ignore"):
            aspect = hi / lo  # inf or NaN for zero sizes: fails the rule, as in DataComp
        return {"basic": (words > 2) & (chars > 5) & (lo >= 200) & (aspect <= 3.0)}

    def rules(self):
        return [Keep("basic")]

    def refine(self, data, keep):
        return refine_by_text(data, keep, lambda texts: fasttext_english(texts, self.fasttext_model))
