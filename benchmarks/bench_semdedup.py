"""SemDeDup on CPU: the within-cluster step's share of this machine's float32 matmul peak, and an end-to-end
`kl-filter select --name semdedup` on a synthetic pool (rows/s, peak memory of the whole process tree).

Within a cluster of n rows the step costs n·(n−1)·d useful flops (every pair once); the share is those flops per
second over the peak of a large square float32 matmul on one thread, both measured in this run (one BLAS thread,
as each bucket task runs). The pool has ``--rows`` rows around ``--topics`` directions with 5% planted
near-duplicates (cosine about 0.9975), written as parquet (uid, clip_l14_similarity_score) + npz (l14_img).

    python benchmarks/bench_semdedup.py [--rows 2000000] [--shards 8] [--num_clusters 500] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import python, run_measured, unit_rows, write_results  # noqa: E402
from bench_matmul_peak import matmul_gflops  # noqa: E402

D = 768


def unit(rng, n, d=D):
    return unit_rows(rng, n, d, np.float32)


def write_pool(root: str, rows: int, shards: int, topics: int, seed: int = 0) -> None:
    """Clustered rows with 5% planted near-duplicates, in shards of equal size."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    centres = unit(rng, topics)
    per = -(-rows // shards)
    for s in range(shards):
        n = min(per, rows - s * per)
        x = centres[rng.integers(topics, size=n)] * 0.65 + unit(rng, n) * 0.75
        dup = rng.choice(n, n // 20, replace=False)  # a near-copy of another row of the same shard
        x[dup] = x[rng.integers(n, size=len(dup))] + 0.05 * unit(rng, len(dup)) * np.linalg.norm(x[0])
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        uid = [f"{i:032x}" for i in range(s * per, s * per + n)]
        pq.write_table(pa.table({"uid": uid, "clip_l14_similarity_score": rng.random(n, dtype=np.float32)}),
                       f"{root}/{s:08d}.parquet")
        np.savez(f"{root}/{s:08d}.npz", l14_img=x.astype(np.float16))


def within_cluster_gflops(n: int) -> float:
    from kl_filter.scorers.semdedup import earlier_max_similarity

    x = unit(np.random.default_rng(n), n).astype(np.float16)
    earlier_max_similarity(x[:2048])  # warm-up
    t0 = time.perf_counter()
    earlier_max_similarity(x)
    return n * (n - 1) * D / (time.perf_counter() - t0) / 1e9


def kmeans_comparison(k: int = 100, seed: int = 0) -> dict:
    """Our k-means (seeded k-means++ or random init, then faiss's Lloyd iterations) against faiss's own random init
    (as the SemDeDup authors call it) on the same 256·K clustered rows, 25 iterations, each on ours's fixed
    KMEANS_THREADS OpenMP threads; objective = mean cosine to the nearest centre."""
    import faiss

    from kl_filter.scorers.semdedup import KMEANS_THREADS, spherical_kmeans

    rng = np.random.default_rng(seed)
    x = unit(rng, k)[rng.integers(k, size=256 * k)] * 0.65 + unit(rng, 256 * k) * 0.75
    x /= np.linalg.norm(x, axis=1, keepdims=True)

    def objective(c):
        return round(float((x @ c.T).max(axis=1).mean()), 4)

    out = {}
    for init in ("k-means++", "random"):
        t0 = time.perf_counter()
        c, _ = spherical_kmeans(x, k, 25, seed, init)
        out[f"ours_{init}"] = {"seconds": round(time.perf_counter() - t0, 2), "objective": objective(c)}
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(KMEANS_THREADS)
    try:
        km = faiss.Kmeans(D, k, niter=25, seed=seed + 1, spherical=True, max_points_per_centroid=256)
        t0 = time.perf_counter()
        km.train(x)
        out["faiss_random_init"] = {"version": faiss.__version__, "seconds": round(time.perf_counter() - t0, 2),
                                    "objective": objective(km.centroids)}
    finally:
        faiss.omp_set_num_threads(threads)
    out["threads"] = KMEANS_THREADS
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--topics", type=int, default=1000)
    ap.add_argument("--num_clusters", type=int, default=500)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--cluster_sizes", type=int, nargs="+", default=[1024, 4096, 16384])
    ap.add_argument("--dir", default=None, help="where to write the pool (default: a temporary directory)")
    args = ap.parse_args()

    peak1 = matmul_gflops(1, 3072, 3072, 3072)
    from kl_filter.engines import single_blas_thread

    with single_blas_thread():
        step = {n: within_cluster_gflops(n) for n in args.cluster_sizes}
    for n, g in step.items():
        print(f"within-cluster step, one cluster of {n:,} rows: {g:.1f} GFLOP/s = {g / peak1:.0%} of the 1-thread "
              f"peak {peak1:.1f}", flush=True)

    with single_blas_thread():
        km = kmeans_comparison()
    print(f"k-means, 25,600 rows, K=100, 25 iterations, {km['threads']} threads: {km}", flush=True)

    root = tempfile.mkdtemp(prefix="bench_semdedup_", dir=args.dir)
    try:
        pool, scores = os.path.join(root, "pool"), os.path.join(root, "scores")
        os.makedirs(pool)
        t0 = time.perf_counter()
        write_pool(pool, args.rows, args.shards, args.topics)
        write_s = time.perf_counter() - t0
        load = os.getloadavg()
        run = run_measured([python(), "-m", "kl_filter", "select", "--name", "semdedup", "--arch", "l14",
                            "--eps", "0.01", "--num_clusters", str(args.num_clusters), "--seed", "0",
                            "--metadata_dir", pool, "--save_path", os.path.join(root, "u.npy"),
                            "--scores_dir", scores, "--num_workers", str(args.workers), "--no_progress"])
        import json

        side = json.load(open(os.path.join(root, "u.npy.json")))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    rps = args.rows / run["seconds"]
    rec = {"rows": args.rows, "shards": args.shards, "num_clusters": args.num_clusters, "workers": args.workers,
           "dim": D, "peak_gflops_1_thread": round(peak1, 1),
           "within_cluster_gflops_1_thread": {str(n): round(g, 1) for n, g in step.items()},
           "within_cluster_share_of_peak": {str(n): round(g / peak1, 3) for n, g in step.items()},
           "end_to_end_seconds": run["seconds"], "rows_per_s": round(rps), "peak_rss_gb": run["peak_rss_gb"],
           "kept_share": round(side["kept_share"], 4), "timings": side["timings"],
           "pool_write_seconds": round(write_s, 1),
           "kmeans_comparison": km, "load_average_at_start": [round(v, 2) for v in load]}
    shares = ", ".join(f"{n:,} rows {g / peak1:.0%}" for n, g in step.items())
    line = (f"within-cluster step (1 thread) vs float32 peak {peak1:.0f} GFLOP/s: {shares}; end to end "
            f"{args.rows:,} rows, K={args.num_clusters}, {args.workers} workers: {run['seconds']:.0f} s "
            f"({rps:,.0f} rows/s), peak RSS {run['peak_rss_gb']:.2f} GB, kept {side['kept_share']:.1%}; "
            f"k-means 25,600×768, K=100, 25 it., {km['threads']} threads: ours (k-means++ + faiss) "
            f"{km['ours_k-means++']['seconds']} s, "
            f"faiss with its random init {km['faiss_random_init']['seconds']} s; "
            f"load average {load[0]:.1f} on a shared machine")
    print(line)
    write_results("bench_semdedup", rec, line)


if __name__ == "__main__":
    main()
