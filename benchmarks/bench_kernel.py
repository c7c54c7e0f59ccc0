"""The fused D_KL + D_KLR kernel on a GPU: targets/s and TFLOP/s (2·M·N·D flops) for D ∈ {512, 768} and
N ∈ {4096, 25600, 102400}, against the fp16 matmul peak measured in the same run, against the chunked torch
path, with the relative error against float64 on a subset of rows.

    python benchmarks/bench_kernel.py [--m 4194304] [--quick]

Without CUDA it says so, runs the kernel once under the Triton interpreter on a tiny problem (the CI check),
and exits 0: the GPU measurement is this one command on a machine with a GPU.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import REPO, write_results  # noqa: E402


def float64_ref(x, y, a=100.0):
    import numpy as np

    s = a * x.astype(np.float64) @ y.astype(np.float64).T
    m = s.max(1, keepdims=True)
    e = np.exp(s - m)
    lse = m[:, 0] + np.log(e.sum(1))
    return (e / e.sum(1, keepdims=True) * s).sum(1) - (lse - math.log(len(y))), lse - math.log(len(y)) - s.mean(1)


def timed(fn, reps=3):
    import torch

    fn()
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        best = min(best, start.elapsed_time(end) / 1e3)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--m", type=int, default=4 * 1024 * 1024)
    ap.add_argument("--quick", action="store_true", help="M = 1M, N ∈ {4096, 25600}")
    args = ap.parse_args()
    import numpy as np
    import torch

    if not torch.cuda.is_available():
        print("bench_kernel: no CUDA device here; running the interpreted correctness check only "
              "(the GPU figures need: python benchmarks/bench_kernel.py on a GPU machine)")
        test = os.path.join(REPO, "tests", "test_gpu_engines.py")
        sys.exit(subprocess.call([sys.executable, "-m", "pytest", "-q", test, "-k", "triton"]))
    from kl_filter.kernels.kl_torch import density_ratio_kl_torch
    from kl_filter.kernels.kl_triton import triton_density_ratio_kl

    dev = "cuda"
    big = torch.randn(8192, 8192, device=dev, dtype=torch.float16)
    peak = 2 * 8192**3 / timed(lambda: big @ big) / 1e12
    del big
    m_rows = 1024 * 1024 if args.quick else args.m
    sizes = [(d, n) for d in (512, 768) for n in ((4096, 25600) if args.quick else (4096, 25600, 102400))]
    rows = []
    for d, n in sizes:
        x = torch.nn.functional.normalize(torch.randn(m_rows, d, device=dev), dim=1).half()
        y = torch.nn.functional.normalize(torch.randn(n, d, device=dev), dim=1).half()
        t_k = timed(lambda: triton_density_ratio_kl(x, y))
        sub = min(m_rows, 1 << 18)
        t_c = timed(lambda: density_ratio_kl_torch(x[:sub], y), reps=1) * (m_rows / sub)
        k, r = triton_density_ratio_kl(x[:2048], y)
        rk, rr = float64_ref(x[:2048].cpu().numpy(), y.cpu().numpy())
        err = max(float(np.max(np.abs(k.cpu().numpy() - rk) / np.maximum(np.abs(rk), 1e-3))),
                  float(np.max(np.abs(r.cpu().numpy() - rr) / np.maximum(np.abs(rr), 1e-3))))
        tflops = 2 * m_rows * n * d / t_k / 1e12
        row = {"D": d, "N": n, "M": m_rows, "kernel_s": round(t_k, 4), "targets_per_s": round(m_rows / t_k),
               "tflops": round(tflops, 1), "share_of_fp16_peak": round(tflops / peak, 3),
               "chunked_torch_targets_per_s": round(m_rows / t_c), "speedup_vs_chunked": round(t_c / t_k, 2),
               "max_rel_err_vs_float64": err}
        rows.append(row)
        print(f"D={d} N={n:6d} M={m_rows:,}: {row['targets_per_s'] / 1e6:6.2f}M targets/s, {tflops:6.1f} TFLOP/s "
              f"({100 * tflops / peak:4.1f}% of {peak:.0f}), {row['speedup_vs_chunked']:.1f}x chunked torch, "
              f"rel err {err:.1e}")
    write_results("bench_kernel", {"fp16_matmul_peak_tflops": round(peak, 1), "device": torch.cuda.get_device_name(),
                                   "runs": rows},
                  "; ".join(f"D={r['D']} N={r['N']}: {r['tflops']} TFLOP/s ({100 * r['share_of_fp16_peak']:.0f}% of "
                            f"{peak:.0f}), err {r['max_rel_err_vs_float64']:.0e}" for r in rows))


if __name__ == "__main__":
    main()
