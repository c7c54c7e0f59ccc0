"""How cost grows: `kl-filter select` for D_KL, negCLIPLoss and SemDeDup at 0.25M, 0.5M, 1M and 2M rows: wall time,
CPU time and peak memory (the whole process tree) per row count, a linear fit per method, and a projection to
DataComp small (12.8M rows), medium (128M) and large (1.28B) on one CPU box, on one GPU (a projection) and on a
Ray cluster.

The pool: ``--base_rows`` distinct synthetic rows (``kl_filter.pool.synth``, shards of ``--shard_rows``); the
larger sizes repeat them: replica r of a shard is its parquet with every uid's first 8 hex digits XORed with r
(distinct uids) beside a link to the same npz. Synthesising 2M distinct rows takes longer than this whole run's
budget on 2 cores; the work per row of every method is the same for a repeated row as for a new one (the same
products and passes), but SemDeDup finds the repeats as exact duplicates, so its kept share above the base size
says nothing. Each size is the first shards of the largest (symlinks). The work per row is held constant so that
linear time is the expectation:

* D_KL (``--name kl --mode kl --target txt``): ``--num_samples`` fixed (``--kl_samples``, 2,048), not the default
  0.2% of the pool (with the default, N grows with the pool and time with n²: the projection says what that costs);
* negCLIPLoss: batches of ``--ncl_batch`` (2,048) and ONE pass, so that 2M rows fit in the budget on 2 cores: the
  per-row cost is ∝ the batch × passes, so the default (32,768, 10 passes) costs 160× per row;
* SemDeDup: K = rows / 4,000 (clusters of about 4,000 rows, as the paper's 50,000 clusters on 440M rows give
  8,800): the within-cluster step is then linear; the k-means sample (256·K rows, capped at 1M) and so the
  k-means (∝ sample·K) grow faster, and the projection counts them apart.

Runs go size by size (every method at 0.25M, then at 0.5M, ...). ``--budget_min`` bounds the whole run: a run whose
time, projected from that method's previous size by its rows, would end past the budget is skipped and recorded
as skipped with that projection.

    python benchmarks/bench_scaling.py [--sizes 250000 500000 1000000 2000000] [--methods kl negcliploss semdedup]
        [--base_rows 250000] [--budget_min 25] [--dir /tmp] [--pool EXISTING_BASE_POOL]

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
NCL_DEFAULT = (32768, 10)  # batch size and passes of --name negcliploss by default
KL_PROJECTED_N = 25600     # D_KL's N at the small pool's default 0.2%
D = 768
# GPU projection inputs (labelled as such; no GPU was measured by this benchmark):
# a fused Triton D_KL+D_KLR kernel like ours, D=768, N=25,600, one H100: docs/results.md#figures-measured-elsewhere
H100_KL_TARGETS_PER_S_N25600 = 12.6e6
GPU_FP32_TFLOPS = 0.7 * 67            # negCLIPLoss and SemDeDup run float32 with TF32 off: 70% of an H100/H200's 67
GPU_READ_ROWS_PER_S = 1.3e6           # the float16 key read at about 2 GB/s per node (docs/results.md)
RAY_OVERHEAD_S = 16                   # Ray start and task overhead measured by bench_ray (results/bench_ray.md)
CORES = os.cpu_count() or 1


def command(method: str, pool: str, rows: int, out: str, kl_samples: int, ncl_batch: int) -> list[str]:
    base = [python(), "-m", "kl_filter", "select", "--metadata_dir", pool, "--save_path", out, "--seed", "0",
            "--no_progress", "--num_workers", str(CORES)]
    if method == "kl":
        return base + ["--name", "kl", "--mode", "kl", "--arch", "l14", "--target", "txt", "--fraction", "0.3",
                       "--num_samples", str(kl_samples)]
    if method == "negcliploss":
        return base + ["--name", "negcliploss", "--arch", "l14", "--fraction", "0.3", "--batch_size", str(ncl_batch),
                       "--num_batches", "1"]
    if method == "semdedup":
        return base + ["--name", "semdedup", "--arch", "l14", "--eps", "0.01",
                       "--num_clusters", str(max(1, rows // ROWS_PER_CLUSTER))]
    raise ValueError(method)


def replicate(base: str, replicas: int, dst: str) -> str:
    """A pool of ``replicas`` copies of ``base``'s shards: copy r of shard i is shard ``r·S + i`` (S base shards),
    its parquet with every uid's first 8 hex digits XORed with r, its npz a link to the base's."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    os.makedirs(dst, exist_ok=True)
    stems = sorted(f[: -len(".parquet")] for f in os.listdir(base) if f.endswith(".parquet"))
    for r in range(replicas):
        for i, stem in enumerate(stems):
            name = f"{r * len(stems) + i:08d}"
            os.symlink(os.path.abspath(os.path.join(base, stem + ".npz")), os.path.join(dst, name + ".npz"))
            src = os.path.join(base, stem + ".parquet")
            if r == 0:
                os.symlink(os.path.abspath(src), os.path.join(dst, name + ".parquet"))
                continue
            t = pq.read_table(src)
            uid = t.column("uid").to_pylist()
            new = [f"{int(u[:8], 16) ^ r:08x}{u[8:]}" for u in uid]
            t = t.set_column(t.schema.get_field_index("uid"), "uid", pa.array(new, pa.string()))
            pq.write_table(t, os.path.join(dst, name + ".parquet"))
    return dst


def kmeans_model() -> dict:
    """CPU seconds per unit of SemDeDup's k-means on this machine, measured once in-process on random unit rows
    (d = 768, K = 128): k-means++ per (rows·K·trials) on its SEED_PER_CLUSTER·K rows (one thread), and faiss's Lloyd
    iterations per (iterations·m·K) on a 256·K-row sample (the iterations faiss ran counted; CPU seconds of its
    KMEANS_THREADS threads)."""
    from kl_filter.engines import single_blas_thread
    from kl_filter.scorers.semdedup import (DEFAULT_ITERATIONS, SAMPLE_PER_CLUSTER, SEED_PER_CLUSTER, _kmeanspp,
                                            spherical_kmeans)

    k = 128
    m, seed_rows = SAMPLE_PER_CLUSTER * k, SEED_PER_CLUSTER * k
    rng = np.random.default_rng(0)
    x = rng.standard_normal((m, D), np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    with single_blas_thread():  # CPU seconds: one thread, and steadier than wall time on a shared machine
        t0 = time.process_time()
        _kmeanspp(x[:seed_rows], k, np.random.default_rng(0))
        t_pp = time.process_time() - t0
    t0 = time.process_time()
    _, info = spherical_kmeans(x, k, DEFAULT_ITERATIONS, 0, "random")
    t_lloyd = time.process_time() - t0
    its = max(1, len(info["objective"]))
    return {"kmeanspp_s_per_unit": t_pp / (seed_rows * k * trials(k)),
            "lloyd_s_per_unit": t_lloyd / (its * m * k),
            "measured": {"m": m, "k": k, "seed_rows": seed_rows, "kmeanspp_s": round(t_pp, 2),
                         "lloyd_s": round(t_lloyd, 2), "lloyd_iterations": its}}


def trials(k: int) -> int:
    return 2 + int(np.log(k))  # k-means++ candidates per centre (kl_filter.scorers.semdedup._kmeanspp)


def kmeans_seconds(model: dict, rows: int, init: str = "k-means++", wall: bool = True) -> float:
    """Projected k-means seconds for a pool of ``rows`` at K = rows / ROWS_PER_CLUSTER (sample min(256·K, 1M)):
    wall time (the Lloyd iterations on KMEANS_THREADS threads, k-means++ on a thread per block of KMEANSPP_BLOCK
    seed rows, at most the cores), or with ``wall=False`` the CPU seconds the model measured."""
    from kl_filter.scorers.semdedup import (DEFAULT_ITERATIONS, KMEANS_THREADS, KMEANSPP_BLOCK, SAMPLE_CAP,
                                            SAMPLE_PER_CLUSTER, SEED_PER_CLUSTER)

    k = max(1, rows // ROWS_PER_CLUSTER)
    m = min(SAMPLE_PER_CLUSTER * k, SAMPLE_CAP, rows)
    lloyd = model["lloyd_s_per_unit"] * DEFAULT_ITERATIONS * m * k  # every iteration run: an upper bound
    seed_rows = min(SEED_PER_CLUSTER * k, m)
    pp = model["kmeanspp_s_per_unit"] * seed_rows * k * trials(k) if init == "k-means++" else 0.0
    if wall:
        lloyd /= min(KMEANS_THREADS, CORES)
        pp /= min(CORES, -(-seed_rows // KMEANSPP_BLOCK))
    return lloyd + pp


def slope(n: np.ndarray, t: np.ndarray) -> tuple[float, float]:
    """(a, b) of the least-squares t = a + b·n (b = t/n for one size)."""
    if len(n) < 2:
        return 0.0, float(t[0] / n[0])
    b, a = np.polyfit(n, t, 1)
    return float(a), float(b)


def busy_seconds(r: dict, model: dict | None) -> float:
    """What a run would take on this box with nothing else running: its CPU seconds spread over the cores (the
    engine keeps every core busy), except SemDeDup's k-means, which runs on its own threads (modelled, ``model``)."""
    if not model:
        return r["cpu_s"] / CORES
    return (r["cpu_s"] - kmeans_seconds(model, r["rows"], wall=False)) / CORES + kmeans_seconds(model, r["rows"])


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
    return {"sizes": f"{len(n)}: {n[0] / 1e6:g}–{n[-1] / 1e6:g}M", "fixed_s": round(a, 1),
            "s_per_million_rows": round(b * 1e6, 2),
            "wall_s_per_million_rows": round(b_wall * 1e6, 2), "scores_s_per_million_rows": round(b_scores * 1e6, 2),
            "per_row_cost_largest_over_smallest": round(float(per_row[-1] / per_row[0]), 2),
            "peak_rss_largest_over_smallest": round(runs[-1]["peak_rss_gb"] / runs[0]["peak_rss_gb"], 2)}


def hours(s: float) -> str:
    return f"{s / 3600:,.1f} h" if s >= 3600 else f"{s / 60:,.0f} min" if s >= 60 else f"{s:.0f} s"


def projection(method: str, f: dict, model: dict | None, kl_samples: int, ncl_batch: int) -> dict:
    """Projected seconds per DataComp scale: this CPU box, one GPU, a Ray cluster of 32 such boxes."""
    b = f["s_per_million_rows"] / 1e6
    out = {}
    for scale, n in DATACOMP.items():
        cpu = b * n
        if method == "kl":  # the scores stage ∝ N: measured at kl_samples, projected at the small pool's 0.2%
            cpu += f["scores_s_per_million_rows"] / 1e6 * n * (KL_PROJECTED_N / kl_samples - 1)
            gpu = n / H100_KL_TARGETS_PER_S_N25600
        elif method == "negcliploss":  # the scores stage ∝ batch × passes: projected at the defaults
            batch, passes = NCL_DEFAULT
            cpu += f["scores_s_per_million_rows"] / 1e6 * n * (batch / ncl_batch * passes - 1)
            gpu = passes * n * 2 * 2 * D * batch / (GPU_FP32_TFLOPS * 1e12)
        else:  # the within-cluster step on the GPU; the k-means (on the driver's CPU) is added to all three
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
    from kl_filter.scorers.semdedup import KMEANS_THREADS

    os.makedirs(RESULTS, exist_ok=True)
    tmp = os.path.join(RESULTS, ".scaling.json.tmp")
    with open(tmp, "w") as f:
        json.dump(record, f, indent=2)
    os.replace(tmp, os.path.join(RESULTS, "scaling.json"))
    m, prm = record["machine"], record["params"]
    lines = [
        "# How cost grows (`benchmarks/bench_scaling.py`)", "",
        f"{record['date']} · {m['cpu']} ×{m['cores']}, {m.get('memory_gb', '?')} GB · {record['note']}", "",
        "`kl-filter select`, whole process (start-up included), peak RSS of the process tree. D_KL at "
        f"--num_samples {prm['kl_samples']:,}; negCLIPLoss one pass of batches of {prm['ncl_batch']:,}; SemDeDup "
        f"K = rows / {ROWS_PER_CLUSTER:,}. The pool: {prm['base_rows']:,} distinct synthetic rows in shards of "
        f"{prm['shard_rows']:,}, the larger sizes their replicas (new uids, the same embeddings: the same work per "
        "row; SemDeDup's kept share there counts the repeats as duplicates). Wall time as measured (the load "
        "average at each start is in the last column: other jobs shared the cores), CPU time of the process tree, "
        f"and the busy time: the CPU time over the {CORES} cores (SemDeDup's k-means as modelled, on its threads), "
        "what an otherwise idle box would take.", "",
        "| method | rows | K / passes | wall s | CPU s | busy s | rows/s (busy) | peak RSS GB | load |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in record["runs"]:
        if r.get("skipped"):
            lines.append(f"| {r['method']} | {r['rows']:,} | {r.get('detail', '')} | skipped: {r['skipped']} | | | | | |")
            continue
        busy = busy_seconds(r, record["kmeans_model"] if r["method"] == "semdedup" else None)
        lines.append(f"| {r['method']} | {r['rows']:,} | {r.get('detail', '')} | {r['seconds']:.1f} | "
                     f"{r['cpu_s']:.1f} | {busy:.1f} | {r['rows'] / busy:,.0f} | {r['peak_rss_gb']:.2f} | "
                     f"{r['load'][0]:.1f} |")
    lines += ["", "Linear fit of the busy time t = a + b·n per method over the sizes measured (SemDeDup: less its "
              "modelled k-means); per-row busy cost at the largest size over the smallest (1.0 = linear) and peak "
              "memory likewise (1.0 = flat):", "",
              "| method | sizes | fixed s | s per 1M rows (busy) | s per 1M rows (wall, shared) | per-row cost "
              "largest/smallest | peak RSS largest/smallest |", "|---|---|---:|---:|---:|---:|---:|"]
    for meth, f in record["fits"].items():
        lines.append(f"| {meth} | {f['sizes']} | {f['fixed_s']} | {f['s_per_million_rows']} | "
                     f"{f['wall_s_per_million_rows']} | {f['per_row_cost_largest_over_smallest']} | "
                     f"{f['peak_rss_largest_over_smallest']} |")
    km = record["kmeans_model"]["measured"]
    lines += ["", "**Projection** (not measured at these sizes): the fitted per-row busy cost times the rows, on "
              f"this box; D_KL at the small pool's N = {KL_PROJECTED_N:,} (per-row cost ∝ N; the default 0.2% of a "
              "larger pool is 256,000 / 2,560,000 samples: 10× / 100× more per row, so fix --num_samples there), "
              f"negCLIPLoss at its defaults (batch {NCL_DEFAULT[0]:,}, {NCL_DEFAULT[1]} passes: "
              f"{NCL_DEFAULT[0] * NCL_DEFAULT[1] // prm['ncl_batch']}× the measured scores stage per row), SemDeDup "
              f"at K = rows / {ROWS_PER_CLUSTER:,} with its k-means (Lloyd on {KMEANS_THREADS} threads; grows as "
              f"K·min(256·K, 1M), modelled "
              f"from one timing at K = {km['k']}: k-means++ {km['kmeanspp_s']} CPU s on {km['seed_rows']:,} rows, "
              f"{km['lloyd_iterations']} Lloyd iterations {km['lloyd_s']} CPU s on {km['m']:,} rows, projected at all "
              "25 iterations) added to every column. One GPU (a projection: no GPU ran here): D_KL from the H100 "
              "figure of docs/results.md (measured elsewhere) for a fused kernel like ours (12.6M targets/s at "
              "N = 25,600), negCLIPLoss and SemDeDup's within-cluster step at 70% of 67 TFLOP/s float32 (TF32 "
              "off), floored by reading the key at 1.3M rows/s. Ray: 32 boxes like this one, the CPU figure / 32 + "
              f"{RAY_OVERHEAD_S} s of start-up (bench_ray).", "",
              "| method | scale | this CPU box | one GPU (projection) | Ray, 32 boxes | k-means (k-means++ / random) |",
              "|---|---|---:|---:|---:|---|"]
    for meth, p in record["projection"].items():
        for scale, v in p.items():
            km = f"{hours(v['kmeans_s'])} / {hours(v['kmeans_random_init_s'])}" if "kmeans_s" in v else ""
            lines.append(f"| {meth} | {scale} ({DATACOMP[scale] / 1e6:,.1f}M) | {hours(v['cpu_box_s'])} | "
                         f"{hours(v['gpu_s'])} | {hours(v['ray_32_boxes_s'])} | {km} |")
    with open(os.path.join(RESULTS, "scaling.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


def refit(record: dict, method: str) -> None:
    """``record``'s fit and projection of ``method`` from its measured runs."""
    mine = [r for r in record["runs"] if r["method"] == method and not r.get("skipped")]
    model = record["kmeans_model"] if method == "semdedup" else None
    record["fits"][method] = fit(mine, model)
    record["projection"][method] = projection(method, record["fits"][method], model, record["params"]["kl_samples"],
                                              record["params"]["ncl_batch"])


def rewrite() -> None:
    """Fits and projections of the recorded runs, again (the runs and the k-means timing stay as measured)."""
    with open(os.path.join(RESULTS, "scaling.json")) as f:
        record = json.load(f)
    for method in {r["method"] for r in record["runs"]}:
        refit(record, method)
    write(record)
    print("rewrote results/scaling.json and results/scaling.md from the recorded runs")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[250_000, 500_000, 1_000_000, 2_000_000])
    ap.add_argument("--methods", nargs="+", default=["kl", "negcliploss", "semdedup"])
    ap.add_argument("--base_rows", type=int, default=250_000, help="distinct rows synthesised (the rest: replicas)")
    ap.add_argument("--shard_rows", type=int, default=62_500)
    ap.add_argument("--kl_samples", type=int, default=2048)
    ap.add_argument("--ncl_batch", type=int, default=2048)
    ap.add_argument("--budget_min", type=float, default=25.0, help="the whole run, pool synthesis included")
    ap.add_argument("--pool", default=None, help="an existing pool of --base_rows rows in shards of --shard_rows")
    ap.add_argument("--dir", default=None, help="where to write the pool and outputs (default: a temp dir)")
    ap.add_argument("--note", default="a 2-core machine shared with other jobs (see the load column)")
    ap.add_argument("--rewrite", action="store_true", help="measure nothing: refit and re-project the runs recorded "
                    "in results/scaling.json (after a change to the model) and rewrite both files")
    args = ap.parse_args()
    if args.rewrite:
        return rewrite()
    t_start = time.perf_counter()
    sizes = sorted(args.sizes)
    if any(n % args.shard_rows for n in sizes + [args.base_rows]) or sizes[-1] % args.base_rows:
        sys.exit("every size and --base_rows must be multiples of --shard_rows, the largest size of --base_rows")
    root = tempfile.mkdtemp(prefix="bench_scaling_", dir=args.dir)
    record = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine(), "note": args.note,
              "params": {"base_rows": args.base_rows, "shard_rows": args.shard_rows, "kl_samples": args.kl_samples,
                         "ncl_batch": args.ncl_batch, "budget_min": args.budget_min},
              "runs": [], "fits": {}, "projection": {}}
    try:
        base = args.pool
        if base is None:
            from kl_filter.pool.synth import synth_pool

            base = os.path.join(root, "base")
            t0 = time.perf_counter()
            synth_pool(base, rows=args.base_rows, shards=args.base_rows // args.shard_rows, seed=0,
                       num_workers=CORES)
            record["pool_write_s"] = round(time.perf_counter() - t0, 1)
            print(f"pool of {args.base_rows:,} rows written in {record['pool_write_s']} s", flush=True)
        pool = replicate(base, sizes[-1] // args.base_rows, os.path.join(root, "pool"))
        record["kmeans_model"] = kmeans_model()
        print(f"k-means model: {record['kmeans_model']['measured']}", flush=True)
        subsets = {n: subset_pool(pool, n // args.shard_rows, os.path.join(root, f"pool_{n}")) for n in sizes}
        budget = args.budget_min * 60
        for rows in sizes:
            for method in args.methods:
                detail = {"kl": f"N={args.kl_samples}", "negcliploss": f"batch {args.ncl_batch}, 1 pass",
                          "semdedup": f"K={max(1, rows // ROWS_PER_CLUSTER)}"}[method]
                mine = [x for x in record["runs"] if x["method"] == method and not x.get("skipped")]
                if mine:  # this run's wall time, projected from the method's last size by its rows
                    guess = mine[-1]["seconds"] * rows / mine[-1]["rows"]
                    left = budget - (time.perf_counter() - t_start)
                    if guess > left:
                        record["runs"].append({"method": method, "rows": rows, "detail": detail,
                                               "skipped": f"projected {guess:.0f} s > {max(0, left):.0f} s left"})
                        print(f"{method:12s} {rows:>10,} rows: skipped (projected {guess:.0f} s, {left:.0f} s left)",
                              flush=True)
                        write(record)
                        continue
                out = os.path.join(root, f"{method}_{rows}.npy")
                load = os.getloadavg()
                run = run_measured(command(method, subsets[rows], rows, out, args.kl_samples, args.ncl_batch))
                with open(out + ".json") as f:
                    side = json.load(f)
                r = {"method": method, "rows": rows, "detail": detail, "seconds": run["seconds"],
                     "cpu_s": run["cpu_s"], "peak_rss_gb": run["peak_rss_gb"], "timings": side.get("timings"),
                     "kept": side.get("kept"), "load": [round(v, 2) for v in load]}
                record["runs"].append(r)
                print(f"{method:12s} {rows:>10,} rows: {run['seconds']:8.1f} s wall, {run['cpu_s']:8.1f} s CPU, "
                      f"peak {run['peak_rss_gb']:.2f} GB (load {load[0]:.1f})", flush=True)
                for f in (out, out + ".json"):
                    if os.path.exists(f):
                        os.remove(f)
                refit(record, method)
                record["elapsed_s"] = round(time.perf_counter() - t_start, 1)
                write(record)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"wrote results/scaling.json and results/scaling.md ({time.perf_counter() - t_start:.0f} s)")


if __name__ == "__main__":
    main()
