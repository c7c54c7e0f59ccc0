"""The NumPy KL engine's elementwise passes run PASS_ROWS rows of a score block at a time (for the cache): every
step is per row, so the bits equal those of the same steps over the whole block (the same GEMM shapes)."""

import math

import numpy as np

from kl_filter.engines import single_blas_thread
from kl_filter.kernels.kl_numpy import DEFAULT_BLOCK_ROWS, DEFAULT_BLOCK_SAMPLES, PASS_ROWS, density_ratio_kl
from minipool import unit


@single_blas_thread()
def whole_block(targets, samples, a):
    """The online log-sum-exp over each whole 1024 × 4096 score block (the engine before the row passes)."""
    y = np.ascontiguousarray(samples, dtype=np.float32) * np.float32(a)
    ybar = samples.astype(np.float64).mean(axis=0) * a
    kl, klr = np.empty(len(targets), np.float32), np.empty(len(targets), np.float32)
    for r0 in range(0, len(targets), DEFAULT_BLOCK_ROWS):
        x = np.asarray(targets[r0: r0 + DEFAULT_BLOCK_ROWS], dtype=np.float32)
        mx, l, w = np.full(len(x), -np.inf, np.float32), np.zeros(len(x), np.float32), np.zeros(len(x), np.float32)
        for c0 in range(0, len(y), DEFAULT_BLOCK_SAMPLES):
            s = x @ y[c0: c0 + DEFAULT_BLOCK_SAMPLES].T
            new = np.maximum(mx, s.max(axis=1))
            corr = np.exp(mx - new)
            w = corr * (w + (mx - new) * l) if c0 else w
            l *= corr
            s -= new[:, None]
            e = np.exp(s)
            l += e.sum(axis=1)
            w += np.einsum("ij,ij->i", e, s)
            mx = new
        log_l = np.log(l)
        kl[r0: r0 + len(x)] = w / l - log_l + np.float32(math.log(len(y)))
        klr[r0: r0 + len(x)] = (mx.astype(np.float64) + log_l - math.log(len(y)) - x.astype(np.float64) @ ybar)
    return kl, klr


def test_row_passes_give_the_whole_blocks_bits():
    rng = np.random.default_rng(0)
    x = unit(rng, DEFAULT_BLOCK_ROWS + 3 * PASS_ROWS + 5, 64).astype(np.float16)  # partial blocks and passes
    y = unit(rng, DEFAULT_BLOCK_SAMPLES + 333, 64).astype(np.float16)
    for a in (100.0, 27.1):
        got, want = density_ratio_kl(x, y, a), whole_block(x, y, a)
        assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
