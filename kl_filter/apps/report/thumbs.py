"""Thumbnails of the report's example rows, found in the pool's image shards (webdataset tars).

Each tar is streamed once (:func:`kl_filter.pool.tars.read_samples`, one sample in memory at a time); only
samples whose json ``uid`` is wanted are decoded. The thumbnail is the image shrunk to fit ``size`` × ``size`` (aspect kept), saved as ``thumbs/<uid>.jpg``.
A sample whose image does not decode is reported (logged) and shown without a thumbnail.
"""

from __future__ import annotations

import concurrent.futures as cf
import io
import json
import logging
import tarfile

from kl_filter.core.errors import KLFilterError, MissingDependency
from kl_filter.pool.tars import IMAGE_EXTS, list_tars, read_samples

log = logging.getLogger(__name__)


def _thumb(data: bytes, size: int) -> bytes:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        im = im.convert("RGB")
        im.thumbnail((size, size))
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=85)
    return buf.getvalue()


def _wanted_samples(path: str, wanted: set):
    """``(key, uid, {ext: bytes})`` of the wanted samples of one tar (extensions lower-cased)."""
    for key, parts in read_samples(path):
        parts = {e.lower(): v for e, v in parts.items()}
        try:
            uid = str(json.loads(parts["json"]).get("uid", "")).lower() if "json" in parts else ""
        except (ValueError, AttributeError):
            continue
        if uid in wanted:
            yield key, uid, parts


def _one_tar(path: str, wanted: set, size: int) -> dict:
    out = {}
    try:
        samples = list(_wanted_samples(path, wanted))
    except (tarfile.TarError, OSError, EOFError) as e:
        raise KLFilterError(f"unreadable tar ({e})", path) from e
    for key, uid, parts in samples:
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
    tars = list_tars(shards_dir)
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
