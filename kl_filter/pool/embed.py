"""BYOD embedding: DataComp-format metadata (``<shard>.parquet`` + ``<shard>.npz``) for your own image-text shards.

Input: webdataset tars (DataComp names them ``{:08d}.tar``; any ``*.tar`` is accepted, the stem names the output
shard) whose samples carry an image (``.jpg``/``.jpeg``/``.png``/``.webp``), a caption (``.txt``) and a ``.json``
with the sample's ``"uid"`` (32 hex digits). Samples are grouped the webdataset way: the key is the member path up
to the first dot of its basename.

Output per input shard, rows in tar order (docs/formats.md#the-pool)::

    <shard>.parquet  uid, url, text, original_width, original_height (int64),
                     clip_<family>_similarity_score (float32, cosine of the two embeddings),
                     face_bboxes (list of [x1, y1, x2, y2]), sha256 (64 hex)
    <shard>.npz      <family>_img, <family>_txt  (float16, L2-normalised)

* ``url``, ``original_width``/``original_height``, ``face_bboxes`` and ``sha256`` come from the sample's json when
  it has them (img2dataset writes the size of the image *before* resizing there, which is what DataComp's
  columns hold); otherwise url is ``""``, the size is that of the decoded image, face_bboxes is empty and sha256
  is the hash of the stored image bytes. No face detector and no ``dedup`` features are computed.
* A second model ("family") embedded into an existing metadata directory ADDS its npz keys and its
  ``clip_<family>_similarity_score`` column; the other keys and columns are kept (the files are rewritten
  atomically). Rows are matched by uid; a shard whose uids differ from the existing parquet is an error.
* The model is an open_clip architecture loaded from a LOCAL checkpoint (a state dict, or a dict with
  ``"state_dict"`` as ``open_clip_train`` saves it); custom architectures are registered from ``--model_config``
  (a json file or a directory of them, passed to ``open_clip.add_model_config``). Nothing is downloaded.
* The cosine column is computed in float32 from the float32 unit vectors, before the float16 rounding of the npz.
* The model's temperature goes into ``embeddings.json`` beside the shards (:mod:`kl_filter.pool.temperature`):
  ``logit_scale = exp(model.logit_scale)`` as the checkpoint holds it, and ``logit_bias`` for sigmoid-loss models,
  so every density-ratio score of this family is computed at the model's own temperature by default.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tarfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from kl_filter.core.atomic import atomic_open
from kl_filter.core.errors import KLFilterError
from kl_filter.pool.tars import IMAGE_EXTS, list_tars, read_samples
from kl_filter.core.progress import NoProgress
from kl_filter.encoders import Embedder, Sample, check_family, default_family

log = logging.getLogger(__name__)

def read_tar(path: str) -> list[Sample]:
    """Every complete sample of one webdataset tar (a path or fsspec URL), in tar order."""
    try:
        groups = [(key, {e.lower(): v for e, v in parts.items()}) for key, parts in read_samples(path)]
    except (tarfile.TarError, OSError, EOFError) as e:
        raise KLFilterError(f"unreadable tar ({e})", path) from e
    out = []
    for key, parts in groups:
        img_ext = next((e for e in IMAGE_EXTS if e in parts), None)
        if img_ext is None or "txt" not in parts:
            log.warning("%s: sample %r has no image or no .txt: skipped", path, key)
            continue
        try:
            meta = json.loads(parts["json"]) if "json" in parts else {}
        except ValueError as e:
            raise KLFilterError(f"sample {key!r}: invalid json ({e})", path) from e
        uid = meta.get("uid")
        if not isinstance(uid, str) or len(uid) != 32:
            raise KLFilterError(f"sample {key!r}: json has no 32-hex-digit \"uid\" (got {uid!r})", path)
        out.append(Sample(key, uid.lower(), parts["txt"].decode("utf-8", errors="replace"), parts[img_ext], meta))
    return out


def _base_table(samples: list[Sample], sizes: np.ndarray) -> dict:
    def meta_int(s, k, fallback):
        v = s.meta.get(k)
        return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else int(fallback)

    return {
        "uid": pa.array([s.uid for s in samples], pa.string()),
        "url": pa.array([str(s.meta.get("url") or "") for s in samples], pa.string()),
        "text": pa.array([s.text for s in samples], pa.string()),
        "original_width": pa.array([meta_int(s, "original_width", w) for s, (w, _) in zip(samples, sizes)], pa.int64()),
        "original_height": pa.array([meta_int(s, "original_height", h) for s, (_, h) in zip(samples, sizes)], pa.int64()),
        "face_bboxes": pa.array([[[float(c) for c in b] for b in (s.meta.get("face_bboxes") or [])] for s in samples],
                                pa.list_(pa.list_(pa.float64()))),
        "sha256": pa.array([str(s.meta.get("sha256") or hashlib.sha256(s.image).hexdigest()) for s in samples],
                           pa.string()),
    }


def _read_existing(parquet: str, npz: str):
    """The existing shard to extend; every npz member's header is checked against the parquet's rows before it
    is inflated (an existing file may be anything: a FIFO, a bomb, a pickle)."""
    from kl_filter.core.npyfile import NpzReader, check_plain_dtype, local_file_problem, read_errors

    for path in (parquet, npz):
        problem = local_file_problem(path) if os.path.lexists(path) else None
        if problem:
            raise KLFilterError(f"existing file {problem}", path)
    try:
        table = pq.read_table(parquet)
    except (pa.ArrowException, OSError) as e:
        raise KLFilterError(f"existing parquet unreadable ({e})", parquet) from e

    def check(h):
        check_plain_dtype(h, kinds="f")
        if len(h.shape) != 2 or h.shape[0] != table.num_rows:
            raise ValueError(f"shape {h.shape}, but the parquet has {table.num_rows} rows")

    arrays = {}
    if os.path.exists(npz):
        try:
            with open(npz, "rb") as f, NpzReader(f, os.path.getsize(npz)) as z:
                arrays = {k: z.read(k, check=check) for k in z.files}
        except read_errors() as e:
            raise KLFilterError(f"existing npz unreadable ({e})", npz) from e
    return table, arrays


def write_shard(out_dir: str, name: str, samples: list[Sample], img: np.ndarray, txt: np.ndarray,
                sizes: np.ndarray, family: str) -> str:
    """Write (or extend) ``<name>.parquet`` + ``<name>.npz``; returns "created" or "extended"."""
    parquet, npz = os.path.join(out_dir, name + ".parquet"), os.path.join(out_dir, name + ".npz")
    col = f"clip_{family}_similarity_score"
    cos = np.einsum("ij,ij->i", img, txt).astype(np.float32)
    img16, txt16 = img.astype(np.float16), txt.astype(np.float16)
    if os.path.exists(parquet):
        table, arrays = _read_existing(parquet, npz)
        old = table.column("uid").to_pylist() if "uid" in table.column_names else None
        new = [s.uid for s in samples]
        if old is None or sorted(old) != sorted(new) or len(set(new)) != len(new):
            raise KLFilterError(f"existing metadata has other uids than {name}.tar ({len(old or [])} vs {len(new)} "
                                "rows): embed into an empty directory instead", parquet)
        if old != new:  # same samples in another order: follow the existing rows
            pos = {u: i for i, u in enumerate(new)}
            order = np.array([pos[u] for u in old])
            cos, img16, txt16 = cos[order], img16[order], txt16[order]
        for k, a in arrays.items():
            if a.shape[0] != len(new):
                raise KLFilterError(f"existing npz key {k!r} has {a.shape[0]} rows, parquet has {len(new)}", npz)
        if col in table.column_names:  # the same family again: replaced in place
            log.info("%s: replacing existing column %s", parquet, col)
            table = table.set_column(table.column_names.index(col), col, pa.array(cos, pa.float32()))
        else:
            table = table.append_column(col, pa.array(cos, pa.float32()))
        mode = "extended"
    else:
        cols = _base_table(samples, sizes)
        cols[col] = pa.array(cos, pa.float32())
        order = ["uid", "url", "text", "original_width", "original_height", col, "face_bboxes", "sha256"]
        table = pa.table({k: cols[k] for k in order})
        arrays = {}
        mode = "created"
    arrays[f"{family}_img"], arrays[f"{family}_txt"] = img16, txt16
    with atomic_open(npz, "wb") as f:
        np.savez(f, **arrays)
    with atomic_open(parquet, "wb") as f:
        pq.write_table(table, f)
    return mode


def embed_shards(shards_dir: str, out_dir: str, model: str, checkpoint: str, family: str | None = None,
                 batch_size: int = 256, device: str = "auto", model_config=None, progress=NoProgress,
                 embedder: Embedder | None = None) -> dict:
    """Embed every tar of ``shards_dir`` into ``out_dir``; returns a summary dict (rows, dims, timings)."""
    t0 = time.perf_counter()
    family = check_family(family or default_family(model))
    if batch_size < 1:
        raise KLFilterError(f"--batch_size must be >= 1, got {batch_size}")
    tars = list_tars(shards_dir)
    from kl_filter.core.fspath import url_to_fs
    from kl_filter.pool.temperature import MANIFEST, check_recorded_logit_scale, read_manifest, record_family

    read_manifest(*url_to_fs(os.path.join(out_dir, MANIFEST)))  # a broken manifest: stop before any work
    os.makedirs(out_dir, exist_ok=True)
    emb = embedder or Embedder(model, checkpoint, device, model_config)
    check_recorded_logit_scale(emb.logit_scale, f"{model}'s learned logit scale exp(logit_scale)", checkpoint)
    rows, modes, dim = 0, {}, None
    bar = progress(desc=f"embed {family}", total=len(tars))
    try:
        for tar in tars:
            name = os.path.splitext(os.path.basename(tar))[0]
            samples = read_tar(tar)
            img, txt, sizes = emb.embed(samples, batch_size, tar)
            dim = img.shape[1]
            modes[name] = write_shard(out_dir, name, samples, img, txt, sizes, family)
            rows += len(samples)
            bar.update(1)
    finally:
        bar.close()
    from kl_filter.pool.reader import EMBED_DIMS

    if family in EMBED_DIMS and dim is not None and dim != EMBED_DIMS[family]:
        log.warning("family %s is read as %d-d by the pool reader but this model gives %d-d embeddings",
                    family, EMBED_DIMS[family], dim)
    manifest = record_family(out_dir, family, {"model": model, "checkpoint": os.path.abspath(checkpoint)
                                               if checkpoint else checkpoint, "embed_dim": dim,
                                               "logit_scale": emb.logit_scale, "logit_bias": emb.logit_bias})
    return {"shards": len(tars), "rows": rows, "family": family, "dim": dim, "model": model,
            "checkpoint": checkpoint, "device": emb.device, "files": modes, "manifest": manifest,
            "logit_scale": emb.logit_scale, "logit_bias": emb.logit_bias,
            "seconds": round(time.perf_counter() - t0, 3)}
