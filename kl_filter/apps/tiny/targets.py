"""The tiny track's target task for the informed-target filters (NormSim, VAS with given targets).

DataComp's informed-target filters (image_based; NormSim∞ and VAS with ImageNet-1k targets) embed the TRAIN
images of a downstream task (ImageNet-1k's 1.28M training images) and keep the pool's rows that look like them;
the task is then evaluated on its held-out images (ImageNet's validation set). Those feature files live in the
embedding space of OpenAI's L/14, not of the tiny teachers, so the track builds its own equivalent:

* target task: zero-shot classification of the real handwritten digits (the ``zs_digits`` metric);
* target images: the digit task's TRAIN split, :func:`.content.digit_split`'s ``teacher`` part (540 of sklearn's
  1,797 digits; disjoint from the 360 ``eval`` digits the students are scored on, and from the 897 ``pool``
  digits), each rendered once as the pool and the evaluation render digits (random offset, one in three
  inverted; own rng stream ``SPLIT_TARGETS``) and JPEG-encoded as the pool's images are;
* embeddings: the larger teacher's (family l14) unit image embeddings, computed exactly as the pool's
  (:class:`kl_filter.encoders.Embedder`), float32, written as an ``.npy`` ``N_t × 768`` in the work dir.

The evaluation digits are never rendered here: :func:`target_indices` is the train split only (tested).
"""

from __future__ import annotations

import hashlib
import os

import numpy as np

from kl_filter.apps.tiny.content import SPLIT_TARGETS, digit_split, digits_dataset, render_digit

TARGET_TASK = "digits"
TARGET_TASK_DOC = ("zero-shot classification of real handwritten digits (metric zs_digits); targets: the larger "
                   "teacher's (l14) image embeddings of the digits' TRAIN split (the 540 teacher-split digits, "
                   "disjoint from the 360 evaluation digits and the pool's digits)")


def target_indices(seed: int) -> np.ndarray:
    """Indices (into sklearn's digits) of the target task's train split: never an evaluation digit."""
    return np.asarray(digit_split(seed)["teacher"])


def target_images(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [n, 64, 64, 3] renders of the train split's digits (one each, seeded per digit) and their labels."""
    idx = target_indices(seed)
    images = np.stack([render_digit(np.random.default_rng([seed, SPLIT_TARGETS, int(i)]), int(i)) for i in idx])
    return images, digits_dataset()[1][idx]


def write_target_embeddings(path: str, seed: int, model: str, checkpoint: str, model_config: str,
                            family: str = "l14") -> dict:
    """Embed the target images with ``model``/``checkpoint`` (the pool's embedder, CPU) into ``path`` (.npy,
    float32, unit rows); returns the record kept in run.json (task, split, rows, dim, sha256 of the file)."""
    from kl_filter.core.atomic import atomic_open
    from kl_filter.encoders import Embedder, Sample
    from kl_filter.apps.tiny.shards import encode_jpeg

    images, labels = target_images(seed)
    emb = Embedder(model, checkpoint, device="cpu", model_config=model_config)
    samples = [Sample(key=f"t{k:05d}", uid=f"{k:032x}", text="", image=encode_jpeg(im)) for k, im in enumerate(images)]
    img = np.concatenate([emb.embed(samples[i: i + 512], 512, path)[0] for i in range(0, len(samples), 512)])
    img = img.astype(np.float64)
    img = (img / np.linalg.norm(img, axis=1, keepdims=True)).astype(np.float32)  # unit rows in float32
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_open(path, "wb") as f:
        np.save(f, img, allow_pickle=False)
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    return {"task": TARGET_TASK, "description": TARGET_TASK_DOC, "split": "train (digit_split 'teacher')",
            "family": family, "model": model, "rows": int(len(img)), "dim": int(img.shape[1]),
            "classes": {int(c): int((labels == c).sum()) for c in np.unique(labels)},
            "file": os.path.basename(path), "sha256": digest}
