"""How cost grows: `kl-filter select` for D_KL, negCLIPLoss and SemDeDup at 0.25M, 0.5M, 1M and 2M rows: wall time
and peak memory (the whole process tree) per row count, a linear fit per method, and a projection to DataComp
small (12.8M rows), medium (128M) and large (1.28B) on one CPU box, on one GPU and on a Ray cluster.

One synthetic pool of the largest size (``kl_filter.pool.synth``, shards of ``--shard_rows``); each smaller size is
its first shards (symlinks), so every size reads the same kind of rows. Per method, the work per row is held
constant so that linear time is the expectation:

* D_KL (``--name kl --mode kl --target txt``): ``--num_samples`` fixed (4,096), not the default 0.2% of the pool
  (with the default, N grows with the pool and time with n²: the projection says what that costs);
* negCLIPLoss: batches of 4,096 and ONE pass (``--batch_size 4096 --num_batches 1``, so that 2M rows fit in a
  session on 2 cores): the per-row cost is ∝ the batch, so the default (32,768, 10 passes) costs 80× per row;
* SemDeDup: K = rows / 4,000 (clusters of about 4,000 rows, as the paper's 50,000 clusters on 440M rows give
  8,800): the within-cluster step is then linear; the k-means sample (256·K rows, capped at 1M) and so the
  k-means (∝ sample·K) grow faster, and the projection counts them apart.

    python benchmarks/bench_scaling.py [--sizes 250000 500000 1000000 2000000] [--methods kl negcliploss semdedup]
        [--dir /tmp] [--pool EXISTING_POOL_OF_THE_LARGEST_SIZE]

Results: results/scaling.json (every run, written after each one, so a stopped run keeps what it measured) and
results/scaling.md (tables and the projection, rewritten after each run).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import RESULTS, machine, python, run_measured, subset_pool  # noqa: E402

DATACOMP = {"small": 12_800_000, "medium": 128_000_000, "large": 1_280_000_000}
ROWS_PER_CLUSTER = 4000
KL_SAMPLES = 4096
NCL_BATCH = 4096
NCL_DEFAULT = (32768, 10)  # batch size and passes of --name negcliploss by default
D = 768
# GPU projection inputs (labelled as such; no GPU was measured by this benchmark):
# a fused Triton D_KL+D_KLR kernel like ours, D=768, N=25,600, one H100: docs/results.md#figures-measured-elsewhere
H100_KL_TARGETS_PER_S_N25600 = 12.6e6
GPU_FP32_TFLOPS = 0.7 * 67            # negCLIPLoss and SemDeDup run float32 with TF32 off: 70% of an H100/H200's 67
GPU_READ_ROWS_PER_S = 1.3e6           # the float16 key read at about 2 GB/s per node (docs/results.md)
RAY_OVERHEAD_S = 16                   # Ray start and task overhead measured by bench_ray (results/bench_ray.md)
CORES = os.cpu_count() or 1


def command(method: str, pool: str, rows: int, out: str) -> list[str]:
    base = [python(), "-m", "kl_filter", "select", "--metadata_dir", pool, "--save_path", out, "--seed", "0",
            "--no_progress", "--num_workers", str(os.cpu_count() or 1)]
    if method == "kl":
        return base + ["--name", "kl", "--mode", "kl", "--arch", "l14", "--target", "txt", "--fraction", "0.3",
                       "--num_samples", str(KL_SAMPLES)]
    if method == "negcliploss":
        return base + ["--name", "negcliploss", "--arch", "l14", "--fraction", "0.3", "--batch_size", str(NCL_BATCH),
                       "--num_batches", "1"]
    if method == "semdedup":
        return base + ["--name", "semdedup", "--arch", "l14", "--eps", "0.01",
                       "--num_clusters", str(max(1, rows // ROWS_PER_CLUSTER))]
    raise ValueError(method)


def kmeans_model() -> dict:
    """CPU seconds per unit of SemDeDup's k-means on this machine, measured once in-process on random unit rows
    (m = 32,768, K = 128, d = 768, one thread): k-means++ per (m·K·trials), the 25 Lloyd iterations per (25·m·K)."""
    from kl_filter.engines import single_blas_thread
    from kl_filter.scorers.semdedup import DEFAULT_ITERATIONS, _kmeanspp, spherical_kmeans

    m, k = 32768, 128
    rng = np.random.default_rng(0)
    x = rng.standard_normal((m, D), np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    with single_blas_thread():  # CPU seconds: one thread, and steadier than wall time on a shared machine
        t0 = time.process_time()
        _kmeanspp(x, k, np.random.default_rng(0))
        t_pp = time.process_time() - t0
    t0 = time.process_time()
    spherical_kmeans(x, k, DEFAULT_ITERATIONS, 0, "random")
    t_lloyd = time.process_time() - t0
    return {"kmeanspp_s_per_unit": t_pp / (m * k * trials(k)),
            "lloyd_s_per_unit": t_lloyd / (DEFAULT_ITERATIONS * m * k),
            "measured": {"m": m, "k": k, "kmeanspp_s": round(t_pp, 2), "lloyd_25_s": round(t_lloyd, 2)}}


def trials(k: int) -> int:
    return 2 + int(np.log(k))  # k-means++ candidates per centre (kl_filter.scorers.semdedup._kmeanspp)


def kmeans_seconds(model: dict, rows: int, init: str = "k-means++") -> float:
    """Projected k-means seconds for a pool of ``rows`` at K = rows / ROWS_PER_CLUSTER (sample min(256·K, 1M))."""
    from kl_filter.scorers.semdedup import DEFAULT_ITERATIONS, SAMPLE_CAP, SAMPLE_PER_CLUSTER

    k = max(1, rows // ROWS_PER_CLUSTER)
    m = min(SAMPLE_PER_CLUSTER * k, SAMPLE_CAP, rows)
    lloyd = model["lloyd_s_per_unit"] * DEFAULT_ITERATIONS * m * k
    return lloyd + (model["kmeanspp_s_per_unit"] * m * k * trials(k) if init == "k-means++" else 0.0)


def slope(n: np.ndarray, t: np.ndarray) -> tuple[float, float]:
    """(a, b) of the least-squares t = a + b·n (b = t/n for one size)."""
    if len(n) < 2:
        return 0.0, float(t[0] / n[0])
    b, a = np.polyfit(n, t, 1)
    return float(a), float(b)


def busy_seconds(r: dict, model: dict | None) -> float:
    """What a run would take on this box with nothing else running: its CPU seconds spread over the cores (the
    engine keeps every core busy), except SemDeDup's k-means, which runs on one thread (modelled, ``model``)."""
    km = kmeans_seconds(model, r["rows"]) if model else 0.0
    return (r["cpu_s"] - km) / CORES + km


def fit(runs: list[dict], model: dict | None = None) -> dict:
    """Least-squares t = a + b·n over the sizes, for the wall time as measured and for the busy time
    (:func:`busy_seconds`: what the projection uses, the machine being shared), less the modelled k-means for
    SemDeDup (it grows as K², not as n); the scores stage's slope; the per-row cost at the largest size over the
    smallest; the peak memory likewise."""
    n = np.array([r["rows"] for r in runs], float)
    wall = np.array([r["seconds"] for r in runs], float)
    busy = np.array([busy_seconds(r, model) for r in runs])
    km = np.array([kmeans_seconds(model, int(r)) for r in n]) if model else np.zeros(len(n))
    a, b = slope(n, busy - km)
    _, b_wall = slope(n, wall)
    # the scores stage's share of the busy time, from its share of the wall time (the sidecar's timings)
    _, b_scores = slope(n, busy * np.array([r["timings"]["scores_s"] / r["seconds"] for r in runs]))
    per_row = busy / n
    return {"fixed_s": round(a, 1), "s_per_million_rows": round(b * 1e6, 2),
            "wall_s_per_million_rows": round(b_wall * 1e6, 2), "scores_s_per_million_rows": round(b_scores * 1e6, 2),
            "per_row_cost_largest_over_smallest": round(float(per_row[-1] / per_row[0]), 2),
            "peak_rss_largest_over_smallest": round(runs[-1]["peak_rss_gb"] / runs[0]["peak_rss_gb"], 2)}


def hours(s: float) -> str:
    return f"{s / 3600:,.1f} h" if s >= 3600 else f"{s / 60:,.0f} min" if s >= 60 else f"{s:.0f} s"


def projection(method: str, f: dict, model: dict | None = None) -> dict:
    """Projected seconds per DataComp scale: this CPU box, one GPU, a Ray cluster of 32 such boxes."""
    b = f["s_per_million_rows"] / 1e6
    out = {}
    for scale, n in DATACOMP.items():
        cpu = b * n
        if method == "kl":  # the scores stage ∝ N: measured at 4,096, projected at the small pool's 0.2% = 25,600
            cpu += f["scores_s_per_million_rows"] / 1e6 * n * (25600 / KL_SAMPLES - 1)
            gpu = n / H100_KL_TARGETS_PER_S_N25600
        elif method == "negcliploss":  # the scores stage ∝ batch × passes: projected at the defaults
            batch, passes = NCL_DEFAULT
            cpu += f["scores_s_per_million_rows"] / 1e6 * n * (batch / NCL_BATCH * passes - 1)
            gpu = passes * n * 2 * 2 * D * batch / (GPU_FP32_TFLOPS * 1e12)
        else:  # the within-cluster step on the GPU; the k-means (one CPU thread, on the driver) is added to all three
            gpu = n * ROWS_PER_CLUSTER * D * 2 / (GPU_FP32_TFLOPS * 1e12)
        gpu = max(gpu, n / GPU_READ_ROWS_PER_S)  # never faster than reading the key
        ray = cpu / 32 + RAY_OVERHEAD_S
        if method == "semdedup":
            km = kmeans_seconds(model, n)
            cpu, gpu, ray = cpu + km, gpu + km, ray + km
            out[scale] = {"kmeans_s": round(km), "kmeans_random_init_s": round(kmeans_seconds(model, n, "random"))}
        out[scale] = {**out.get(scale, {}), "cpu_box_s": round(cpu), "gpu_s": round(gpu), "ray_32_boxes_s": round(ray)}
    return out


def write(record: dict) -> None:
    os.makedirs(RESULTS, exist_ok=True)
    tmp = os.path.join(RESULTS, ".scaling.json.tmp")
    with open(tmp, "w") as f:
        json.dump(record, f, indent=2)
    os.replace(tmp, os.path.join(RESULTS, "scaling.json"))
    m = record["machine"]
    lines = [
        "# How cost grows (`benchmarks/bench_scaling.py`)", "",
        f"{record['date']} · {m['cpu']} ×{m['cores']}, {m.get('memory_gb', '?')} GB · "
        f"{record['note']}", "",
        "`kl-filter select`, whole process (start-up included), peak RSS of the process tree. D_KL at "
        f"--num_samples {KL_SAMPLES}; negCLIPLoss one pass of batches of {NCL_BATCH:,}; SemDeDup K = rows / "
        f"{ROWS_PER_CLUSTER:,}. Wall time as measured (the load average at each start is in the last column: "
        "other jobs shared the cores), CPU time of the process tree, and the busy time: the CPU time over the "
        f"{CORES} cores (SemDeDup's one-thread k-means counted whole), what an otherwise idle box would take.", "",
        "| method | rows | K / passes | wall s | CPU s | busy s | rows/s (busy) | peak RSS GB | load |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in record["runs"]:
        busy = busy_seconds(r, record["kmeans_model"] if r["method"] == "semdedup" else None)
        lines.append(f"| {r['method']} | {r['rows']:,} | {r.get('detail', '')} | {r['seconds']:.1f} | "
                     f"{r['cpu_s']:.1f} | {busy:.1f} | {r['rows'] / busy:,.0f} | {r['peak_rss_gb']:.2f} | "
                     f"{r['load'][0]:.1f} |")
    lines += ["", "Linear fit of the busy time t = a + b·n per method (SemDeDup: less its modelled k-means); per-row "
              "busy cost at the largest size over the smallest (1.0 = linear) and peak memory likewise (1.0 = flat):",
              "", "| method | fixed s | s per 1M rows (busy) | s per 1M rows (wall, shared) | per-row cost "
              "largest/smallest | peak RSS largest/smallest |", "|---|---:|---:|---:|---:|---:|"]
    for meth, f in record["fits"].items():
        lines.append(f"| {meth} | {f['fixed_s']} | {f['s_per_million_rows']} | {f['wall_s_per_million_rows']} | "
                     f"{f['per_row_cost_largest_over_smallest']} | {f['peak_rss_largest_over_smallest']} |")
    lines += ["", "**Projection** (not measured at these sizes): the fitted per-row busy cost times the rows, on "
              "this box; D_KL at the small pool's N = 25,600 (per-row cost ∝ N; the default 0.2% of a larger pool is "
              "256,000 / 2,560,000 samples: 10× / 100× more per row, so fix --num_samples there), negCLIPLoss at "
              "its defaults (batch 32,768, 10 passes: 80× the measured scores stage per row), SemDeDup at K = "
              f"rows / {ROWS_PER_CLUSTER:,} with its k-means (one thread; grows as K·min(256·K, 1M), modelled from "
              "one timing: k-means column) added to every column. One GPU: D_KL from the H100 figure of "
              "docs/results.md (measured elsewhere) for a fused kernel like ours (12.6M targets/s at N = 25,600), "
              "negCLIPLoss and SemDeDup's within-cluster "
              "step at 70% of 67 TFLOP/s float32 (TF32 off), floored by reading the key at 1.3M rows/s. Ray: 32 "
              f"boxes like this one, the CPU figure / 32 + {RAY_OVERHEAD_S} s of start-up (bench_ray).", "",
              "| method | scale | this CPU box | one GPU (projection) | Ray, 32 boxes | k-means (k-means++ / random) |",
              "|---|---|---:|---:|---:|---|"]
    for meth, p in record["projection"].items():
        for scale, v in p.items():
            km = f"{hours(v['kmeans_s'])} / {hours(v['kmeans_random_init_s'])}" if "kmeans_s" in v else ""
            lines.append(f"| {meth} | {scale} ({DATACOMP[scale] / 1e6:,.1f}M) | {hours(v['cpu_box_s'])} | "
                         f"{hours(v['gpu_s'])} | {hours(v['ray_32_boxes_s'])} | {km} |")
    with open(os.path.join(RESULTS, "scaling.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[250_000, 500_000, 1_000_000, 2_000_000])
    ap.add_argument("--methods", nargs="+", default=["kl", "semdedup", "negcliploss"])
    ap.add_argument("--shard_rows", type=int, default=62_500)
    ap.add_argument("--pool", default=None, help="an existing synthetic pool of at least the largest size")
    ap.add_argument("--dir", default=None, help="where to write the pool and outputs (default: a temp dir)")
    ap.add_argument("--note", default="a 2-core machine shared with other jobs (see the load column)")
    args = ap.parse_args()
    sizes = sorted(args.sizes)
    if any(s % args.shard_rows for s in sizes):
        sys.exit("every size must be a multiple of --shard_rows")
    root = tempfile.mkdtemp(prefix="bench_scaling_", dir=args.dir)
    record = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine(), "note": args.note,
              "shard_rows": args.shard_rows, "runs": [], "fits": {}, "projection": {}}
    try:
        pool = args.pool
        if pool is None:
            from kl_filter.pool.synth import synth_pool

            pool = os.path.join(root, "pool")
            t0 = time.perf_counter()
            synth_pool(pool, rows=sizes[-1], shards=sizes[-1] // args.shard_rows, seed=0,
                       num_workers=os.cpu_count() or 1)
            record["pool_write_s"] = round(time.perf_counter() - t0, 1)
            print(f"pool of {sizes[-1]:,} rows written in {record['pool_write_s']} s", flush=True)
        record["kmeans_model"] = kmeans_model()
        print(f"k-means model: {record['kmeans_model']['measured']}", flush=True)
        subsets = {n: subset_pool(pool, n // args.shard_rows, os.path.join(root, f"pool_{n}")) for n in sizes}
        for method in args.methods:
            for rows in sizes:
                p = subsets[rows]
                out = os.path.join(root, f"{method}_{rows}.npy")
                load = os.getloadavg()
                run = run_measured(command(method, p, rows, out))
                side = json.load(open(out + ".json"))
                detail = {"kl": f"N={KL_SAMPLES}", "negcliploss": "1 pass",
                          "semdedup": f"K={max(1, rows // ROWS_PER_CLUSTER)}"}[method]
                r = {"method": method, "rows": rows, "detail": detail, "seconds": run["seconds"], "cpu_s": run["cpu_s"],
                     "peak_rss_gb": run["peak_rss_gb"], "timings": side.get("timings"),
                     "load": [round(v, 2) for v in load]}
                record["runs"].append(r)
                print(f"{method:12s} {rows:>10,} rows: {run['seconds']:8.1f} s, {rows / run['seconds']:9,.0f} rows/s, "
                      f"peak {run['peak_rss_gb']:.2f} GB (load {load[0]:.1f})", flush=True)
                for f in (out, out + ".json"):
                    if os.path.exists(f):
                        os.remove(f)
                mine = [x for x in record["runs"] if x["method"] == method]
                model = record["kmeans_model"] if method == "semdedup" else None
                record["fits"][method] = fit(mine, model)
                record["projection"][method] = projection(method, record["fits"][method], model)
                write(record)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print("wrote results/scaling.json and results/scaling.md")


if __name__ == "__main__":
    main()
