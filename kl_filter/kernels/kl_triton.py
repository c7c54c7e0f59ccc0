"""The fused GPU kernel: D_KL and D_KLR together in one pass over the reference samples (Triton).

One program owns ``BLOCK_M`` targets and streams the samples in tiles of ``BLOCK_N``: a tensor-core product
of float16 tiles accumulated in float32 (``tl.dot``), then an online log-sum-exp in the log2 domain
(``exp2``; the scale ``a·log2 e`` is folded into the scores) that keeps, per target, the running max ``m``,
``l = Σ 2^(t−m)``, ``w = Σ 2^(t−m)·(t−m)`` and the plain sum of the scores. With ``t = s·log2 e``:

    D_KL  = ln2 · w / l − ln l + ln N
    D_KLR = ln2 · m + ln l − ln N − a · Σ⟨x, y⟩ / N

Nothing of size M × N is ever written. Ragged M, N and D are masked. ``triton.autotune`` picks the tile
shape per (D, N); the 128×256 tile with K-step 64, 8 warps and 4 stages is the configuration measured at
68% of the H100's fp16 peak (measured outside this repository: docs/results.md#figures-measured-elsewhere).
Under ``TRITON_INTERPRET=1`` the same kernel runs on the CPU (one
small configuration), which is how CI tests it against float64.
"""

from __future__ import annotations

import math
import os

import torch
import triton
import triton.language as tl

LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"

INTERPRET_CONFIGS = [triton.Config({"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_D": 32}, num_warps=4, num_stages=1)]

if INTERPRET:
    CONFIGS = INTERPRET_CONFIGS
else:
    CONFIGS = [
        triton.Config({"BLOCK_M": 128, "BLOCK_N": 256, "BLOCK_D": 64}, num_warps=8, num_stages=4),
        triton.Config({"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_D": 64}, num_warps=8, num_stages=3),
        triton.Config({"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_D": 64}, num_warps=4, num_stages=4),
        triton.Config({"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_D": 64}, num_warps=4, num_stages=4),
        triton.Config({"BLOCK_M": 256, "BLOCK_N": 128, "BLOCK_D": 64}, num_warps=8, num_stages=3),
    ]


@triton.autotune(configs=CONFIGS, key=["D", "N_BUCKET"])
@triton.jit
def _kl_kernel(X, Y, KL, KLR, M, N, D, N_BUCKET, stride_x, stride_y, scale_log2, scale, log_n,
               BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    pid = tl.program_id(0)
    offs_m = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    row_ok = offs_m < M
    m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    l_i = tl.zeros((BLOCK_M,), tl.float32)
    w_i = tl.zeros((BLOCK_M,), tl.float32)
    s_i = tl.zeros((BLOCK_M,), tl.float32)
    for start_n in range(0, N, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        col_ok = offs_n < N
        acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
        for k in range(0, D, BLOCK_D):
            d_ok = (k + offs_d) < D
            x = tl.load(X + offs_m[:, None] * stride_x + (k + offs_d)[None, :], mask=row_ok[:, None] & d_ok[None, :],
                        other=0.0)
            y = tl.load(Y + offs_n[:, None] * stride_y + (k + offs_d)[None, :], mask=col_ok[:, None] & d_ok[None, :],
                        other=0.0)
            acc += tl.dot(x, tl.trans(y))
        s_i += tl.sum(tl.where(col_ok[None, :], acc, 0.0), axis=1)
        t = tl.where(col_ok[None, :], acc * scale_log2, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(t, axis=1))
        alpha = tl.exp2(m_i - m_new)
        dm = tl.where(l_i > 0, m_i - m_new, 0.0)  # avoids -inf * 0 on the first tile
        w_i = alpha * (w_i + dm * l_i)
        l_i = l_i * alpha
        d = tl.where(col_ok[None, :], t - m_new[:, None], 0.0)
        p = tl.where(col_ok[None, :], tl.exp2(d), 0.0)
        l_i += tl.sum(p, axis=1)
        w_i += tl.sum(p * d, axis=1)
        m_i = m_new
    ln_l = tl.log(l_i)
    kl = 0.6931471805599453 * w_i / l_i - ln_l + log_n
    klr = 0.6931471805599453 * m_i + ln_l - log_n - scale * s_i / N
    tl.store(KL + offs_m, kl, mask=row_ok)
    tl.store(KLR + offs_m, klr, mask=row_ok)


def triton_density_ratio_kl(targets: torch.Tensor, samples: torch.Tensor, logit_scale: float = 100.0):
    """(D_KL, D_KLR) float32 tensors for float16 ``targets`` [M, D] against ``samples`` [N, D] (same device)."""
    x = targets.to(torch.float16).contiguous()
    y = samples.to(torch.float16).contiguous()
    m_rows, d = x.shape
    n = y.shape[0]
    kl = torch.empty(m_rows, dtype=torch.float32, device=x.device)
    klr = torch.empty_like(kl)
    if m_rows == 0:
        return kl, klr
    grid = lambda meta: (triton.cdiv(m_rows, meta["BLOCK_M"]),)  # noqa: E731
    _kl_kernel[grid](x, y, kl, klr, m_rows, n, d, 1 << max(0, (n - 1).bit_length()), x.stride(0), y.stride(0),
                     logit_scale * LOG2E, logit_scale, math.log(n))
    return kl, klr
