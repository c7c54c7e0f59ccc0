"""Overhead of the Ray engine against the local engine: the same commands on the same pool, side by side.

    python benchmarks/bench_ray.py [--pool POOL | --rows 400000 --shards 8] [--num_workers 2]
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import python, run_measured, setup_pool, write_results  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    args, tmp, pool = setup_pool(ap, 400_000, 8, "bench_ray_")
    cases = {
        "clip_score_l14_30": ["--name", "clip_score", "--arch", "l14", "--fraction", "0.3"],
        "laion2b": ["--name", "laion2b"],
        "kl_l14_txt_25": ["--name", "kl", "--mode", "kl", "--arch", "l14", "--target", "txt", "--fraction", "0.25",
                          "--num_samples", "1024"],
    }
    rows = {}
    env = {"RAY_USAGE_STATS_ENABLED": "0"}
    for case, flags in cases.items():
        res = {}
        for engine in ("local", "ray"):
            out = os.path.join(tmp, f"{case}_{engine}.npy")
            res[engine] = run_measured([python(), "-m", "kl_filter", "select", *flags, "--metadata_dir", pool,
                                        "--save_path", out, "--scores_dir", os.path.join(tmp, f"s_{case}_{engine}"),
                                        "--engine", engine, "--num_workers", str(args.num_workers), "--no_progress"],
                                       env=env)
        same = open(os.path.join(tmp, f"{case}_local.npy"), "rb").read() == open(os.path.join(tmp, f"{case}_ray.npy"), "rb").read()
        over = res["ray"]["seconds"] - res["local"]["seconds"]
        rows[case] = {**res, "overhead_s": round(over, 2), "ratio": round(res["ray"]["seconds"] / res["local"]["seconds"], 2),
                      "identical": same}
        print(f"{case:20s} local {res['local']['seconds']:6.2f}s | ray {res['ray']['seconds']:6.2f}s | "
              f"overhead {over:+.2f}s (×{rows[case]['ratio']}) | identical UID files: {same}")
    line = "; ".join(f"{c}: local {r['local']['seconds']}s, ray {r['ray']['seconds']}s (+{r['overhead_s']}s), "
                     f"identical={r['identical']}" for c, r in rows.items())
    write_results("bench_ray", {"pool": pool, "num_workers": args.num_workers, "cases": rows}, line)


if __name__ == "__main__":
    main()
