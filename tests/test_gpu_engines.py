"""The GPU code paths, tested on the CPU: the fused Triton kernel under TRITON_INTERPRET=1 and the blocked
torch engine, both against the float64 formulas (ragged sizes: M, N, D not multiples of the tiles)."""

import math
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO

torch = pytest.importorskip("torch")

CHECK = r'''
import math, sys, numpy as np, torch
from kl_filter.kernels.kl_triton import triton_density_ratio_kl
rng = np.random.default_rng(0)
def unit(n, d):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16)
worst = 0.0
for M, N, D in [(37, 45, 64), (70, 100, 96), (33, 1, 32)]:
    X, Y = unit(M, D), unit(N, D)
    X[:1] = Y[:1]  # a saturated row: one sample dominates the softmax
    s = 100 * X.astype(np.float64) @ Y.astype(np.float64).T
    m = s.max(1, keepdims=True); e = np.exp(s - m); lse = m[:, 0] + np.log(e.sum(1)); p = e / e.sum(1, keepdims=True)
    rk, rr = (p * s).sum(1) - (lse - math.log(N)), lse - math.log(N) - s.mean(1)
    k, r = triton_density_ratio_kl(torch.from_numpy(X), torch.from_numpy(Y))
    k, r = k.numpy(), r.numpy()
    assert np.isfinite(k).all() and np.isfinite(r).all()
    if N == 1:
        worst = max(worst, float(np.abs(k).max()), float(np.abs(r).max()))
        continue
    worst = max(worst, float(np.max(np.abs(k - rk) / np.maximum(np.abs(rk), 1e-3))),
                float(np.max(np.abs(r - rr) / np.maximum(np.abs(rr), 1e-3))))
print(worst)
'''


def interpreted_worst_error(script: str) -> float:
    """Run a check script under TRITON_INTERPRET=1 (Triton reads the flag at import: a fresh process) and return
    the worst relative error it prints last."""
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": REPO}
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    return float(p.stdout.strip().splitlines()[-1])


def test_triton_kernel_interpreted_against_float64():
    assert interpreted_worst_error(CHECK) <= 1e-5


def test_torch_engine_against_float64():
    from kl_filter.kernels.kl_torch import centered, density_ratio_kl, whitened

    rng = np.random.default_rng(1)
    x = rng.standard_normal((130, 512)).astype(np.float32)
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16)
    y = x[::3].copy()
    k, r = density_ratio_kl(x, y, device="cpu")
    s = 100 * x.astype(np.float64) @ y.astype(np.float64).T
    m = s.max(1, keepdims=True)
    e = np.exp(s - m)
    lse = m[:, 0] + np.log(e.sum(1))
    rk = (e / e.sum(1, keepdims=True) * s).sum(1) - (lse - math.log(len(y)))
    rr = lse - math.log(len(y)) - s.mean(1)
    assert np.max(np.abs(k - rk) / np.maximum(np.abs(rk), 1e-3)) <= 1e-5
    assert np.max(np.abs(r - rr) / np.maximum(np.abs(rr), 1e-3)) <= 1e-5
    mu = x.astype(np.float64).mean(0)
    cov = np.cov(y.astype(np.float64), rowvar=False)
    d = x.astype(np.float64) - mu
    np.testing.assert_allclose(centered(x, mu, device="cpu"), (d * d).sum(1), rtol=1e-5)
    np.testing.assert_allclose(whitened(x, mu, cov, device="cpu"), ((d @ cov) * d).sum(1), rtol=1e-5)


NCL_CHECK = r'''
import numpy as np, torch
from kl_filter.kernels.negcliploss_triton import triton_negcliploss
from kl_filter.scorers.negcliploss import negcliploss_batch_torch
rng = np.random.default_rng(1)
def unit(n, d):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16)
worst = 0.0
for n, d in [(70, 64), (33, 40), (1, 32)]:
    f, g = unit(n, d), unit(n, d)
    g[:5] = f[:5]  # a few sharp pairs
    s = f.astype(np.float64) @ g.astype(np.float64).T * 100
    m1, m0 = s.max(1), s.max(0)
    ref = np.diag(s) / 100 - (m1 + np.log(np.exp(s - m1[:, None]).sum(1)) + m0 + np.log(np.exp(s - m0).sum(0))) / 200
    for got in (triton_negcliploss(torch.from_numpy(f), torch.from_numpy(g)).numpy(),
                negcliploss_batch_torch(f, g, device="cpu")):
        assert np.isfinite(got).all()
        # relative to the scores' scale: the sharp pairs score exactly 0 (their own pair dominates both sums)
        worst = max(worst, float(np.max(np.abs(got - ref) / np.maximum(np.abs(ref), 0.1))))
print(worst)
'''


def test_negcliploss_triton_kernel_interpreted_and_torch_twin_against_float64():
    assert interpreted_worst_error(NCL_CHECK) <= 1e-5
