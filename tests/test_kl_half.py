"""The kernels' float16 → float32 conversion (kl_filter/core/half.py) against NumPy's, bit for bit."""

import numpy as np

from kl_filter.core.half import CHUNK, to_float32


def bits(a):
    return np.ascontiguousarray(a).view(np.uint32)


def test_every_finite_half_converts_as_numpy_does():
    every = np.arange(1 << 16, dtype=np.uint16).view(np.float16)
    finite = every[np.isfinite(every)]  # 63,488 values: signed zeros, subnormals, normals, ±65504
    x = np.tile(finite, 3)[: 2 * CHUNK + 123].reshape(-1, 1)  # several chunks and a partial one, 2-d
    got = to_float32(x)
    assert got.dtype == np.float32 and got.shape == x.shape and got.flags.c_contiguous
    assert np.array_equal(bits(got), bits(x.astype(np.float32)))


def test_inf_nan_small_and_other_dtypes_take_numpys_conversion():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((CHUNK + 7,)).astype(np.float16)
    x[[5, CHUNK + 3]] = [np.inf, np.nan]  # an inf in the first chunk, a NaN in the last
    assert np.array_equal(bits(to_float32(x)), bits(x.astype(np.float32)))
    small = x[:10]
    assert np.array_equal(bits(to_float32(small)), bits(small.astype(np.float32)))
    f32 = rng.standard_normal((4, 3)).astype(np.float32)
    out = to_float32(f32)
    assert np.array_equal(out, f32) and out is not f32  # always a new array: callers scale it in place
    strided = rng.standard_normal((CHUNK, 4)).astype(np.float16)[:, ::2]
    assert np.array_equal(bits(to_float32(strided)), bits(strided.astype(np.float32)))
