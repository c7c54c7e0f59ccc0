"""This machine's float32 matmul peak, and the NumPy engine's D_KL throughput as a share of it.

D_KL + D_KLR cost 2·M·N·d flops of matrix product (plus M·N exponentials); the share is those flops per second
over the peak of a large square float32 matmul, for one thread (one BLAS thread, one call) and for all cores
(a BLAS with every core for the peak; the local engine with one worker per core, one BLAS thread each, over
fixed row blocks for the engine, which is how `kl-filter score` runs).

    python benchmarks/bench_matmul_peak.py [--rows 16384] [--num_samples 4096] [--dim 768]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import unit_rows, write_results  # noqa: E402


def best_seconds(fn, repeat: int = 3) -> float:
    fn()  # warm-up: thread pools, page faults
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def matmul_gflops(threads: int, m: int, n: int, k: int) -> float:
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((m, k), np.float32), rng.standard_normal((k, n), np.float32)
    out = np.empty((m, n), np.float32)
    with threadpool_limits(threads, user_api="blas"):
        return 2 * m * n * k / best_seconds(lambda: np.matmul(a, b, out=out)) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=16384, help="target rows per worker")
    ap.add_argument("--num_samples", type=int, default=4096)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--size", type=int, default=3072, help="side of the square matmul that measures the peak")
    args = ap.parse_args()
    from kl_filter.engines import LocalEngine
    from kl_filter.kernels.kl_numpy import DEFAULT_BLOCK_ROWS, DEFAULT_BLOCK_SAMPLES, density_ratio_kl

    cores = os.cpu_count() or 1
    s = args.size
    peak1, peak_all = matmul_gflops(1, s, s, s), matmul_gflops(cores, s, s, s)
    block1 = matmul_gflops(1, DEFAULT_BLOCK_ROWS, DEFAULT_BLOCK_SAMPLES, args.dim)  # the engine's block product

    rng = np.random.default_rng(1)
    x, y = unit_rows(rng, args.rows * cores, args.dim), unit_rows(rng, args.num_samples, args.dim)
    flops = 2.0 * args.dim * args.num_samples
    one = args.rows / best_seconds(lambda: density_ratio_kl(x[: args.rows], y), repeat=2)
    engine = LocalEngine(cores)
    parts = [(x[i * args.rows: (i + 1) * args.rows], y) for i in range(cores)]
    every = len(x) / best_seconds(lambda: engine.map(density_ratio_kl, parts), repeat=2)
    rec = {"cores": cores, "peak_gflops_1_thread": round(peak1, 1), "peak_gflops_all_cores": round(peak_all, 1),
           "block_matmul_gflops_1_thread": round(block1, 1), "dim": args.dim, "num_samples": args.num_samples,
           "kl_targets_per_s_1_thread": round(one), "kl_targets_per_s_all_cores": round(every),
           "kl_share_of_peak_1_thread": round(one * flops / 1e9 / peak1, 3),
           "kl_share_of_peak_all_cores": round(every * flops / 1e9 / peak_all, 3)}
    line = (f"float32 matmul peak {peak1:.0f} GFLOP/s on 1 thread, {peak_all:.0f} on {cores} cores "
            f"(engine block {DEFAULT_BLOCK_ROWS}×{args.dim}·{args.dim}×{DEFAULT_BLOCK_SAMPLES}: {block1:.0f} on 1 thread); "
            f"D_KL+D_KLR d={args.dim}, N={args.num_samples}: {one:,.0f} targets/s on 1 thread "
            f"({rec['kl_share_of_peak_1_thread']:.0%} of peak), {every:,.0f} on {cores} workers "
            f"({rec['kl_share_of_peak_all_cores']:.0%} of peak)")
    print(line)
    write_results("bench_matmul_peak", rec, line)


if __name__ == "__main__":
    main()
