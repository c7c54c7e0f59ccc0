"""negCLIPLoss's fused GPU kernel (Triton): row and column log-sum-exp of one batch from ONE pass over its tiles.

The batch's similarity matrix a·F·Gᵀ (|B| × |B|) is never written. Program (i, j) computes tile (i, j) with a
tensor-core product of float16 tiles accumulated in float32 (``tl.dot``), and writes, in the log2 domain, the
tile's per-row (max, Σ 2^(t−max)) and per-column (max, Σ 2^(t−max)) (on the diagonal, t is the pair's own
similarity computed in float64, as on the CPU: :mod:`.negcliploss`'s Precision): partials of size |B|²/BLOCK_N and
|B|²/BLOCK_M. A small torch reduction merges the partials of each row and column exactly (rescaled by their
maxima), so every similarity is computed once for both directions: 2·D·|B| flops per row, as on the CPU.
Under ``TRITON_INTERPRET=1`` the kernel runs on the CPU (one small tile shape): CI tests it against float64.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kl_filter.kernels.kl_triton import INTERPRET, INTERPRET_CONFIGS, LN2, LOG2E

if INTERPRET:
    CONFIGS = INTERPRET_CONFIGS
else:
    CONFIGS = [
        triton.Config({"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_D": 64}, num_warps=8, num_stages=3),
        triton.Config({"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_D": 64}, num_warps=4, num_stages=4),
        triton.Config({"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_D": 64}, num_warps=4, num_stages=4),
    ]


@triton.autotune(configs=CONFIGS, key=["D"])
@triton.jit
def _tile_kernel(F, G, DG, RM, RL, CM, CL, N, D, stride_f, stride_g, scale_log2,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    row_ok = offs_m < N
    col_ok = offs_n < N
    acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    for k in range(0, D, BLOCK_D):
        d_ok = (k + offs_d) < D
        f = tl.load(F + offs_m[:, None] * stride_f + (k + offs_d)[None, :], mask=row_ok[:, None] & d_ok[None, :],
                    other=0.0)
        g = tl.load(G + offs_n[:, None] * stride_g + (k + offs_d)[None, :], mask=col_ok[:, None] & d_ok[None, :],
                    other=0.0)
        acc += tl.dot(f, tl.trans(g))
    ok = row_ok[:, None] & col_ok[None, :]
    t = acc * scale_log2
    # the pairs' own similarities: the float64 ones (a·log2e·s_ii, rounded once), not the tensor-core products
    dg = tl.load(DG + offs_m, mask=row_ok, other=0.0)
    t = tl.where(offs_m[:, None] == offs_n[None, :], dg[:, None], t)
    t = tl.where(ok, t, float("-inf"))
    rm = tl.max(t, axis=1)
    rl = tl.sum(tl.where(ok, tl.exp2(t - rm[:, None]), 0.0), axis=1)
    cm = tl.max(t, axis=0)
    cl = tl.sum(tl.where(ok, tl.exp2(t - cm[None, :]), 0.0), axis=0)
    tl.store(RM + pid_n * N + offs_m, rm, mask=row_ok)
    tl.store(RL + pid_n * N + offs_m, rl, mask=row_ok)
    tl.store(CM + pid_m * N + offs_n, cm, mask=col_ok)
    tl.store(CL + pid_m * N + offs_n, cl, mask=col_ok)


def _merge_log2(m: torch.Tensor, l: torch.Tensor) -> torch.Tensor:
    """log2 Σ_p l_p·2^(m_p) over the partials (dim 0), in float64."""
    m, l = m.double(), l.double()
    top = m.max(0).values
    return top + torch.log2((l * torch.exp2(m - top)).sum(0))


def triton_negcliploss(f: torch.Tensor, g: torch.Tensor, logit_scale: float = 100.0) -> torch.Tensor:
    """negCLIPLoss (one pass) of every row of one batch, float64, for float16 ``f``, ``g`` [B, D] on one device."""
    x = f.to(torch.float16).contiguous()
    y = g.to(torch.float16).contiguous()
    n, d = x.shape
    if n == 0:
        return torch.empty(0, dtype=torch.float64, device=x.device)
    # the partials' shapes depend on the tile the autotuner picks: allocate for the largest grid, then trim
    big = {"rm": triton.cdiv(n, min(c.kwargs["BLOCK_N"] for c in CONFIGS)),
           "cm": triton.cdiv(n, min(c.kwargs["BLOCK_M"] for c in CONFIGS))}
    rm, rl = (torch.full((big["rm"], n), float("-inf"), device=x.device), torch.zeros((big["rm"], n), device=x.device))
    cm, cl = (torch.full((big["cm"], n), float("-inf"), device=x.device), torch.zeros((big["cm"], n), device=x.device))
    diag = (x.double() * y.double()).sum(1)  # exact products of the float16 inputs, summed in float64
    dg = (diag * (logit_scale * LOG2E)).float().contiguous()
    _tile_kernel[lambda meta: (triton.cdiv(n, meta["BLOCK_M"]), triton.cdiv(n, meta["BLOCK_N"]))](
        x, y, dg, rm, rl, cm, cl, n, d, x.stride(0), y.stride(0), logit_scale * LOG2E)
    row = _merge_log2(rm, rl) * LN2  # unwritten partial rows stay (-inf, 0): they add nothing
    col = _merge_log2(cm, cl) * LN2
    return diag - (row + col) / (2.0 * logit_scale)
