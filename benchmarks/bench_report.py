"""``kl-filter inspect`` (streaming, two passes) against a plain pandas report that loads the whole pool.

Both compute the same headline figures from the same pool (summary, 50-bin histogram, top/bottom 8 rows per
score column, Pearson correlations, kept count and caption-length histogram per subset); the plain one reads
every shard's metadata into one DataFrame first. Run on half the pool and on all of it (same shard size): the
streaming report's peak memory should stay flat while the plain one grows with the pool. Whole process, peak RSS.

    python benchmarks/bench_report.py                   # synthesise 2M rows / 26 shards first (about 3 min)
    python benchmarks/bench_report.py --pool POOL
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import half_and_full, python, run_measured, setup_pool, write_results  # noqa: E402

PLAIN = r'''
import glob, sys
import numpy as np, pandas as pd
pool, subsets = sys.argv[1], sys.argv[2:]
cols = ["clip_b32_similarity_score", "clip_l14_similarity_score"]
df = pd.concat([pd.read_parquet(p, columns=["uid", "text", "original_width", "original_height"] + cols)
                for p in sorted(glob.glob(pool + "/*.parquet"))], ignore_index=True)
out = {}
for c in cols:
    x = df[c].astype(np.float64)
    out[c] = (x.describe(), np.histogram(x, bins=np.linspace(x.min(), x.max(), 51)),
              df.assign(k=-x).sort_values(["k", "uid"]).head(8), df.assign(k=x).sort_values(["k", "uid"]).head(8))
corr = df[cols].astype(np.float64).corr()
words = df.text.str.split().str.len()
for s in subsets:
    a = np.load(s)
    keep = df.uid.isin({f"{x:016x}{y:016x}" for x, y in a.tolist()})
    out[s] = (int(keep.sum()), np.bincount(words[keep].clip(upper=50)))
print(len(df))
'''


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    args, tmp, pool = setup_pool(ap, 2_000_000, 26, "bench_report_")
    runs = []
    for shards, p in half_and_full(pool, tmp):
        subsets = []
        for arch in ("b32", "l14"):
            save = os.path.join(tmp, f"clip_{arch}_{shards}.npy")
            run_measured([python(), "-m", "kl_filter", "select", "--name", "clip_score", "--arch", arch, "--fraction",
                          "0.3", "--metadata_dir", p, "--save_path", save, "--no_progress"])
            subsets.append(save)
        out = os.path.join(tmp, f"report_{shards}")
        stream = run_measured([python(), "-m", "kl_filter", "inspect", "--metadata_dir", p, "--out", out, "--filters",
                               *subsets, "--num_workers", str(args.num_workers), "--no_progress"])
        plain = run_measured([python(), "-c", PLAIN, p, *subsets])
        rows = int(plain["stdout"].strip().splitlines()[-1])
        r = {"shards": shards, "rows": rows, "inspect_s": stream["seconds"], "inspect_peak_gb": stream["peak_rss_gb"],
             "plain_pandas_s": plain["seconds"], "plain_pandas_peak_gb": plain["peak_rss_gb"],
             "memory_ratio_plain_to_inspect": round(plain["peak_rss_gb"] / stream["peak_rss_gb"], 2)}
        runs.append(r)
        print(f"{shards:4d} shards {rows:>10,} rows | inspect {r['inspect_s']:7.2f}s peak {r['inspect_peak_gb']:.2f} GB "
              f"| plain pandas {r['plain_pandas_s']:7.2f}s peak {r['plain_pandas_peak_gb']:.2f} GB "
              f"| memory plain/inspect ×{r['memory_ratio_plain_to_inspect']}")
        shutil.rmtree(out, ignore_errors=True)
    line = "; ".join(f"{r['rows']:,} rows/{r['shards']} shards: inspect {r['inspect_s']}s, peak {r['inspect_peak_gb']} GB "
                     f"vs plain pandas {r['plain_pandas_s']}s, peak {r['plain_pandas_peak_gb']} GB "
                     f"(×{r['memory_ratio_plain_to_inspect']} memory)" for r in runs)
    write_results("bench_report", {"pool": pool, "num_workers": args.num_workers, "runs": runs,
                                   "note": "inspect also draws ~10 PNGs, builds the n-gram index of a 100k sample "
                                           "and identifies its language; the plain script does neither"}, line)
    if not args.pool:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
