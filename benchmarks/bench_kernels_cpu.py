"""The CPU kernels against the machine: each kernel on one BLAS thread beside the float32 matrix products of the
same shapes alone (the GEMM calls the kernel makes, without its exp, max, conversions and reductions), so the
share ``matmul time / kernel time`` is the part of the kernel's time that is the unavoidable product (goal ≥ 85%).

* D_KL + D_KLR (``numpy_engine.density_ratio_kl``): 4,096 targets × 25,600 samples × 768, blocks 1024 × 4096;
* negCLIPLoss (``negcliploss_batch``): one batch of ``--batch`` pairs × 768, blocks of BLOCK_ROWS rows × the batch;
* NormSim∞ (``max_similarity``): ``--rows`` rows × ``--targets`` targets × 768, blocks BLOCK_ROWS × BLOCK_TARGETS.

Times are the minimum over ``--repeats`` interleaved runs of CPU time of this process (one thread: CPU time is the
kernel's own, and moves less than wall time on a shared machine) and of wall time. On a shared machine the other
core's jobs still slow a memory-bound pass (the kernel's exp and reductions) more than the product, so the median
over the repeats of each repeat's own ratio (kernel and matmul run back to back) is printed too.

    python benchmarks/bench_kernels_cpu.py [--repeats 5] [--batch 8192] [--rows 8192] [--targets 25600]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import unit_rows, write_results  # noqa: E402

D = 768


def gemms(x16, y, block_rows, block_cols, scale=1.0):
    """The kernel's float32 products alone: x (float16 → float32 once per row block) against column blocks of y."""
    from kl_filter.core.half import to_float32

    y = np.ascontiguousarray(y, dtype=np.float32) * np.float32(scale)
    out = np.empty((block_rows, min(block_cols, len(y))), np.float32)

    def run():
        for r0 in range(0, len(x16), block_rows):
            x = to_float32(x16[r0: r0 + block_rows])  # the kernels' own float16 conversion
            for c0 in range(0, len(y), block_cols):
                yb = y[c0: c0 + block_cols]
                np.matmul(x, yb.T, out=out[: len(x), : len(yb)])
    return run


def measure(pairs, repeats):
    """{name: (cpu s, wall s)} minima over interleaved repeats of every callable, and the per-repeat CPU times
    (``"cpu_runs"``): a repeat's callables run back to back, under the same load."""
    best = {k: [float("inf"), float("inf")] for k in pairs}
    runs = {k: [] for k in pairs}
    for fn in pairs.values():
        fn()  # warm-up
    for _ in range(repeats):
        for k, fn in pairs.items():
            c, t = time.process_time(), time.perf_counter()
            fn()
            runs[k].append(time.process_time() - c)
            best[k] = [min(best[k][0], runs[k][-1]), min(best[k][1], time.perf_counter() - t)]
    return {**best, "cpu_runs": runs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=8192)
    ap.add_argument("--rows", type=int, default=8192)
    ap.add_argument("--targets", type=int, default=25600)
    args = ap.parse_args()
    from kl_filter.engines import single_blas_thread
    from kl_filter.scorers import negcliploss, normsim
    from kl_filter.kernels.kl_numpy import DEFAULT_BLOCK_ROWS, DEFAULT_BLOCK_SAMPLES, density_ratio_kl

    rng = np.random.default_rng(0)
    x, y = unit_rows(rng, 4096, D), unit_rows(rng, 25600, D)
    f, g = unit_rows(rng, args.batch, D), unit_rows(rng, args.batch, D)
    rows, t = unit_rows(rng, args.rows, D), unit_rows(rng, args.targets, D, np.float32)
    kernels = {
        "kl": (lambda: density_ratio_kl(x, y), gemms(x, y, DEFAULT_BLOCK_ROWS, DEFAULT_BLOCK_SAMPLES, 100.0),
               f"4,096 × 25,600 × {D}, blocks {DEFAULT_BLOCK_ROWS} × {DEFAULT_BLOCK_SAMPLES}"),
        "negcliploss": (lambda: negcliploss.negcliploss_batch(f, g), gemms(f, g, negcliploss.BLOCK_ROWS, args.batch),
                        f"one batch of {args.batch:,} × {D}, blocks {negcliploss.BLOCK_ROWS} × {args.batch:,}"),
        "normsim_inf": (lambda: normsim.max_similarity(rows, [t]),
                        gemms(rows, t, normsim.BLOCK_ROWS, normsim.BLOCK_TARGETS),
                        f"{args.rows:,} × {args.targets:,} × {D}, "
                        f"blocks {normsim.BLOCK_ROWS} × {normsim.BLOCK_TARGETS}"),
    }
    out = {}
    load0 = os.getloadavg()
    with single_blas_thread():
        for name, (kernel, matmul, shape) in kernels.items():
            best = measure({"kernel": kernel, "matmul": matmul}, args.repeats)
            share = best["matmul"][0] / best["kernel"][0]
            runs = best["cpu_runs"]
            paired = float(np.median([m / k for m, k in zip(runs["matmul"], runs["kernel"])]))
            out[name] = {"shape": shape, "kernel_cpu_s": round(best["kernel"][0], 3),
                         "matmul_cpu_s": round(best["matmul"][0], 3), "kernel_wall_s": round(best["kernel"][1], 3),
                         "matmul_wall_s": round(best["matmul"][1], 3), "share_of_matmul": round(share, 3),
                         "paired_median_share": round(paired, 3),
                         "kernel_cpu_runs": [round(v, 3) for v in runs["kernel"]],
                         "matmul_cpu_runs": [round(v, 3) for v in runs["matmul"]]}
            print(f"{name:12s} {shape}: kernel {best['kernel'][0]:.3f} s, same-shape matmul {best['matmul'][0]:.3f} s "
                  f"(CPU time, one thread): {share:.0%} of the matmul's speed (minima); median of the repeats' "
                  f"own ratios {paired:.0%}", flush=True)
    load = os.getloadavg()
    line = "; ".join(f"{k} {v['share_of_matmul']:.0%} ({v['kernel_cpu_s']} s vs {v['matmul_cpu_s']} s; repeats' "
                     f"median {v['paired_median_share']:.0%})" for k, v in out.items())
    write_results("bench_kernels_cpu", {"repeats": args.repeats, "kernels": out,
                                        "load_average_at_start": [round(v, 2) for v in load0],
                                        "load_average_at_end": [round(v, 2) for v in load]},
                  f"one thread, kernel vs the same-shape float32 matmul (CPU time, min of {args.repeats}): {line}; "
                  f"load average {load0[0]:.1f} at the start, {load[0]:.1f} at the end (shared machine)")


if __name__ == "__main__":
    main()
