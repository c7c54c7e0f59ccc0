"""`kl-filter select --name clip_score` against a plain pyarrow + NumPy script doing the same selection.

The plain script (this file with ``--plain``) reads ``uid`` and the CLIP score column of every parquet shard
(threads, one per core), takes DataComp's threshold (``-sort(-scores)[int(n·f)]``, keep ``>=``), turns the kept
uids into DataComp's sorted ``u8,u8`` array and saves it: the least a correct selection must do. Both are whole
processes (start-up included), run interleaved ``--repeats`` times on the same pool; the minimum of each is kept,
and the two UID files must be identical.

    python benchmarks/bench_select.py [--pool POOL] [--rows 600000 --shards 10] [--repeats 5]
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import os
import shutil
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

COLUMN = "clip_l14_similarity_score"
FRACTION = 0.3


def plain(pool: str, out: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = sorted(os.path.join(pool, f) for f in os.listdir(pool) if f.endswith(".parquet"))
    with cf.ThreadPoolExecutor(os.cpu_count() or 1) as ex:
        table = pa.concat_tables(ex.map(lambda f: pq.read_table(f, columns=["uid", COLUMN]), files))
    scores = table.column(COLUMN).to_numpy()
    threshold = -np.sort(-scores)[int(len(scores) * FRACTION)]
    kept = table.column("uid").filter(pa.array(scores >= threshold)).to_pylist()
    pairs = np.frombuffer(bytes.fromhex("".join(kept)), dtype=">u8").reshape(-1, 2)
    uids = np.empty(len(pairs), np.dtype("u8,u8"))
    uids["f0"], uids["f1"] = pairs[:, 0], pairs[:, 1]
    np.save(out, np.sort(uids))


def main() -> None:
    if sys.argv[1:2] == ["--plain"]:
        plain(sys.argv[2], sys.argv[3])
        return
    from _common import python, run_measured, setup_pool, write_results

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    args, tmp, pool = setup_pool(ap, 600_000, 10, "bench_select_")
    try:
        ours_out, plain_out = os.path.join(tmp, "ours.npy"), os.path.join(tmp, "plain.npy")
        ours_cmd = [python(), "-m", "kl_filter", "select", "--name", "clip_score", "--arch", "l14", "--fraction",
                    str(FRACTION), "--metadata_dir", pool, "--save_path", ours_out, "--num_workers",
                    str(args.num_workers), "--no_progress"]
        plain_cmd = [python(), os.path.abspath(__file__), "--plain", pool, plain_out]
        load = os.getloadavg()
        ours, ref = [], []
        for _ in range(args.repeats):
            ours.append(run_measured(ours_cmd))
            ref.append(run_measured(plain_cmd))
        same = bool(np.array_equal(np.load(ours_out), np.load(plain_out)))
        kept = len(np.load(ours_out))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    t_o, t_p = min(r["seconds"] for r in ours), min(r["seconds"] for r in ref)
    c_o, c_p = min(r["cpu_s"] for r in ours), min(r["cpu_s"] for r in ref)
    rec = {"pool": args.pool or f"synthetic {args.rows} rows / {args.shards} shards", "num_workers": args.num_workers,
           "repeats": args.repeats, "kl_filter_s": [r["seconds"] for r in ours], "plain_s": [r["seconds"] for r in ref],
           "kl_filter_cpu_s": [r["cpu_s"] for r in ours], "plain_cpu_s": [r["cpu_s"] for r in ref],
           "cpu_ratio": round(c_o / c_p, 3),
           "kl_filter_peak_rss_gb": max(r["peak_rss_gb"] for r in ours),
           "plain_peak_rss_gb": max(r["peak_rss_gb"] for r in ref), "ratio": round(t_o / t_p, 3),
           "median_ratio": round(float(np.median([r["seconds"] for r in ours]) / np.median([r["seconds"] for r in ref])), 3),
           "median_cpu_ratio": round(float(np.median([r["cpu_s"] for r in ours]) / np.median([r["cpu_s"] for r in ref])), 3),
           "identical_uids": same, "kept": kept, "load_average_at_start": [round(v, 2) for v in load],
           "load_average_at_end": [round(v, 2) for v in os.getloadavg()], "date_end": time.strftime("%Y-%m-%d %H:%M:%S")}
    line = (f"select --name clip_score --arch l14 --fraction {FRACTION} on {rec['pool']}: kl-filter {t_o:.2f} s vs "
            f"plain pyarrow+NumPy {t_p:.2f} s = {t_o / t_p:.2f}× wall, CPU {c_o:.2f} vs {c_p:.2f} s = "
            f"{c_o / c_p:.2f}× (min of {args.repeats}; medians {rec['median_ratio']:.2f}× wall, "
            f"{rec['median_cpu_ratio']:.2f}× CPU; peak {rec['kl_filter_peak_rss_gb']} vs {rec['plain_peak_rss_gb']} GB), "
            f"identical UIDs {same}; load average {load[0]:.1f} at the start, "
            f"{rec['load_average_at_end'][0]:.1f} at the end (shared machine)")
    print(line)
    write_results("bench_select", rec, line)


if __name__ == "__main__":
    main()
