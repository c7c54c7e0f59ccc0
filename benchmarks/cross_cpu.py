"""Scores and UID files across CPU kernels: what changes when the same pool is filtered on another x86 CPU.

One machine stands in for several CPUs: each variant reruns the main recipes in a child process whose environment
(and only the child's) selects another BLAS kernel with ``OPENBLAS_CORETYPE`` (NumPy's bundled OpenBLAS, a
DYNAMIC_ARCH build, picks the kernel at load time from it), and one variant also turns NumPy's own AVX2/FMA
loops off (``NPY_DISABLE_CPU_FEATURES``: float32 exp and log as on a CPU without AVX2). Every child records
the kernel threadpoolctl reports and a canary (the sha256 of a fixed float32 product, and its GFLOP/s at one
thread), so a variant whose setting did not take effect shows up as a copy of another.

Per score column: how many values differ from the native run, the largest absolute difference (also in float32
ulps of the column's largest magnitude), and the rows beyond rounding (``OUTLIER_ULPS``). Per recipe: whether the
UID file is byte-identical, and if not, how many rows differ and how many of those sit at a float32 tie of a rule
(the row's score within that column's measured cross-kernel difference of the rule's threshold, in either run);
and how many rows per million the column's density puts that close to the threshold. Results:
``results/cross_cpu.md`` (the table printed here, with its reading) and ``results/cross_cpu.json``.

    python benchmarks/cross_cpu.py [--rows 20000] [--shards 4] [--variants native,Zen,Sandybridge,...]
        [--work /tmp/kl_cross_cpu]   # finished variants in --work are reused by a rerun

This is a benchmark, run by hand; tests and CI never set these variables (on some processors older OpenBLAS
builds compute wrong results with a forced core type).
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import RESULTS, machine, python, unit_rows  # noqa: E402

NPY_V2 = "X86_V3 X86_V4 AVX512_ICL AVX512_SPR"  # NumPy's dispatch targets above x86-64-v2: off
VARIANTS = {  # name -> the child's extra environment
    "native": {},
    "Haswell": {"OPENBLAS_CORETYPE": "Haswell"},
    "Zen": {"OPENBLAS_CORETYPE": "Zen"},
    "SkylakeX": {"OPENBLAS_CORETYPE": "SkylakeX"},  # run only where the CPU has AVX-512
    "Sandybridge": {"OPENBLAS_CORETYPE": "Sandybridge"},
    "Nehalem": {"OPENBLAS_CORETYPE": "Nehalem"},
    "Prescott": {"OPENBLAS_CORETYPE": "Prescott"},
    "Sandybridge+numpy_v2": {"OPENBLAS_CORETYPE": "Sandybridge", "NPY_DISABLE_CPU_FEATURES": NPY_V2},
}
KL = ["--num_samples", "4096"]
DEFAULT_SAMPLES = "@scores_default_samples"
NCL = ["--batch_size", "4096", "--num_batches", "3"]


def recipes(assets: str) -> list[tuple[str, list]]:
    """(output name, CLI arguments after the command) of every run. They share the scores directory ``scores``,
    but for those that name another with an ``@`` argument: the recipes that cannot take --num_samples
    (intersections; there D_KL is at the default sample ratio), and VAS with target files (its column has the
    name of the pool-target VAS column)."""
    t = os.path.join(assets, "targets.npy")
    return [
        ("kl_l14_txt_25", ["run", "kl_l14_txt_25", *KL]),
        ("kl_reverse_l14_txt_25", ["run", "kl_reverse_l14_txt_25", *KL]),
        ("kl_b32_img_25", ["run", "kl_b32_img_25", *KL]),
        ("centered_l14_txt_25", ["run", "centered_l14_txt_25", *KL]),
        ("whitened_l14_txt_25", ["run", "whitened_l14_txt_25", *KL]),
        ("negcliploss_l14_30", ["run", "negcliploss_l14_30", *NCL]),
        ("negcliploss_l14_30_x_normsim_inf", ["run", "negcliploss_l14_30_x_normsim_inf_in1k", *NCL,
                                              "--target_embeddings", t]),
        ("normsim_max_l14_30", ["select", "--name", "normsim", "--norm", "max", "--fraction", "0.3",
                                "--target_embeddings", t]),
        ("vas_targets_l14_30", ["run", "vas_in1k_l14_30", "--target_embeddings", t, "@scores_vas_targets"]),
        ("vas_pool_l14_30", ["run", "vas_pool_l14_30"]),
        ("semdedup_l14_eps01", ["run", "semdedup_l14_eps01"]),
        ("kl_l14_txt_25_x_semdedup", ["run", "kl_l14_txt_25_x_semdedup_l14_eps01", DEFAULT_SAMPLES]),
        ("clip_score_l14_30", ["run", "clip_score_l14_30"]),
        ("kl_l14_txt_25_x_clip_l14_30", ["run", "kl_l14_txt_25_x_clip_l14_30", DEFAULT_SAMPLES]),
        ("image_based", ["run", "image_based", "--centroids", os.path.join(assets, "centroids.npy"),
                         "--in1k_features", os.path.join(assets, "in1k.npy")]),
        ("iwl_top20", ["select", "--name", "iwl", "--prompt_embedding", os.path.join(assets, "prompt.npy"),
                       "--logit_scale", "10", "--fraction", "0.2"]),
        ("iwl_resample", ["select", "--name", "iwl", "--prompt_embedding", os.path.join(assets, "prompt.npy"),
                          "--logit_scale", "10", "--resample", "5000"]),
    ]


# ---- the child: one variant --------------------------------------------------------------------------------
def canary() -> dict:
    """Which kernel runs: threadpoolctl's word for it, a fixed product's sha256, and one-thread GFLOP/s."""
    import threadpoolctl
    from numpy._core._multiarray_umath import __cpu_features__ as feats

    from kl_filter.engines import single_blas_thread

    blas = [i for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
    rng = np.random.default_rng(0)
    x, y = unit_rows(rng, 1000, 768, np.float32), unit_rows(rng, 4096, 768, np.float32)
    a, b = rng.standard_normal((2048, 768), np.float32), rng.standard_normal((768, 2048), np.float32)
    with single_blas_thread():
        digest = hashlib.sha256((x @ y.T).tobytes()).hexdigest()[:12]
        a @ b
        t0, reps = time.perf_counter(), 5
        for _ in range(reps):
            a @ b
        gflops = reps * 2 * 2048 * 768 * 2048 / (time.perf_counter() - t0) / 1e9
    exp_digest = hashlib.sha256(np.exp(-np.abs(x)).tobytes()).hexdigest()[:12]
    return {"openblas_core": [i.get("architecture") for i in blas], "blas": [i.get("filepath") for i in blas],
            "sgemm_sha256": digest, "exp_sha256": exp_digest, "sgemm_gflops_1thread": round(gflops, 1),
            "numpy_avx2": bool(feats.get("AVX2")) and bool(feats.get("X86_V3", True)),
            "numpy_avx512f": bool(feats.get("AVX512F")) and bool(feats.get("X86_V4", True))}


def scores_dir(args: list) -> str:
    return next((a[1:] for a in args if a[0] == "@"), "scores")


def child(pool: str, assets: str, out: str, workers: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = os.path.join(out, "info.json")
    info = json.load(open(path)) if os.path.exists(path) else {
        "env": {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "NPY_DISABLE_CPU_FEATURES") if k in os.environ},
        "canary": canary(), "runs": {}}
    for name, args in recipes(assets):
        scores = scores_dir(args)
        if info["runs"].get(name, {}).get("scores") == scores:
            continue  # done by an earlier call for this variant
        cmd = [python(), "-m", "kl_filter", *[a for a in args if a[0] != "@"], "--metadata_dir", pool,
               "--save_path", os.path.join(out, f"{name}.npy"), "--scores_dir", os.path.join(out, scores),
               "--num_workers", str(workers), "--seed", "0", "--no_progress"]
        t0 = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            raise SystemExit(f"{name} failed:\n{p.stderr[-3000:]}")
        info["runs"][name] = {"seconds": round(time.perf_counter() - t0, 2), "scores": scores}
        print(f"  {name}: {info['runs'][name]['seconds']} s", flush=True)
    for d in {r["scores"] for r in info["runs"].values()}:  # every score column of a scores directory, pool order
        tables = [pq.read_table(f) for f in sorted(glob.glob(os.path.join(out, d, "*.parquet")))]
        pq.write_table(pa.concat_tables(tables, promote_options="permissive"), os.path.join(out, f"{d}.parquet"))
    with open(os.path.join(out, "info.json"), "w") as f:
        json.dump(info, f, indent=1)


# ---- the parent: inputs, one child per variant, comparison -------------------------------------------------------
def make_inputs(work: str, rows: int, shards: int) -> tuple[str, str]:
    """The synthetic pool and the target/prompt/centroid files, made once (by this process) and shared."""
    from kl_filter.pool.synth import synth_pool

    pool, assets = os.path.join(work, "pool"), os.path.join(work, "assets")
    if not os.path.exists(os.path.join(assets, "prompt.npy")):
        shutil.rmtree(pool, ignore_errors=True)
        synth_pool(pool, rows=rows, shards=shards, seed=0, num_workers=1)
        os.makedirs(assets, exist_ok=True)
        rng = np.random.default_rng(1)
        img = np.concatenate([np.load(f)["l14_img"] for f in sorted(glob.glob(f"{pool}/*.npz"))]).astype(np.float32)
        txt = np.concatenate([np.load(f)["l14_txt"] for f in sorted(glob.glob(f"{pool}/*.npz"))]).astype(np.float32)

        def near(rows_, noise, n):  # unit rows near random pool rows: informative maxima and second moments
            v = rows_[rng.choice(len(rows_), n, replace=False)] + noise * unit_rows(rng, n, 768, np.float32)
            return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)

        np.save(os.path.join(assets, "targets.npy"), np.concatenate([near(img, 0.5, 1500),
                                                                     unit_rows(rng, 500, 768, np.float32)]))
        np.save(os.path.join(assets, "centroids.npy"), near(img, 0.3, 256))
        np.save(os.path.join(assets, "in1k.npy"), near(img, 0.6, 400))
        np.save(os.path.join(assets, "prompt.npy"), near(txt, 1.0, 1)[0])
    return pool, assets


def snapshot(work: str) -> str:
    """A copy of the package and its recipes that every variant runs (made once per --work directory), so that
    edits to the checkout during a long run cannot pass for a CPU difference; its git commit is recorded."""
    from _common import REPO

    src = os.path.join(work, "src")
    if not os.path.exists(os.path.join(src, "pyproject.toml")):
        shutil.rmtree(src, ignore_errors=True)
        shutil.copytree(os.path.join(REPO, "kl_filter"), os.path.join(src, "kl_filter"),
                        ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(os.path.join(REPO, "baselines"), os.path.join(src, "baselines"))
        shutil.copy(os.path.join(REPO, "pyproject.toml"), src)
        git = subprocess.run(["git", "-C", REPO, "describe", "--always", "--dirty"], capture_output=True, text=True)
        with open(os.path.join(src, "commit.txt"), "w") as f:
            f.write(git.stdout.strip())
    return src


def ulps(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|a − b| in float32 ulps at the larger magnitude."""
    big = np.maximum(np.abs(a), np.abs(b)).astype(np.float32)
    return np.abs(a.astype(np.float64) - b.astype(np.float64)) / np.spacing(big).astype(np.float64)


OUTLIER_ULPS = 64  # a difference beyond this many float32 ulps of the column's scale is not rounding in the sum


def column_stats(a: np.ndarray, b: np.ndarray) -> dict:
    """Values differing; the largest difference, absolute and in float32 ulps of the column's largest magnitude,
    over the rows within ``OUTLIER_ULPS`` (rounding), and how many rows lie beyond (another order of the rows:
    SemDeDup's keep order when two order keys are tied to rounding)."""
    if a.dtype.kind != "f":
        return {"differ": int((a != b).sum()), "rows": len(a)}
    d = np.abs(a.astype(np.float64) - b.astype(np.float64))
    spacing = float(np.spacing(np.float32(np.abs(a).max())))
    out = d > OUTLIER_ULPS * spacing
    rest = d[~out]
    return {"differ": int((a != b).sum()), "rows": len(a), "max_abs": float(rest.max(initial=0.0)),
            "max_ulps_at_scale": float(rest.max(initial=0.0) / spacing), "column_max_abs": float(np.abs(a).max()),
            "outliers": int(out.sum()), "outlier_max_abs": float(d.max())}


def flips_per_million(values: np.ndarray, threshold: float, delta: float) -> float:
    """Rows per million expected within ``delta`` of ``threshold`` (where another kernel may decide them the other
    way), from the density of the column near its threshold (rows within a twentieth of a standard deviation)."""
    h = 0.05 * float(np.std(values))
    density = float(np.mean(np.abs(values - threshold) <= h)) / (2 * h) if h > 0 else 0.0
    return 1e6 * density * 2 * delta


def compare(base: str, other: str, runs: dict) -> dict:
    """Every score column and UID file of ``other`` against ``base`` (two variants' output directories)."""
    import pyarrow.parquet as pq

    from kl_filter.core.uids import load_uids, u8u8_to_hex

    cols, values = {}, {}  # values[(scores dir, column)] = (uid -> base value, uid -> other value, max |difference|)
    for d in sorted({r["scores"] for r in runs.values()}):
        ta, tb = (pq.read_table(os.path.join(o, f"{d}.parquet")) for o in (base, other))
        assert ta.column("uid").equals(tb.column("uid"))
        uid = ta.column("uid").to_pylist()
        for c in ta.column_names:
            if c == "uid":
                continue
            a, b = ta.column(c).to_numpy(), tb.column(c).to_numpy()
            st = column_stats(a, b)
            cols[c if d == "scores" else f"{c} ({d})"] = st
            values[(d, c)] = (dict(zip(uid, a)), dict(zip(uid, b)), st.get("max_abs", 0.0), a)
    uids = {}
    for name, run in runs.items():
        f, g = (os.path.join(o, f"{name}.npy") for o in (base, other))
        sa, sb = (json.load(open(p + ".json")) for p in (f, g))
        rules = []  # (column values, threshold, difference) of each threshold rule on a computed column
        for ra, rb in zip(sa.get("rules", []), sb.get("rules", [])):
            c = ra.get("column")
            ta_, tb_ = (r.get("computed_threshold", r.get("threshold")) for r in (ra, rb))
            if (run["scores"], c) in values and ta_ is not None and tb_ is not None:
                rules.append((values[(run["scores"], c)], ta_, tb_))
        expected = sum(flips_per_million(v[3], ta_, v[2]) for v, ta_, _ in rules)
        if open(f, "rb").read() == open(g, "rb").read():
            uids[name] = {"identical": True, "expected_tie_rows_per_million": expected}
            continue
        ua, ub = ([u.decode() for u in u8u8_to_hex(load_uids(p))] for p in (f, g))
        diff = set(ua) ^ set(ub)
        ties = {u for u in diff for (va, vb, dc, _), ta_, tb_ in rules  # within the measured difference of a threshold
                if abs(float(va[u]) - ta_) <= dc or abs(float(vb[u]) - tb_) <= dc}
        uids[name] = {"identical": False, "rows": len(ua), "rows_other": len(ub), "differ": len(diff),
                      "at_float32_ties": len(ties), "counts_differ": not diff, "expected_tie_rows_per_million": expected}
    return {"columns": cols, "uid_files": uids}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--num_workers", type=int, default=2)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--work", default="/tmp/kl_cross_cpu", help="pool, assets and each variant's outputs (reused)")
    ap.add_argument("--child", nargs=3, metavar=("POOL", "ASSETS", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(*args.child, args.num_workers)

    flags = open("/proc/cpuinfo").read().split() if os.path.exists("/proc/cpuinfo") else []
    pool, assets = make_inputs(args.work, args.rows, args.shards)
    src = snapshot(args.work)
    ran, skipped = [], {}
    for v in args.variants.split(","):
        if v == "SkylakeX" and "avx512f" not in flags:
            skipped[v] = "this CPU has no AVX-512 (the kernel would not run)"
            continue
        out = os.path.join(args.work, v)
        done = json.load(open(os.path.join(out, "info.json")))["runs"] if os.path.exists(f"{out}/info.json") else {}
        if any(done.get(n, {}).get("scores") != scores_dir(a) for n, a in recipes(assets)):
            os.makedirs(out, exist_ok=True)  # the runs not yet done (a finished variant's are reused)
            print(f"{v}: {VARIANTS[v] or 'no variable set'}", flush=True)
            env = {**os.environ, **VARIANTS[v], "PYTHONPATH": src}  # the variables reach the child only
            for k in ("OPENBLAS_CORETYPE", "NPY_DISABLE_CPU_FEATURES"):
                if k not in VARIANTS[v]:
                    env.pop(k, None)
            subprocess.run([python(), os.path.abspath(__file__), "--child", pool, assets, out,
                            "--num_workers", str(args.num_workers)], env=env, check=True)
        ran.append(v)

    info = {v: json.load(open(os.path.join(args.work, v, "info.json"))) for v in ran}
    base = ran[0]
    comparisons = {v: compare(os.path.join(args.work, base), os.path.join(args.work, v), info[base]["runs"])
                   for v in ran[1:]}
    record = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine(), "numpy": np.__version__,
              "commit": open(os.path.join(src, "commit.txt")).read(),
              "rows": args.rows, "shards": args.shards, "num_workers": args.num_workers, "baseline": base,
              "variants": {v: {"env": VARIANTS[v], **info[v]} for v in ran}, "skipped": skipped,
              "recipes": {n: a for n, a in recipes("ASSETS")}, "comparisons": comparisons}
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "cross_cpu.json"), "w") as f:
        json.dump(record, f, indent=1)
    print(summary(record))


def summary(r: dict) -> str:
    """The markdown table of a record (printed; results/cross_cpu.md quotes it with the reading)."""
    lines = [f"{r['date']} · {r['machine']['cpu']} ×{r['machine']['cores']} · NumPy {r['numpy']} · "
             f"{r['rows']:,} rows in {r['shards']} shards, {r['num_workers']} workers; baseline: {r['baseline']}", "",
             "| variant | environment | OpenBLAS kernel | sgemm sha256 | exp sha256 | 1-thread sgemm GFLOP/s |",
             "|---|---|---|---|---|---|"]
    for v, i in r["variants"].items():
        env = " ".join(f"{k}={x}" for k, x in i["env"].items()) or "(none)"
        c = i["canary"]
        lines.append(f"| {v} | `{env}` | {', '.join(map(str, c['openblas_core']))} | {c['sgemm_sha256']} | "
                     f"{c['exp_sha256']} | {c['sgemm_gflops_1thread']} |")
    lines += ["", "Score columns against the baseline (values differing / rows; largest |difference|; that difference "
              "in float32 ulps of the column's largest magnitude):", "", "| column | " + " | ".join(r["comparisons"]) + " |",
              "|---|" + "---|" * len(r["comparisons"])]
    cols = sorted({c for cmp in r["comparisons"].values() for c in cmp["columns"]})
    for c in cols:
        cells = []
        for cmp in r["comparisons"].values():
            s = cmp["columns"].get(c)
            if s is None:
                cells.append("")
            elif "max_abs" not in s:
                cells.append(f"{s['differ']} differ")
            elif s["differ"] == 0:
                cells.append("identical")
            else:
                cells.append(f"{s['differ']:,}/{s['rows']:,}; {s['max_abs']:.2g}; {s['max_ulps_at_scale']:.0f} ulps"
                             + (f"; {s['outliers']} rows up to {s['outlier_max_abs']:.2g}" if s["outliers"] else ""))
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    lines += ["", "UID files against the baseline (identical, or rows differing / of them at a float32 tie), and the "
              "rows per million expected within the largest measured difference of a threshold:", "",
              "| recipe | " + " | ".join(r["comparisons"]) + " | expected tie rows per million |",
              "|---|" + "---|" * (len(r["comparisons"]) + 1)]
    names = sorted({n for cmp in r["comparisons"].values() for n in cmp["uid_files"]})
    for n in names:
        cells = []
        for cmp in r["comparisons"].values():
            u = cmp["uid_files"][n]
            cells.append("identical" if u["identical"] else "draw counts differ" if u["counts_differ"]
                         else f"{u['differ']} rows / {u['at_float32_ties']} at ties")
        worst = max(cmp["uid_files"][n]["expected_tie_rows_per_million"] for cmp in r["comparisons"].values())
        lines.append(f"| {n} | " + " | ".join(cells) + f" | {worst:.2g} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
