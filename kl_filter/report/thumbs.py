"""Thumbnails of the report's example rows, found in the pool's image shards (webdataset tars).

Each tar is streamed once, member by member (a sample's files are consecutive, grouped by key as webdataset
does); only samples whose json ``uid`` is wanted are decoded, so memory holds one sample at a time. The
thumbnail is the image shrunk to fit ``size`` × ``size`` (aspect kept), saved as ``thumbs/<uid>.jpg``.
A sample whose image does not decode is reported (logged) and shown without a thumbnail.
"""

from __future__ import annotations

import concurrent.futures as cf
import io
import json
import logging
import os
import tarfile

from ..errors import KLFilterError, MissingDependency

log = logging.getLogger(__name__)
IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")


def _samples(path: str):
    """``(key, {ext: bytes})`` per sample of one tar, in tar order, one sample in memory."""
    key, parts = None, {}
    try:
        with tarfile.open(path, "r|*") as tf:  # stream mode: no seeking, works on pipes and remote files
            for m in tf:
                if not m.isfile():
                    continue
                d, base = os.path.split(m.name)
                if base.startswith("."):
                    continue
                stem, _, ext = base.partition(".")
                k = os.path.join(d, stem)
                if k != key:
                    if key is not None:
                        yield key, parts
                    key, parts = k, {}
                parts[ext.lower()] = tf.extractfile(m).read()
    except (tarfile.TarError, OSError, EOFError) as e:
        raise KLFilterError(f"unreadable tar ({e})", path) from e
    if key is not None:
        yield key, parts


def _thumb(data: bytes, size: int) -> bytes:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        im = im.convert("RGB")
        im.thumbnail((size, size))
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=85)
    return buf.getvalue()


def _one_tar(path: str, wanted: set, size: int) -> dict:
    out = {}
    for key, parts in _samples(path):
        try:
            uid = json.loads(parts["json"]).get("uid", "") if "json" in parts else ""
        except ValueError:
            continue
        uid = str(uid).lower()
        if uid not in wanted:
            continue
        ext = next((e for e in IMAGE_EXTS if e in parts), None)
        if ext is None:
            continue
        try:
            out[uid] = _thumb(parts[ext], size)
        except Exception as e:  # noqa: BLE001 - any decoder failure: the example is shown without an image
            log.warning("%s: sample %r (uid %s): image does not decode (%s)", path, key, uid, e)
    return out


def make_thumbnails(shards_dir: str, uids, size: int = 128, num_workers: int = 2, progress=None) -> dict:
    """``{uid: jpeg bytes}`` for the wanted uids found in ``shards_dir/*.tar``."""
    try:
        import PIL  # noqa: F401
    except ImportError as e:
        raise MissingDependency("thumbnails need Pillow: pip install pillow") from e
    if not os.path.isdir(shards_dir):
        raise KLFilterError("shards directory does not exist", shards_dir)
    tars = sorted(os.path.join(shards_dir, f) for f in os.listdir(shards_dir) if f.endswith(".tar"))
    if not tars:
        raise KLFilterError("no .tar shards found", shards_dir)
    wanted = {u.lower() for u in uids}
    found: dict = {}
    bar = progress("report: thumbnails", len(tars)) if progress else None
    with cf.ThreadPoolExecutor(max(1, num_workers)) as ex:
        for got in ex.map(lambda p: _one_tar(p, wanted, size), tars):
            found.update(got)
            if bar:
                bar.update(1)
    if bar:
        bar.close()
    return found
