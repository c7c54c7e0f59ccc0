"""SemDeDup (Abbas et al., 2023): semantic deduplication by k-means clusters and within-cluster similarity.

    pool ──sample (bottom-k of a seeded uid hash: min(256·K, 1,000,000, n) rows)──▶ spherical k-means (seeded
         k-means++ init in NumPy, then fixed Lloyd iterations in faiss; float32, one thread)──▶ centroids f32[K, d]
         (SCORES_DIR/semdedup_centroids/<arch>_k<K>_<digest>.npz, with provenance; reused on resume)
    per shard ──nearest centroid (max cosine)──▶ Partition: bucket = cluster, order key = the keep rule
    per cluster (the bucket stage, :mod:`.buckets`) ──rows in key order──▶ maxsim_j = max_{i<j} cos(x_i, x_j)
         in blocks of 1024 × 4096 similarities (never the whole cluster's matrix), float32 products of
         float32-renormalised rows; the first row of a cluster gets -1
    ──▶ columns semdedup_{arch}_maxsim (float32) and semdedup_{arch}_cluster (the cluster id, exact in float32)

A row is a duplicate at ε when maxsim > 1 − ε (the paper's rule, ``M > 1 - eps``): one pass serves every ε.

Order within a cluster (``keep``): the member of a duplicate set that comes FIRST survives.
* ``hard`` (the paper's and NeMo Curator's default): by distance to the centroid, farthest first (the reference
  code's ``keep_hard=True``: ascending cosine to the centroid);
* ``easy``: nearest to the centroid first;
* ``clip_score``: highest ``clip_{arch}_similarity_score`` first (NaN last);
* ``random``: a seeded hash of the uid.
Each key is 64 bits: the sortable bits of the float32 value above, then 32 bits of a seeded uid hash, so ties
break the same way for any shard layout, worker count or engine.
"""

from __future__ import annotations

import concurrent.futures as cf
import functools
import hashlib
import io
import json
import logging
import os
from typing import Literal

import numpy as np

from kl_filter.engines import single_blas_thread
from kl_filter.core.errors import KLFilterError
from kl_filter.core.hashing import sample_keys, splitmix64
from kl_filter.core.half import to_float32
from kl_filter.scorers.base import Arch, BucketScorer, Partition

SAMPLE_PER_CLUSTER = 256        # k-means sample: 256 rows per centroid (faiss's max_points_per_centroid) ...
SAMPLE_CAP = 1_000_000          # ... at most this many rows (3 GB of float32 at d=768, twice in k-means++)
DEFAULT_ITERATIONS = 25         # faiss's default niter; no tolerance (faiss stops early only at a fixed point)
KMEANS_THREADS = 2              # faiss's Lloyd iterations: always 2 OpenMP threads (1.5x one thread at K = 50,
#                                 12,800 rows; a constant, never the core count: one result on any machine)
KMEANSPP_BLOCK = 4096           # sample rows per task of a k-means++ pass (fixed: the bits never depend on threads)
SEED_PER_CLUSTER = 32           # k-means++ draws its centres from 32·K of the sample's rows (then Lloyd on all)
BLOCK_ROWS = 512                # within-cluster similarities: BLOCK_ROWS × BLOCK_COLS float32 at a time (8 MB);
#                                 a block of rows is multiplied by itself whole (the upper half is masked): 1024
#                                 rows computed twice the products a 600-row cluster needs (8.3 -> 5.4 ms at 512)
BLOCK_COLS = 4096
GPU_BLOCK_ROWS = 4096           # the same step on a GPU (earlier_max_similarity_torch): 256 MB blocks
GPU_BLOCK_COLS = 16384
ASSIGN_BLOCK = 1 << 22          # nearest centroid: rows per block × K ≤ this many similarities (16 MB)
MAX_CLUSTERS = 1 << 24          # cluster ids are stored in a float32 column: exact up to 2**24
ALGORITHM = "semdedup-3"        # bump when a change alters the columns (2: faiss Lloyd iterations; 3: k-means++
                                # on 32·K rows): recomputed
KEEP = ("hard", "easy", "clip_score", "random")


def _salt(seed: int, what: int) -> int:
    with np.errstate(over="ignore"):
        return int(splitmix64(np.uint64(seed & 0xFFFFFFFFFFFFFFFF) ^ np.uint64(what)))


_SAMPLE_SALT = 0x73656D64656475  # "semdedu": the k-means sample's hash stream (not the statistics' or batches')
_ORDER_SALT = 0x6F72646572       # "order": ties within a cluster, and the random keep rule


def normalise_rows(x: np.ndarray) -> np.ndarray:
    """Float32 rows of unit norm (the pool's float16 rows are unit only to about 1e-3; zero rows stay zero)."""
    x = to_float32(x)  # a new array: divided in place
    norm = np.sqrt(np.einsum("ij,ij->i", x, x))
    x /= np.where(norm > 0, norm, 1)[:, None]
    return x


def _nearest(x: np.ndarray, c: np.ndarray, normalise: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(index of the nearest centroid by cosine, that cosine) for unit rows ``x`` (``normalise``: any rows, float16
    or float32) and unit centroids ``c``; blocks of rows so that at most ASSIGN_BLOCK similarities exist at a
    time; ties go to the lower index. With ``normalise`` the products are of the rows as given and only the
    chosen one is divided by the row's float32 norm: a row's scale never changes which centroid is nearest, and
    the rows are not rewritten divided (a third of the assignment's time)."""
    n = len(x)
    labels, sims = np.empty(n, np.int32), np.empty(n, np.float32)
    step = max(1, ASSIGN_BLOCK // max(len(c), 1))
    for r0 in range(0, n, step):
        xb = to_float32(x[r0: r0 + step]) if normalise else x[r0: r0 + step]
        s = xb @ c.T
        lab = s.argmax(axis=1)
        labels[r0: r0 + len(s)] = lab
        best = s[np.arange(len(s)), lab]
        if normalise:
            norm = np.sqrt(np.einsum("ij,ij->i", xb, xb))
            best /= np.where(norm > 0, norm, 1)
        sims[r0: r0 + len(s)] = best
    return labels, sims


def _kmeanspp(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Seeded greedy k-means++ (Arthur & Vassilvitskii 2007; greedy as scikit-learn's default) with the squared
    chord distance 2 − 2·cos of unit rows: the first centre uniformly; then ``2 + ln k`` candidates drawn with
    probability ∝ their squared distance to the nearest centre, and the one that lowers the total most is kept.
    Costs k passes over the sample ((2 + ln k)·k·m·d flops): for very large K, ``init="random"``.

    Each pass runs over blocks of KMEANSPP_BLOCK sample rows on every core (one BLAS thread each; the blocks'
    totals are added in block order, so the same bits for any thread count), against a transposed copy of the
    sample (d × m: the candidates' product runs 1.7× faster than against the rows)."""
    m = len(x)
    xt = np.ascontiguousarray(x.T)
    blocks = [slice(i, min(m, i + KMEANSPP_BLOCK)) for i in range(0, m, KMEANSPP_BLOCK)]
    trials = 2 + int(np.log(k))
    d2 = np.empty(m)

    def chord2(rows, b):  # squared chord distances of the sample rows ``rows`` to block b's rows: [len(rows), b]
        return np.maximum(0.0, 2.0 - 2.0 * (x[rows] @ xt[:, b]))

    def first(b, i):
        d2[b] = chord2([i], b)[0]

    def improve(b, cand):  # the block's distances with each candidate added, and their sums
        new = np.minimum(d2[b], chord2(cand, b))
        return new, new.sum(axis=1)

    with cf.ThreadPoolExecutor(os.cpu_count() or 1) as ex:
        chosen = [int(rng.integers(m))]
        list(ex.map(first, blocks, [chosen[0]] * len(blocks)))
        for _ in range(1, k):
            total = d2.sum()
            if total <= 0:  # every row sits on a centre (fewer distinct rows than k): any row not yet chosen
                left = np.setdiff1d(np.arange(m), chosen)
                cand = left[rng.integers(len(left))][None]
            else:
                cand = np.minimum(np.searchsorted(np.cumsum(d2), rng.random(trials) * total, side="right"), m - 1)
            parts = list(ex.map(improve, blocks, [cand] * len(blocks)))
            sums = parts[0][1].copy()
            for _, s in parts[1:]:
                sums += s
            best = int(np.argmin(sums))
            for b, (new, _) in zip(blocks, parts):
                d2[b] = new[best]
            chosen.append(int(cand[best]))
    return x[chosen].copy()


@single_blas_thread()
def spherical_kmeans(sample: np.ndarray, k: int, iterations: int = DEFAULT_ITERATIONS, seed: int = 0,
                     init: str = "k-means++") -> tuple[np.ndarray, dict]:
    """Spherical k-means (Lloyd iterations on the unit sphere: assign by largest cosine, centre = the normalised
    mean of its rows): our seeded initial centres (:func:`_kmeanspp` on a seeded random SEED_PER_CLUSTER·K of the
    sample's rows, or K distinct rows for ``init="random"``), then ``iterations`` Lloyd iterations by faiss
    (fewer when one leaves the objective exactly unchanged: faiss >= 1.14 stops at that fixed point)
    (``faiss.Clustering``, spherical, on an inner-product index: float32 products and float32 sums; 20× faster
    than the NumPy loop it replaced). Always KMEANS_THREADS OpenMP (and so BLAS) threads, whatever
    the machine's cores or the caller's setting, so the result depends on the data and seed only (a thread count
    may change the order of the float32 sums: an earlier faiss gave other centroids at 3 threads than at 1, 2 or
    4; with faiss 1.15 here 1 to 8 threads gave the same bits on every input tried). faiss never subsamples here
    (the sample is already drawn), and it re-seeds an emptied cluster by splitting a large one (its own seeded
    draw).

    k-means++ costs K passes over the rows it seeds from (memory-bound: 39 MB of float32 a pass for 12,800
    rows): on all 256·K sample rows it took 60% of SemDeDup's compute at K = 50. On 32·K rows (5 MB, in cache)
    it is 9× faster; the objective after the Lloyd iterations stays within one standard deviation between seeds
    on CLIP-like samples, 0.3% lower on a 1,000-topic one, above random init's (results/semdedup_kmeans.md)."""
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # its CPU probing at INFO: the CLI would print it
    import faiss

    x = normalise_rows(sample)
    m, d = x.shape
    if not 1 <= k <= m:
        raise KLFilterError(f"k-means needs 1 <= K <= sample rows, got K={k} for {m} rows")
    rng = np.random.default_rng([seed & 0xFFFFFFFFFFFFFFFF, 0x6B6D65616E73])  # "kmeans"
    if init == "k-means++":  # on a seeded random subset of the rows: see the last paragraph above
        few = SEED_PER_CLUSTER * k < m
        c = _kmeanspp(x[np.sort(rng.choice(m, SEED_PER_CLUSTER * k, replace=False))] if few else x, k, rng)
    else:
        c = x[np.sort(rng.choice(m, k, replace=False))].copy()
    cp = faiss.ClusteringParameters()
    cp.niter, cp.spherical, cp.seed = iterations, True, seed & 0x7FFFFFFF
    cp.min_points_per_centroid = 1   # no warning for small samples: K <= m is all we need
    cp.max_points_per_centroid = m   # no subsampling: K·m >= m
    clus = faiss.Clustering(d, k, cp)
    faiss.copy_array_to_vector(c.ravel(), clus.centroids)
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(KMEANS_THREADS)  # faiss's OpenBLAS follows OpenMP's count: a fixed count
    try:
        clus.train(x, faiss.IndexFlatIP(d))
    finally:
        faiss.omp_set_num_threads(threads)
    stats = clus.iteration_stats
    stats = [stats.at(i) for i in range(stats.size())]
    centroids = faiss.vector_float_to_array(clus.centroids).reshape(k, d)
    return centroids, {"objective": [st.obj / m for st in stats], "reseeded": int(sum(st.nsplit for st in stats)),
                       "faiss": faiss.__version__}


@single_blas_thread()
def earlier_max_similarity(x: np.ndarray, block_rows: int = BLOCK_ROWS, block_cols: int = BLOCK_COLS) -> np.ndarray:
    """``out[j] = max_{i<j} cos(x_i, x_j)`` (-1 for the first row) for the rows of one cluster in their order.

    Float32 products of float32-renormalised rows, BLOCK_ROWS rows against BLOCK_COLS earlier rows at a time: the
    similarity matrix is never held whole (memory: the cluster's rows in float32 plus one 16 MB block)."""
    xn = normalise_rows(x)
    n = len(xn)
    out = np.full(n, -np.inf, np.float32)
    buf = np.empty((min(block_rows, n), max(min(block_rows, n), min(block_cols, n))), np.float32)
    later = _later_mask(block_rows)  # [r, c]: -inf where column c is not earlier than row r, else 0
    for j0 in range(0, n, block_rows):
        xj = xn[j0: j0 + block_rows]
        b = len(xj)
        best = out[j0: j0 + b]
        for i0 in range(0, j0, block_cols):  # every earlier row, in column blocks
            w = min(block_cols, j0 - i0)
            s = np.matmul(xj, xn[i0: i0 + w].T, out=buf[:b, :w])
            np.maximum(best, s.max(axis=1), out=best)
        s = np.matmul(xj, xj.T, out=buf[:b, :b])  # the block with itself: only columns before each row count
        s += later[:b, :b]
        np.maximum(best, s.max(axis=1), out=best)
    out[np.isneginf(out)] = -1.0  # the cluster's first row: no earlier row (never a duplicate for ε in (0, 2))
    return out


@functools.lru_cache(maxsize=2)
def _later_mask(b: int) -> np.ndarray:
    """``b × b`` float32: -inf on and above the diagonal, 0 below (added to a block's products with itself: one
    pass, where a boolean mask's assignment took 3 ms for a 1024-row block and building the mask another 2)."""
    m = np.triu(np.full((b, b), -np.inf, np.float32))
    m.flags.writeable = False
    return m


def earlier_max_similarity_torch(x: np.ndarray, device: str = "cuda", block_rows: int = GPU_BLOCK_ROWS,
                                 block_cols: int = GPU_BLOCK_COLS) -> np.ndarray:
    """The GPU twin of :func:`earlier_max_similarity` (torch, float32 products with TF32 off, the same blocks'
    shape at GPU sizes: 4096 × 16384 similarities, 256 MB). Runs on any torch device, so CPU tests cover it.

    Agrees with the NumPy path to float32 rounding (a few 1e-7: the dot products are summed in another order), so
    a row whose maxsim sits within that of 1 − ε may be decided differently on a GPU than on a CPU; every other row
    is decided the same. Results are identical for any worker count on one device kind."""
    import torch

    xn = torch.from_numpy(normalise_rows(x)).to(device)
    n = len(xn)
    out = torch.full((n,), -float("inf"), dtype=torch.float32, device=device)
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False  # TF32 rounds the inputs to 10 mantissa bits: 1e-3 errors
    try:
        with torch.inference_mode():
            for j0 in range(0, n, block_rows):
                xj = xn[j0: j0 + block_rows]
                b = len(xj)
                best = out[j0: j0 + b]
                for i0 in range(0, j0, block_cols):
                    torch.maximum(best, (xj @ xn[i0: min(i0 + block_cols, j0)].T).amax(dim=1), out=best)
                s = xj @ xj.T
                s.masked_fill_(torch.ones(b, b, dtype=torch.bool, device=device).triu_(), -float("inf"))
                torch.maximum(best, s.amax(dim=1), out=best)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    out[torch.isneginf(out)] = -1.0
    return out.cpu().numpy()


def sortable_u32(v: np.ndarray) -> np.ndarray:
    """float32 → uint32 with the same order (NaN sorts after +inf)."""
    v = np.where(np.isnan(v), np.float32(np.inf), np.asarray(v, np.float32))
    b = v.view(np.uint32)
    return np.where(b >> np.uint32(31), ~b, b | np.uint32(0x80000000)).astype(np.uint32)


def order_keys(keep: str, uids: np.ndarray, seed: int, centroid_sim: np.ndarray, clip: np.ndarray | None = None):
    """The uint64 order key of each row within its cluster: smaller first, and the first of a duplicate set
    survives (see the module docstring)."""
    h = sample_keys(uids, _salt(seed, _ORDER_SALT), stream=1)
    if keep == "random":
        return h
    value = {"hard": centroid_sim, "easy": -centroid_sim,
             "clip_score": None if clip is None else -np.asarray(clip, np.float32)}[keep]
    return (sortable_u32(value).astype(np.uint64) << np.uint64(32)) | (h >> np.uint64(32))


def _sample_keys(pool, shard, seed: int) -> np.ndarray:
    return sample_keys(pool.read(shard).uids, _salt(seed, _SAMPLE_SALT), stream=0)


def _sample_rows(pool, shard, seed: int, cut: int, key: str):
    """A shard's rows with sample key <= cut: (keys, uids, float16 embeddings)."""
    data = pool.read(shard)
    keys = sample_keys(data.uids, _salt(seed, _SAMPLE_SALT), stream=0)
    rows = np.flatnonzero(keys <= np.uint64(cut))
    emb = pool.read_embeddings(shard, (key,), data.num_rows)[key]
    return keys[rows], data.uids[rows], emb[rows]


def assign_shard(pool, shard, centroids: np.ndarray, key: str, keep: str, seed: int, clip_column: str):
    data = pool.read(shard, (clip_column,) if keep == "clip_score" else (), (key,))
    labels, sims = _nearest(data[key], centroids, normalise=True)  # float32 one block at a time
    clip = data.column(clip_column) if keep == "clip_score" else None
    return labels, order_keys(keep, data.uids, seed, sims, clip)


class SemDeDupScorer(BucketScorer):
    """SemDeDup: each row's largest cosine similarity to an earlier row of its k-means cluster.

    arch: embedding family whose image embeddings are clustered and compared
    num_clusters: K, the number of k-means clusters
    keep: the member of a duplicate set that survives: hard (farthest from the centroid), easy, clip_score, random
    kmeans_iterations: Lloyd iterations of the spherical k-means (fixed)
    kmeans_init: k-means++ (seeded) or random (K distinct sample rows, seeded; for very large K)
    """

    name = "semdedup"
    gpu = True  # the within-cluster step (k-means and the assignment stay on the CPU: one result for any device)

    def __init__(self, arch: Arch = "l14", num_clusters: int = 50,
                 keep: Literal["hard", "easy", "clip_score", "random"] = "hard",
                 kmeans_iterations: int = DEFAULT_ITERATIONS,
                 kmeans_init: Literal["k-means++", "random"] = "k-means++"):
        if not 1 <= num_clusters <= MAX_CLUSTERS:
            raise KLFilterError(f"--num_clusters must be in [1, 2**24], got {num_clusters}")
        if kmeans_iterations < 0:
            raise KLFilterError(f"--kmeans_iterations must be >= 0, got {kmeans_iterations}")
        self.arch, self.num_clusters, self.keep = arch, num_clusters, keep
        self.kmeans_iterations, self.kmeans_init = kmeans_iterations, kmeans_init
        self.keys = (f"{arch}_img",)
        self.clip_column = f"clip_{arch}_similarity_score"
        self.columns = (self.clip_column,) if keep == "clip_score" else ()  # read by assign_shard: declared

    def outputs(self):
        return (f"semdedup_{self.arch}_maxsim", f"semdedup_{self.arch}_cluster")

    def provenance(self, column, stats):
        return {"scorer": self.name, **self.params(), "algorithm": ALGORITHM, "sample_per_cluster": SAMPLE_PER_CLUSTER,
                "sample_cap": SAMPLE_CAP, "block": [BLOCK_ROWS, BLOCK_COLS]}

    def bucket_size(self):  # unused: buckets are clusters
        return 0

    # ---- the partition: k-means clusters -------------------------------------------------------------------
    def sample_size(self, rows: int) -> int:
        return min(SAMPLE_PER_CLUSTER * self.num_clusters, SAMPLE_CAP, rows)

    def centroid_provenance(self, pool, seed: int) -> dict:
        return {"pool_fingerprint": pool.fingerprint, "key": self.keys[0], "num_clusters": self.num_clusters,
                "seed": seed, "iterations": self.kmeans_iterations, "init": self.kmeans_init,
                "sample_rows": self.sample_size(sum(pool.row_counts)), "algorithm": ALGORITHM,
                "implementation": "numpy k-means++, faiss spherical Lloyd iterations, float32, "
                                  f"{KMEANS_THREADS} threads"}

    def centroid_path(self, scores_dir: str, pool, seed: int) -> str:
        """Where the centroids of this provenance are saved: named by a digest of it."""
        digest = hashlib.sha256(json.dumps(self.centroid_provenance(pool, seed), sort_keys=True).encode()).hexdigest()
        return f"{scores_dir.rstrip('/')}/semdedup_centroids/{self.arch}_k{self.num_clusters}_{digest[:12]}.npz"

    def draw_sample(self, pool, engine, seed: int) -> np.ndarray:
        """The k-means sample: the m rows with the smallest seeded uid hash (ties by uid), in that order, read in
        two passes (the keys, 8 bytes a row; then only the chosen rows' embeddings)."""
        m = self.sample_size(sum(pool.row_counts))
        keys = engine.map(_sample_keys, [(pool, s, seed) for s in pool.shards], desc="semdedup: sample keys")
        cut = int(np.partition(np.concatenate(keys), m - 1)[m - 1])
        parts = engine.map(_sample_rows, [(pool, s, seed, cut, self.keys[0]) for s in pool.shards],
                           desc="semdedup: sample")
        k = np.concatenate([p[0] for p in parts])
        u = np.concatenate([p[1] for p in parts])
        order = np.lexsort((u["f1"], u["f0"], k))[:m]
        return np.concatenate([p[2] for p in parts])[order]

    def centroids(self, pool, engine, seed: int, scores_dir: str | None) -> np.ndarray:
        """Trained centroids, or those saved in ``scores_dir`` for the same provenance."""
        prov = self.centroid_provenance(pool, seed)
        path = None
        if scores_dir is not None:
            path = self.centroid_path(scores_dir, pool, seed)
            got = load_centroids(path, prov)
            if got is not None:
                return got
        c, info = spherical_kmeans(self.draw_sample(pool, engine, seed), self.num_clusters, self.kmeans_iterations,
                                   seed, self.kmeans_init)
        if path is not None:
            from kl_filter.core.atomic import write_bytes

            buf = io.BytesIO()
            np.savez(buf, centroids=c, provenance=np.array(json.dumps(prov, sort_keys=True)),
                     objective=np.array(info["objective"]), reseeded=np.int64(info["reseeded"]),
                     faiss_version=np.array(info["faiss"]))
            write_bytes(path, buf.getvalue())
        return c

    def assign(self, pool, engine, seed, pass_index, scores_dir=None):
        n = sum(pool.row_counts)
        if self.num_clusters > n:
            raise KLFilterError(f"--num_clusters {self.num_clusters} is larger than the pool ({n} rows)",
                                pool.metadata_dir)
        c = self.centroids(pool, engine, seed, scores_dir)
        res = engine.map(assign_shard, [(pool, s, c, self.keys[0], self.keep, seed, self.clip_column)
                                         for s in pool.shards], desc="semdedup: assign")
        labels = [r[0] for r in res]
        alone = int((np.bincount(np.concatenate(labels), minlength=self.num_clusters) == 1).sum())
        if 2 * alone > n:  # K near the pool's size: most rows have nothing to be a duplicate of
            logging.getLogger(__name__).warning(
                "semdedup: %d of %d rows are alone in their k-means cluster (--num_clusters %d): a row is compared "
                "only with its own cluster, so near duplicates in different clusters are all kept; use fewer "
                "clusters (hundreds of rows or more each)", alone, n, self.num_clusters)
        return Partition(labels, self.num_clusters, [r[1] for r in res],
                         {"cluster": [lab.astype(np.float32) for lab in labels]})

    def score_bucket(self, payload, device="cpu"):
        x = payload[self.keys[0]]
        maxsim = earlier_max_similarity_torch(x, device) if device.startswith("cuda") else earlier_max_similarity(x)
        if not np.isfinite(maxsim).all():
            raise KLFilterError(f"SemDeDup similarity is not finite for {int((~np.isfinite(maxsim)).sum())} rows")
        return {self.outputs()[0]: maxsim, self.outputs()[1]: payload["cluster"]}


def load_centroids(path: str, prov: dict) -> np.ndarray | None:
    """Saved centroids made with this provenance: None when absent or made with another provenance (then
    retrained), or unusable (a warning naming the file: not an npz, centroids of another shape than
    ``num_clusters`` × the family's width, not float32 or not finite; checked from the npy headers before any
    data is inflated). Anything but a regular file there (a FIFO would block the reader) is one line, never
    opened."""
    import logging

    from kl_filter.core.fspath import url_to_fs
    from kl_filter.core.inputs import header_check, regular_file
    from kl_filter.core.npyfile import NpzReader, read_errors
    from kl_filter.pool.reader import EMBED_DIMS

    fs, p = url_to_fs(path)
    try:
        if not fs.lexists(p):
            return None
    except OSError:
        return None
    fs, p, size = regular_file(path, "saved centroids file")
    width = EMBED_DIMS.get(str(prov.get("key", "")).split("_")[0])  # None: a family of another width
    try:
        with fs.open(p, "rb") as f, NpzReader(f, size) as z:
            stored = z.read("provenance", check=header_check(None, kinds="U", max_bytes=1 << 20, member="provenance"))
            if json.loads(str(stored)) != prov:
                return None
            c = z.read("centroids", check=header_check([(prov["num_clusters"], width)], kinds="f", member="centroids"))
    except read_errors() as e:
        problem = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        logging.getLogger(__name__).warning("%s: saved centroids unusable (%s); not used", path, problem)
        return None
    if c.dtype != np.float32 or not np.isfinite(c).all():
        logging.getLogger(__name__).warning("%s: saved centroids unusable (%s); not used", path,
                                            "not float32" if c.dtype != np.float32 else "NaN or inf values")
        return None
    return c


def duplicate_threshold(eps: float) -> float:
    """The largest float32 not above 1 − ε: on the float32 column, ``maxsim <= it`` is exactly ``maxsim <= 1 − ε``."""
    t = np.float32(1.0 - eps)
    if float(t) > 1.0 - eps:
        t = np.nextafter(t, np.float32(-np.inf))
    return float(t)


