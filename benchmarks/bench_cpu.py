"""The project's CPU path against a plain float64 reference, whole process against whole process, same cores.

Both score D_KL and D_KLR (one family, one target) for every row of a pool against the same statistics.
Prints wall times, the ratio, and the largest relative difference between the two outputs.

    python benchmarks/bench_cpu.py [--pool POOL | --rows 200000 --shards 4] [--num_samples 4096]
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import pyarrow.parquet as pq

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import python, run_measured, setup_pool, write_results  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--num_samples", type=int, default=4096)
    ap.add_argument("--arch", default="l14")
    ap.add_argument("--target", default="txt")
    args, tmp, pool = setup_pool(ap, 200_000, 4, "bench_cpu_")
    stats = os.path.join(tmp, "stats.npz")
    run_measured([python(), "-m", "kl_filter", "stats", "--metadata_dir", pool, "--out", stats, "--arch", args.arch,
                  "--num_samples", str(args.num_samples), "--no_moments", "--no_progress"])
    w = str(args.num_workers)
    ours = run_measured([python(), "-m", "kl_filter", "score", "--metadata_dir", pool, "--stats", stats, "--out",
                         os.path.join(tmp, "ours"), "--modes", "kl", "kl_reverse", "--arch", args.arch, "--target",
                         args.target, "--device", "cpu", "--num_workers", w, "--no_progress"])
    ref = run_measured([python(), os.path.join(os.path.dirname(os.path.abspath(__file__)), "float64_reference.py"),
                        pool, stats, os.path.join(tmp, "ref"), "--arch", args.arch, "--target", args.target,
                        "--num_workers", w])
    worst, rows = 0.0, 0
    for f in sorted(os.listdir(os.path.join(tmp, "ref"))):
        a, b = pq.read_table(os.path.join(tmp, "ours", f)), pq.read_table(os.path.join(tmp, "ref", f))
        rows += a.num_rows
        for c in (f"kl_{args.arch}_{args.target}", f"kl_reverse_{args.arch}_{args.target}"):
            x, y = a.column(c).to_numpy().astype(np.float64), b.column(c).to_numpy()
            worst = max(worst, float(np.max(np.abs(x - y) / np.maximum(np.abs(y), 1e-3))))
    ratio = ref["seconds"] / ours["seconds"]
    print(f"{rows:,} rows, N={args.num_samples}, D_KL+D_KLR {args.arch}/{args.target}: kl-filter CPU {ours['seconds']}s "
          f"({ours['peak_rss_gb']} GB) | float64 reference {ref['seconds']}s ({ref['peak_rss_gb']} GB) | "
          f"{ratio:.2f}x faster | max relative difference {worst:.2e}")
    write_results("bench_cpu", {"pool": pool, "rows": rows, "num_samples": args.num_samples, "num_workers": args.num_workers,
                                "kl_filter": ours, "float64_reference": ref, "speedup": round(ratio, 2),
                                "max_rel_diff": worst},
                  f"{rows:,} rows, N={args.num_samples}: kl-filter {ours['seconds']}s vs float64 {ref['seconds']}s "
                  f"({ratio:.2f}x), max rel diff {worst:.1e}")


if __name__ == "__main__":
    main()
