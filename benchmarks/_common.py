"""Shared by the benchmark scripts: machine description, whole-process timing with peak memory, result files."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, "results")


def machine() -> dict:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), cpu)
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}
    try:
        import psutil

        info["memory_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True)
        if out.returncode == 0 and out.stdout.strip():
            info["gpu"] = out.stdout.strip().splitlines()[0]
    except OSError:
        pass
    return info


def run_measured(cmd: list[str], env: dict | None = None, cwd: str | None = None, poll: float = 0.02) -> dict:
    """Wall time of a whole process (start-up included), its CPU time (user + system, with the children it waited
    for: steadier than wall time on a shared machine) and the peak of the summed RSS of it and its children."""
    import resource

    import psutil

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, env={**os.environ, **(env or {})}, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc = psutil.Process(p.pid)
    peak = 0
    while p.poll() is None:
        try:
            rss = proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(recursive=True))
            peak = max(peak, rss)
        except psutil.Error:
            pass
        time.sleep(poll)
    out, err = p.communicate()
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}):\n{err.decode()[-2000:]}")
    return {"seconds": round(wall, 3), "cpu_s": round(cpu, 3), "peak_rss_gb": round(peak / 2**30, 3),
            "stdout": out.decode()[-500:]}


def write_results(name: str, record: dict, md_line: str) -> None:
    """results/<name>.json (latest run) and one appended markdown line in results/<name>.md."""
    os.makedirs(RESULTS, exist_ok=True)
    record = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine(), **record}
    with open(os.path.join(RESULTS, f"{name}.json"), "w") as f:
        json.dump(record, f, indent=2)
    md = os.path.join(RESULTS, f"{name}.md")
    new = not os.path.exists(md)
    with open(md, "a") as f:
        if new:
            f.write(f"# {name}\n\n")
        m = record["machine"]
        f.write(f"- {record['date']} · {m['cpu']} ×{m['cores']}{' · ' + m['gpu'] if 'gpu' in m else ''}: {md_line}\n")
    print(f"wrote results/{name}.json and results/{name}.md")


_COMPILED = False


def python() -> str:
    """The interpreter for timed kl-filter processes, with the package's bytecode compiled first: as pip compiles
    an installed package, and as Python caches it at a first import, unless PYTHONDONTWRITEBYTECODE is set (as on
    the machine these figures come from: every process then compiled ~45 modules, 60-70 ms of each command)."""
    global _COMPILED
    if not _COMPILED:
        import compileall

        import kl_filter

        compileall.compile_dir(os.path.dirname(kl_filter.__file__), quiet=1)
        _COMPILED = True
    return sys.executable


def add_pool_arguments(ap, rows: int, shards: int) -> None:
    ap.add_argument("--pool", default=None, help="an existing pool (default: synthesise one in a temp dir)")
    ap.add_argument("--rows", type=int, default=rows)
    ap.add_argument("--shards", type=int, default=shards)
    ap.add_argument("--num_workers", type=int, default=os.cpu_count())


def pool_or_synth(args, tmp: str) -> str:
    """``--pool`` when given, else a synthetic pool of ``--rows`` rows in ``--shards`` shards (seed 0)."""
    if args.pool:
        return args.pool
    from kl_filter.pool.synth import synth_pool

    pool = os.path.join(tmp, "pool")
    synth_pool(pool, rows=args.rows, shards=args.shards, seed=0, num_workers=args.num_workers)
    return pool


def setup_pool(ap, rows: int, shards: int, prefix: str):
    """Parse the arguments (pool flags added), make the run's temp dir and return ``(args, tmp, pool)``."""
    add_pool_arguments(ap, rows, shards)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix=prefix)
    return args, tmp, pool_or_synth(args, tmp)


def half_and_full(pool: str, tmp: str) -> list[tuple[int, str]]:
    """``(shards, pool dir)`` for the first half of the pool's shards and for all of them (scaling runs)."""
    n = len([f for f in os.listdir(pool) if f.endswith(".parquet")])
    return [(k, subset_pool(pool, k, os.path.join(tmp, f"pool_{k}"))) for k in (n // 2, n)]


def subset_pool(pool: str, shards: int, dst: str) -> str:
    """The first ``shards`` shards of ``pool`` as a new pool directory (symlinks)."""
    os.makedirs(dst, exist_ok=True)
    for f in sorted(os.listdir(pool)):
        if f.endswith((".parquet", ".npz")) and int(f.split(".")[0]) < shards:
            os.symlink(os.path.join(pool, f), os.path.join(dst, f))
    return dst


def unit_rows(rng, n: int, d: int, dtype=np.float16) -> np.ndarray:
    """``n`` random unit vectors of width ``d`` (normalised in float32, stored as ``dtype``)."""
    x = rng.standard_normal((n, d), np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(dtype)
