"""The tiny track's webdataset tar shards: write samples as DataComp-style tars, read them back as arrays."""

from __future__ import annotations

import io
import json
import os

import numpy as np

from kl_filter.apps.tiny.content import IMAGE_SIZE


def encode_jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def write_shards(samples, out_dir: str, shard_size: int, prefix_url: str = "https://tiny.example") -> list[str]:
    """Write samples ({uid, caption, image, original_width/height, ...}) as DataComp-style webdataset tars."""
    import webdataset as wds

    from kl_filter.core.atomic import atomic_open, write_json

    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for s0 in range(0, len(samples), shard_size):
        shard = s0 // shard_size
        path = os.path.join(out_dir, f"{shard:08d}.tar")
        chunk = samples[s0: s0 + shard_size]
        with atomic_open(path, "wb") as f:
            # webdataset's writer (the track needs webdataset anyway; the write takes 1.2-1.6x tarfile's time, a
            # small share of drawing and encoding the pool: results/bench_tars.md); mtime 0: same seed, same bytes
            with wds.TarWriter(f, user="", group="", mode=0o444, mtime=0, encoder=False) as tw:
                for j, s in enumerate(chunk):
                    key = f"{shard:04d}{j:05d}"
                    meta = {"uid": s["uid"], "url": f"{prefix_url}/{s['uid'][:12]}.jpg", "caption": s["caption"],
                            "key": key, "original_width": int(s["original_width"]),
                            "original_height": int(s["original_height"]), "width": IMAGE_SIZE, "height": IMAGE_SIZE,
                            "status": "success"}
                    tw.write({"__key__": key, "jpg": encode_jpeg(s["image"]), "txt": s["caption"].encode(),
                              "json": json.dumps(meta).encode()})
        write_json(os.path.join(out_dir, f"{shard:08d}_stats.json"),
                   {"count": len(chunk), "successes": len(chunk), "failed_to_download": 0, "failed_to_resize": 0})
        paths.append(path)
    return paths


def load_pairs(shards_dir: str) -> tuple[np.ndarray, list[str], list[str]]:
    """Every sample of the tars in ``shards_dir``: uint8 images [n, 64, 64, 3], captions, uids (in tar order)."""
    from PIL import Image

    from kl_filter.pool.tars import list_tars
    from kl_filter.pool.embed import read_tar

    images, texts, uids = [], [], []
    for tar in list_tars(shards_dir):
        for s in read_tar(tar):
            with Image.open(io.BytesIO(s.image)) as im:
                im = im.convert("RGB")
                if im.size != (IMAGE_SIZE, IMAGE_SIZE):
                    im = im.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BICUBIC)
                images.append(np.asarray(im))
            texts.append(s.text)
            uids.append(s.uid)
    arr = np.stack(images) if images else np.zeros((0, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    return arr, texts, uids
