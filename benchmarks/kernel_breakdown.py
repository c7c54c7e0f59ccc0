"""Where the CPU kernels' time goes beyond their matrix products: the steps of the D_KL and negCLIPLoss kernels
(transcribed from kl_filter/kernels/kl_numpy.py and kl_filter/scorers/negcliploss.py, the same NumPy calls on
the same shapes) with a CPU-time clock around each, one BLAS thread. Every block's product and its passes run
back to back, so the product's share (``matmul / total``) is measured under the same load as the rest: steadier
on a shared machine than two whole runs compared (bench_kernels_cpu.py), which it complements.

    python benchmarks/kernel_breakdown.py [--repeats 3] [--batch 8192]
"""

from __future__ import annotations

import argparse
import collections
import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import unit_rows, write_results  # noqa: E402

D = 768


class Clock:
    def __init__(self):
        self.t = collections.Counter()

    def __call__(self, name):
        clock = self

        class Step:
            def __enter__(self):
                self.c = time.process_time()

            def __exit__(self, *exc):
                clock.t[name] += time.process_time() - self.c
        return Step()


def kl_steps(targets, samples, clk, a=100.0):
    from kl_filter.core.half import to_float32
    from kl_filter.kernels.kl_numpy import DEFAULT_BLOCK_ROWS as BR, DEFAULT_BLOCK_SAMPLES as BS, PASS_ROWS as P

    with clk("samples: convert, mean, scale"):
        y = to_float32(samples)
        ybar = np.add.reduce(y, axis=0, dtype=np.float64) / len(y) * a
        np.multiply(y, np.float32(a), out=y)
    buf = np.empty((BR, BS), np.float32)
    ebuf = np.empty((P, BS), np.float32)
    for r0 in range(0, len(targets), BR):
        with clk("targets: convert"):
            x = to_float32(targets[r0: r0 + BR])
        b = len(x)
        mx, l, w = np.full(b, -np.inf, np.float32), np.zeros(b, np.float32), np.zeros(b, np.float32)
        for c0 in range(0, len(y), BS):
            s = buf[:b, : min(BS, len(y) - c0)]
            with clk("matmul"):
                np.matmul(x, y[c0: c0 + BS].T, out=s)
            for i0 in range(0, b, P):
                rows = slice(i0, i0 + P)
                sr, mr, lr, wr = s[rows], mx[rows], l[rows], w[rows]
                with clk("row max"):
                    new = np.maximum(mr, sr.max(axis=1))
                if c0:
                    with clk("rescale"):
                        corr = np.exp(mr - new)
                        wr[:] = corr * (wr + (mr - new) * lr)
                        lr *= corr
                with clk("shift"):
                    sr -= new[:, None]
                with clk("exp"):
                    e = np.exp(sr, out=ebuf[: len(sr), : sr.shape[1]])
                with clk("sum"):
                    lr += e.sum(axis=1)
                with clk("dot e·(s-m)"):
                    wr += np.einsum("ij,ij->i", e, sr)
                mr[:] = new
        with clk("finish"):
            log_l = np.log(l)
            _ = w / l - log_l + np.float32(math.log(len(y)))
            _ = mx.astype(np.float64) + log_l - math.log(len(y)) - x.astype(np.float64) @ ybar


def ncl_steps(f, g, clk, a=100.0):
    from kl_filter.core.half import to_float32
    from kl_filter.scorers.negcliploss import BLOCK_ROWS as B, PASS_BYTES, _similarities

    a = np.float32(a)
    with clk("convert f, g; scale g"):
        x, g32 = to_float32(f), to_float32(g)
        y = g32 * a
    n = len(x)
    diag = np.empty(n)
    buf = np.empty((min(B, n), n), np.float32)
    ones = np.ones(min(B, n), np.float32)
    pass_rows = max(1, PASS_BYTES // (4 * n))
    for r0 in range(0, n, B):
        r1 = min(n, r0 + B)
        with clk("float64 diagonal"):
            diag[r0:r1] = np.einsum("ij,ij->i", x[r0:r1].astype(np.float64), g32[r0:r1].astype(np.float64))
        with clk("matmul"):
            s = _similarities(x[r0:r1], y, diag[r0:r1] * float(a), r0, buf[: r1 - r0])
        row_sum = np.empty(r1 - r0, np.float32)
        for i0 in range(0, r1 - r0, pass_rows):
            p = s[i0: i0 + pass_rows]
            with clk("exp"):
                np.exp(p, out=p)
            with clk("row sums"):
                np.sum(p, axis=1, out=row_sum[i0: i0 + pass_rows])
        with clk("column sums (GEMV)"):
            _ = ones[: r1 - r0] @ s
        with clk("checks, logs"):
            _ = np.isfinite(row_sum).all() and np.log(row_sum.astype(np.float64))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8192)
    args = ap.parse_args()
    from kl_filter.engines import single_blas_thread

    rng = np.random.default_rng(0)
    x, y = unit_rows(rng, 4096, D), unit_rows(rng, 25600, D)
    f, g = unit_rows(rng, args.batch, D), unit_rows(rng, args.batch, D)
    load0 = os.getloadavg()
    out = {}
    with single_blas_thread():
        for name, run in (("kl", lambda c: kl_steps(x, y, c)), ("negcliploss", lambda c: ncl_steps(f, g, c))):
            best = None
            for _ in range(args.repeats):  # the repeat with the smallest total
                clk = Clock()
                run(clk)
                if best is None or sum(clk.t.values()) < sum(best.values()):
                    best = clk.t
            total = sum(best.values())
            out[name] = {"matmul_share": round(best["matmul"] / total, 3), "total_cpu_s": round(total, 3),
                         "steps_ms": {k: round(v * 1e3, 1) for k, v in sorted(best.items(), key=lambda kv: -kv[1])}}
            print(f"{name}: matmul {best['matmul'] / total:.1%} of {total:.3f} s; "
                  + ", ".join(f"{k} {v}" for k, v in out[name]["steps_ms"].items()) + " (ms)", flush=True)
    load = os.getloadavg()
    line = "; ".join(f"{k}: the matmul is {v['matmul_share']:.1%} of {v['total_cpu_s']} s, then "
                     + ", ".join(f"{s} {ms:g} ms" for s, ms in list(v["steps_ms"].items())[1:])
                     for k, v in out.items())
    write_results("kernel_breakdown", {"repeats": args.repeats, "kernels": out,
                                       "load_average": [round(load0[0], 2), round(load[0], 2)]},
                  f"steps timed inside one run (CPU time, one thread, best of {args.repeats}; D_KL 4,096 × 25,600, "
                  f"negCLIPLoss one batch of {args.batch:,}): {line}; load average {load0[0]:.1f} → {load[0]:.1f} "
                  "(shared machine)")


if __name__ == "__main__":
    main()
