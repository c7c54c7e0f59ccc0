"""A plain float64 scorer in the authors' style, the reference the CPU benchmark compares against.

Per shard: load the npz, cast to float64, the full n × N score matrix in row chunks, softmax and
log-sum-exp in float64, one parquet of scores per shard. No tricks; the same output columns as
``kl-filter score --modes kl kl_reverse``.

    python benchmarks/float64_reference.py POOL STATS.npz OUT_DIR --arch l14 --target txt [--num_workers 2]
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import math
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def score_shard(pool, name, samples, arch, target, out, a=100.0, chunk=4096):
    x = np.load(os.path.join(pool, name + ".npz"))[f"{arch}_{target}"].astype(np.float64)
    y = samples.astype(np.float64)
    n = len(y)
    kl, klr = np.empty(len(x)), np.empty(len(x))
    for i in range(0, len(x), chunk):
        s = a * x[i: i + chunk] @ y.T
        m = s.max(1, keepdims=True)
        e = np.exp(s - m)
        lse = m[:, 0] + np.log(e.sum(1))
        p = e / e.sum(1, keepdims=True)
        kl[i: i + chunk] = (p * s).sum(1) - (lse - math.log(n))
        klr[i: i + chunk] = lse - math.log(n) - s.mean(1)
    uid = pq.read_table(os.path.join(pool, name + ".parquet"), columns=["uid"]).column("uid")
    pq.write_table(pa.table({"uid": uid, f"kl_{arch}_{target}": kl, f"kl_reverse_{arch}_{target}": klr}),
                   os.path.join(out, name + ".parquet"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("pool")
    ap.add_argument("stats")
    ap.add_argument("out")
    ap.add_argument("--arch", default="l14")
    ap.add_argument("--target", default="txt")
    ap.add_argument("--num_workers", type=int, default=os.cpu_count())
    args = ap.parse_args()
    other = {"txt": "img", "img": "txt"}[args.target]
    samples = np.load(args.stats)[f"{args.arch}_{other}_sample"]
    os.makedirs(args.out, exist_ok=True)
    names = sorted(f[:-8] for f in os.listdir(args.pool) if f.endswith(".parquet"))
    with cf.ThreadPoolExecutor(args.num_workers) as ex:
        list(ex.map(lambda n: score_shard(args.pool, n, samples, args.arch, args.target, args.out), names))


if __name__ == "__main__":
    main()
