"""End to end: ``kl-filter select --name kl`` against merely reading and decoding the same npz files.

Both with the same parallelism, on a pool on local disk; whole process, peak host RSS (and peak device
memory on a GPU). Run on two pool sizes with the same shard size to show that peak memory does not grow with
the number of shards. On the GPU machine the acceptance is scoring time ≤ 1.2 × read-and-decode time.

    python benchmarks/bench_pipeline.py --pool POOL [--num_samples 25600] [--half]
    python benchmarks/bench_pipeline.py --rows 12800000 --shards 256      # synthesise first (GPU machine)
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import shutil
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import half_and_full, python, run_measured, setup_pool, write_results  # noqa: E402


def read_decode(pool: str, key: str, workers: int) -> float:
    """Seconds to read every shard's npz and decode ``key`` (what scoring must read), same parallelism."""
    files = sorted(f for f in os.listdir(pool) if f.endswith(".npz"))

    def one(f):
        with np.load(os.path.join(pool, f)) as z:
            return z[key].shape[0]

    t = time.perf_counter()
    with cf.ThreadPoolExecutor(workers) as ex:
        rows = sum(ex.map(one, files))
    return time.perf_counter() - t, rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--num_samples", type=int, default=1024)
    ap.add_argument("--device", default="auto")
    args, tmp, pool = setup_pool(ap, 2_000_000, 26, "bench_pipeline_")
    runs = []
    for shards, p in half_and_full(pool, tmp):
        os.system("sync")
        io_s, rows = read_decode(p, "l14_txt", args.num_workers)
        out = os.path.join(tmp, f"kl_{shards}.npy")
        scores = os.path.join(tmp, f"scores_{shards}")
        cmd = [python(), "-m", "kl_filter", "select", "--name", "kl", "--mode", "kl", "--arch", "l14", "--target",
               "txt", "--fraction", "0.25", "--num_samples", str(args.num_samples), "--metadata_dir", p,
               "--scores_dir", scores, "--save_path", out, "--num_workers", str(args.num_workers), "--device",
               args.device, "--no_progress"]
        m = run_measured(cmd)
        side = json.load(open(out + ".json"))
        score_s = side["timings"]["stats_s"] + side["timings"]["scores_s"]
        r = {"shards": shards, "rows": rows, "read_decode_s": round(io_s, 3), "select_wall_s": m["seconds"],
             "stats_and_score_s": score_s, "peak_rss_gb": m["peak_rss_gb"],
             "ratio_select_to_read": round(m["seconds"] / io_s, 2), "num_samples": side["stats"]["num_reference_samples"]["l14_img"],
             "targets_per_s": round(rows / score_s)}
        runs.append(r)
        print(f"{shards:4d} shards {rows:>10,} rows | read+decode {io_s:7.2f}s | select --name kl {m['seconds']:7.2f}s "
              f"(stats+score {score_s:.2f}s) | ratio {r['ratio_select_to_read']:.2f} | peak RSS {m['peak_rss_gb']:.2f} GB")
        shutil.rmtree(scores, ignore_errors=True)
    line = "; ".join(f"{r['rows']:,} rows/{r['shards']} shards: select {r['select_wall_s']}s vs read+decode "
                     f"{r['read_decode_s']}s (×{r['ratio_select_to_read']}), peak {r['peak_rss_gb']} GB, "
                     f"N={r['num_samples']}" for r in runs)
    write_results("bench_pipeline", {"pool": pool, "num_workers": args.num_workers, "device": args.device,
                                     "runs": runs}, line)


if __name__ == "__main__":
    main()
