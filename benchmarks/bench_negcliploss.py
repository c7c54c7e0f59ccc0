"""negCLIPLoss on the CPU: kernel throughput as a share of this machine's float32 matmul peak, in one run, and
`kl-filter select --name negcliploss` end to end (rows/s, peak memory, half vs full pool: memory flat).

negCLIPLoss costs 2·D·|B| flops of matrix product per row and pass (both directions from one similarity block).
The share is those flops per second over the peak of a large square float32 matmul measured just before, on one
thread (one batch, one BLAS thread) and on all cores (the local engine, one batch per worker, as `select` runs).

    python benchmarks/bench_negcliploss.py [--rows 262144 --shards 8] [--batch_size 32768] [--num_batches 1]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import half_and_full, python, run_measured, setup_pool, unit_rows, write_results  # noqa: E402
from bench_matmul_peak import best_seconds, matmul_gflops  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch_size", type=int, default=32768)
    ap.add_argument("--num_batches", type=int, default=1, help="passes end to end (the kernel share is per pass)")
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--full_only", action="store_true", help="only the whole pool (skip the half-pool run)")
    args, tmp, pool = setup_pool(ap, 262_144, 8, "bench_negcliploss_")
    from kl_filter.engines import LocalEngine
    from kl_filter.scorers.negcliploss import negcliploss_batch

    cores = os.cpu_count() or 1
    peak1, peak_all = matmul_gflops(1, 3072, 3072, 3072), matmul_gflops(cores, 3072, 3072, 3072)
    rng = np.random.default_rng(0)
    b = args.batch_size
    batches = [(unit_rows(rng, b, args.dim), unit_rows(rng, b, args.dim)) for _ in range(cores)]
    flops_per_row = 2.0 * args.dim * b
    one = b / best_seconds(lambda: negcliploss_batch(*batches[0]), repeat=1)
    engine = LocalEngine(cores)
    every = cores * b / best_seconds(lambda: engine.map(negcliploss_batch, batches), repeat=1)
    share1, share_all = one * flops_per_row / 1e9 / peak1, every * flops_per_row / 1e9 / peak_all

    runs = []
    for shards, p in half_and_full(pool, tmp)[1 if args.full_only else 0:]:
        out = os.path.join(tmp, f"ncl_{shards}.npy")
        m = run_measured([python(), "-m", "kl_filter", "select", "--name", "negcliploss", "--arch", "l14",
                          "--fraction", "0.3", "--batch_size", str(b), "--num_batches", str(args.num_batches),
                          "--metadata_dir", p, "--scores_dir", os.path.join(tmp, f"scores_{shards}"), "--save_path",
                          out, "--num_workers", str(args.num_workers), "--no_progress"])
        side = json.load(open(out + ".json"))
        rows = side["pool_rows"]
        runs.append({"shards": shards, "rows": rows, "seconds": m["seconds"], "peak_rss_gb": m["peak_rss_gb"],
                     "rows_per_s": round(rows * args.num_batches / m["seconds"]),
                     "scores_s": side["timings"]["scores_s"]})
        print(f"{shards:3d} shards {rows:>9,} rows: select {m['seconds']:.1f}s ({runs[-1]['rows_per_s']:,} rows/s per "
              f"pass), peak RSS {m['peak_rss_gb']:.2f} GB")
    rec = {"cores": cores, "dim": args.dim, "batch_size": b, "num_batches": args.num_batches,
           "peak_gflops_1_thread": round(peak1, 1), "peak_gflops_all_cores": round(peak_all, 1),
           "kernel_rows_per_s_1_thread": round(one), "kernel_rows_per_s_all_cores": round(every),
           "kernel_share_of_peak_1_thread": round(share1, 3), "kernel_share_of_peak_all_cores": round(share_all, 3),
           "select": runs}
    line = (f"|B|={b}, D={args.dim}: kernel {one:,.0f} rows/s on 1 thread ({share1:.0%} of the {peak1:.0f} GFLOP/s "
            f"float32 peak), {every:,.0f} rows/s on {cores} workers ({share_all:.0%} of {peak_all:.0f}); select on "
            + ", ".join(f"{r['rows']:,} rows {r['rows_per_s']:,} rows/s/pass, {r['peak_rss_gb']:.2f} GB" for r in runs))
    print(line)
    write_results("bench_negcliploss", rec, line)


if __name__ == "__main__":
    main()
