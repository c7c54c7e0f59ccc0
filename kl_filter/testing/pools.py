"""Small seeded DataComp-format pools for contract tests (a plugin author's own tests too): no test folder needed.

:func:`make_pool` writes ``{i:08d}.parquet`` + ``{i:08d}.npz`` shards: the rows of :func:`kl_filter.pool.synth.synth_pool`
(CLIP-like b32/l14/dedup embeddings, English, foreign and generic captions, web image sizes), plus a share of near
duplicate images (so a deduplication rule has something to remove), plus the npz keys and parquet columns a
plugin declares beyond DataComp's. :func:`strip_pool` copies a pool keeping only named columns and keys: a plugin
run on it proves it reads nothing it did not declare.
"""

from __future__ import annotations

import os
import shutil
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from kl_filter.core.atomic import atomic_open
from kl_filter.pool.reader import EMBED_DIMS

OTHER_WIDTH = 256  # an npz family of no fixed width (DataComp's "dedup" is 256)
NEAR_DUPLICATE_NOISE = 0.05  # norm of the noise added to a copied image embedding: cosine ~ 1 - 0.05²/2 = 0.99875


def _unit(rng, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16)


def _width(key: str, widths: dict) -> int:
    return int(widths.get(key) or EMBED_DIMS.get(key.split("_")[0], OTHER_WIDTH))


def make_pool(root, rows: int = 900, shards: int = 3, seed: int = 0, *, keys=(), columns: dict | None = None,
              duplicates: float = 0.02) -> str:
    """Write a pool of ``rows`` rows in ``shards`` shards into directory ``root`` (created; empty or absent);
    returns its path. Every value is a function of the arguments.

    keys: npz keys to add beside b32_img, b32_txt, l14_img, l14_txt and dedup: names (width from the family,
      512 for b32, 768 for l14, else 256) or ``{name: width}``; unit-norm float16 rows, seeded per shard and key
    columns: parquet columns to add, ``{name: fn(rng, n) -> values}`` (anything ``pyarrow.array`` takes)
    duplicates: share of rows whose image embeddings (every ``*_img`` key and ``dedup``) are another row's,
      possibly in another shard, plus noise of norm 0.05; their CLIP score columns are recomputed
    """
    from kl_filter.pool.synth import synth_pool

    if not 0 <= duplicates <= 0.5:
        raise ValueError(f"duplicates is a share of the rows in [0, 0.5], got {duplicates}")
    root = os.fspath(root)
    synth_pool(root, rows=rows, shards=shards, seed=seed, num_workers=1)
    widths = dict(keys) if isinstance(keys, dict) else {k: None for k in keys}
    names = [f"{i:08d}" for i in range(shards)]
    tables = [pq.read_table(f"{root}/{n}.parquet") for n in names]
    emb = []
    for n in names:
        with np.load(f"{root}/{n}.npz") as z:
            emb.append({k: z[k].copy() for k in z.files})
    sizes = [t.num_rows for t in tables]
    starts = np.concatenate([[0], np.cumsum(sizes)])
    rng = np.random.default_rng([seed, 0x6475706C])  # "dupl": a stream of its own
    m = int(round(duplicates * rows))
    picked = rng.choice(rows, size=2 * m, replace=False)
    changed = [set() for _ in names]
    for dst, src in zip(picked[:m], picked[m:]):
        ds, dr = int(np.searchsorted(starts, dst, side="right") - 1), int(dst)
        ss, sr = int(np.searchsorted(starts, src, side="right") - 1), int(src)
        dr, sr = dr - starts[ds], sr - starts[ss]
        for k in emb[ds]:
            if k.endswith("_img") or k == "dedup":
                x = emb[ss][k][sr].astype(np.float64)
                noise = rng.standard_normal(len(x))
                x = x + NEAR_DUPLICATE_NOISE * noise / np.linalg.norm(noise)
                emb[ds][k][dr] = (x / np.linalg.norm(x)).astype(np.float16)
        changed[ds].add(int(dr))
    for i, n in enumerate(names):
        table, e = tables[i], emb[i]
        for fam in EMBED_DIMS:  # DataComp's score columns: the cosine of the stored float16 embeddings
            col = f"clip_{fam}_similarity_score"
            if changed[i] and col in table.column_names and f"{fam}_img" in e:
                score = np.einsum("ij,ij->i", e[f"{fam}_img"].astype(np.float32), e[f"{fam}_txt"].astype(np.float32))
                table = table.set_column(table.column_names.index(col), col, pa.array(score, pa.float32()))
        for k in widths:
            if k not in e:
                e[k] = _unit(np.random.default_rng([seed, i, zlib.crc32(k.encode())]), sizes[i], _width(k, widths))
        for c, fn in (columns or {}).items():
            values = fn(np.random.default_rng([seed, i, zlib.crc32(c.encode()) ^ 0x636F6C]), sizes[i])
            table = table.append_column(c, values if isinstance(values, (pa.Array, pa.ChunkedArray))
                                        else pa.array(values))
        with atomic_open(f"{root}/{n}.npz", "wb") as f:
            np.savez(f, **e)
        with atomic_open(f"{root}/{n}.parquet", "wb") as f:
            pq.write_table(table, f)
    return root


def strip_pool(src, dst, columns=(), keys=()) -> Path:
    """Copy pool ``src`` into ``dst`` keeping only the ``uid`` column and ``columns`` in each parquet and only
    ``keys`` in each npz (no npz at all without keys), and the pool's ``embeddings.json`` (its models'
    temperatures); returns ``dst`` (a :class:`~pathlib.Path`)."""
    from kl_filter.pool import Pool
    from kl_filter.pool.temperature import MANIFEST

    src, dst = os.fspath(src), os.fspath(dst)
    os.makedirs(dst, exist_ok=True)
    pool = Pool(src)
    cols = ["uid", *(c for c in dict.fromkeys(columns) if c != "uid")]
    keys = list(dict.fromkeys(keys))
    for shard in pool.shards:
        table = pq.read_table(shard.parquet, columns=cols)
        with atomic_open(f"{dst}/{shard.name}.parquet", "wb") as f:
            pq.write_table(table, f)
        if keys:
            with np.load(shard.npz) as z, atomic_open(f"{dst}/{shard.name}.npz", "wb") as f:
                np.savez(f, **{k: z[k] for k in keys})
    if os.path.exists(f"{src}/{MANIFEST}"):
        shutil.copyfile(f"{src}/{MANIFEST}", f"{dst}/{MANIFEST}")
    return Path(dst)
