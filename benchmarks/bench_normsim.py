"""NormSim∞ on CPU: the blocked max-matmul's rows/s and its share of this machine's float32 matmul peak.

NormSim∞ costs 2·N_t·D flops per row (a matrix product folded into a running max). One thread (one BLAS
thread, as a score worker runs it) and all cores (the local engine, one worker per core over row blocks, as
`kl-filter select --name normsim` runs shards); the peak is a large square float32 matmul measured in the same
run. Also the maximum relative difference from a float64 reference on the first rows.

    python benchmarks/bench_normsim.py [--rows 20000] [--targets 100000] [--dim 768]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import unit_rows, write_results  # noqa: E402
from bench_matmul_peak import matmul_gflops  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=20000, help="pool rows (float16), split over the workers")
    ap.add_argument("--targets", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--single_rows", type=int, default=4096, help="rows of the one-thread measurement")
    args = ap.parse_args()
    from kl_filter.engines import LocalEngine
    from kl_filter.scorers.normsim import BLOCK_ROWS, BLOCK_TARGETS, max_similarity

    cores = os.cpu_count() or 1
    peak1, peak_all = matmul_gflops(1, 3072, 3072, 3072), matmul_gflops(cores, 3072, 3072, 3072)
    rng = np.random.default_rng(0)
    rows, targets = unit_rows(rng, args.rows, args.dim), unit_rows(rng, args.targets, args.dim, np.float32)
    flops_per_row = 2 * args.targets * args.dim

    t0 = time.perf_counter()
    one = max_similarity(rows[: args.single_rows], [targets])
    t1 = time.perf_counter() - t0
    ref = (rows[:256].astype(np.float64) @ targets.astype(np.float64).T).max(axis=1)
    err = float(np.max(np.abs(one[:256] - ref) / np.abs(ref)))

    chunks = np.array_split(np.arange(args.rows), cores)
    engine = LocalEngine(cores)
    t0 = time.perf_counter()
    engine.map(lambda idx: max_similarity(rows[idx[0]: idx[-1] + 1], [targets]), [(c,) for c in chunks])
    t_all = time.perf_counter() - t0

    rps1, rps_all = args.single_rows / t1, args.rows / t_all
    record = {"rows": args.rows, "targets": args.targets, "dim": args.dim, "cores": cores,
              "block_rows": BLOCK_ROWS, "block_targets": BLOCK_TARGETS,
              "one_thread": {"rows": args.single_rows, "seconds": round(t1, 3), "rows_per_s": round(rps1, 1),
                             "gflops": round(rps1 * flops_per_row / 1e9, 1), "peak_gflops": round(peak1, 1),
                             "share_of_peak": round(rps1 * flops_per_row / 1e9 / peak1, 3)},
              "all_cores": {"seconds": round(t_all, 3), "rows_per_s": round(rps_all, 1),
                            "gflops": round(rps_all * flops_per_row / 1e9, 1), "peak_gflops": round(peak_all, 1),
                            "share_of_peak": round(rps_all * flops_per_row / 1e9 / peak_all, 3)},
              "max_rel_err_vs_float64": err}
    print(record)
    write_results("bench_normsim", record,
                  f"NormSim∞ N_t={args.targets:,} D={args.dim}: {rps1:,.0f} rows/s on 1 thread "
                  f"({record['one_thread']['share_of_peak']:.0%} of {peak1:.0f} GFLOP/s), {rps_all:,.0f} rows/s on "
                  f"{cores} cores ({record['all_cores']['share_of_peak']:.0%} of {peak_all:.0f}); "
                  f"{args.rows:,} rows in {t_all:.1f} s; max rel err {err:.1e}")


if __name__ == "__main__":
    main()
