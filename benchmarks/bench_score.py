"""``kl-filter stats`` + ``kl-filter score`` on a pool: wall time, targets/s and peak host memory.

Issue acceptance (CPU): peak memory of `score` on a 2M-row pool with N = 4,096 samples under 2 GB.

    python benchmarks/bench_score.py --pool POOL [--num_samples 4096] [--modes kl kl_reverse] [--arch l14]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import python, run_measured, write_results  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pool", required=True)
    ap.add_argument("--num_samples", type=int, default=4096)
    ap.add_argument("--modes", nargs="+", default=["kl", "kl_reverse"])
    ap.add_argument("--arch", nargs="+", default=["l14"])
    ap.add_argument("--target", nargs="+", default=["txt"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--num_workers", type=int, default=os.cpu_count())
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench_score_")
    stats = os.path.join(tmp, "stats.npz")
    common = ["--metadata_dir", args.pool, "--num_workers", str(args.num_workers), "--no_progress"]
    moments = [] if set(args.modes) & {"centered", "whitened"} else ["--no_moments"]
    st = run_measured([python(), "-m", "kl_filter", "stats", *common, "--out", stats, "--arch", *args.arch,
                       "--num_samples", str(args.num_samples), *moments])
    sc = run_measured([python(), "-m", "kl_filter", "score", *common, "--stats", stats, "--out", os.path.join(tmp, "scores"),
                       "--modes", *args.modes, "--arch", *args.arch, "--target", *args.target, "--device", args.device])
    import pyarrow.parquet as pq

    rows = sum(pq.ParquetFile(os.path.join(args.pool, f)).metadata.num_rows for f in os.listdir(args.pool)
               if f.endswith(".parquet"))
    cols = len(args.modes) * len(args.arch) * len(args.target)
    rec = {"pool": args.pool, "rows": rows, "num_samples": args.num_samples, "modes": args.modes, "arch": args.arch,
           "target": args.target, "device": args.device, "num_workers": args.num_workers, "stats": st, "score": sc,
           "score_targets_per_s": round(rows * len(args.arch) * len(args.target) / sc["seconds"])}
    print(f"stats: {st['seconds']}s, peak {st['peak_rss_gb']} GB | score ({cols} columns, N={args.num_samples}): "
          f"{sc['seconds']}s, {rec['score_targets_per_s']:,} targets/s, peak {sc['peak_rss_gb']} GB")
    write_results("bench_score", rec, f"{rows:,} rows, N={args.num_samples}, {args.modes} {args.arch} {args.target} on "
                  f"{args.device}: stats {st['seconds']}s (peak {st['peak_rss_gb']} GB), score {sc['seconds']}s "
                  f"({rec['score_targets_per_s']:,} targets/s, peak {sc['peak_rss_gb']} GB)")


if __name__ == "__main__":
    main()
