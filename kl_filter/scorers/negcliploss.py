"""negCLIPLoss (Wang et al., NeurIPS 2024): the CLIP score minus its in-batch log-normaliser.

For unit image and text embeddings f, g of one family and τ = 1/a (a = 100, CLIP's logit scale)::

    negCLIPLoss_i = s_ii − (τ/2)·[ log Σ_{j∈B} exp(s_ij/τ) + log Σ_{j∈B} exp(s_ji/τ) ],   s_ij = ⟨f_i, g_j⟩

over a random batch B of the WHOLE pool, averaged over K passes with independent partitions. It is the
density-ratio reading of the CLIP score: the normaliser is the same log-sum-exp as the KL scores', over the
batch instead of a reference sample. The partition comes from the bucket stage (:mod:`.buckets`): a seeded
hash of the uids, equal batches of about ``batch_size`` rows (sizes differ by at most one row), crossing shards.

Choices, documented: the authors' code (``baselines/vas2.py``, ``cal_new_clip_score``) shuffles the rows of one
metadata file at a time and cuts batches of ``batch_size`` with a smaller last batch; here the batches span the
pool (the paper's definition) and are equal, so no row is normalised over a small remainder batch.

CPU kernel: for a block of rows, one float32 product ``F_blk·(a·G)ᵀ`` (float16 inputs), exponentiated ONCE in
place, 1 MiB of rows at a time: its float32 (pairwise) row sums give the rows' log-sum-exps and its column sums
(one matrix-vector product) update a running (max, sum) per column; 2·D·|B| flops per row, the similarity block never larger than ``block × |B|``. No shift
is needed while every exp(a·s) is a finite float32 and every row and column sum at least 2^-70 (|a·s| well
below 88, as CLIP similarities at a = 100 are): then no term that matters underflows (a term lost to underflow
is below 2^-126, at most 2^-56 of its sum, 2^-41 for 2^15 of them). A block outside that range (checked on the
sums, so on the data alone: the same blocks for any thread or worker count) is recomputed with the max-shifted
log-sum-exps. One exp an element instead of two (rows and columns each shifted by their own max) and no shift
pass: the kernel runs at 84-86% of the speed of its matmul alone at one thread, against 69% before
(benchmarks/bench_kernels_cpu.py; what remains is mostly NumPy's float32 exp, about 1.8 ns an element). On a GPU: the fused Triton kernel
(:mod:`.triton_negcliploss`, row and column partials from one tile pass), or the blocked torch twin.

Precision: the pair's own similarity s_ii enters three times (the score's first term and both log-sum-exps,
where it is often the largest term). Every path computes it ONCE, in float64 (exact products of the float16
inputs), and writes it into the float32 block's diagonal before the log-sum-exps, so the float32 product's
rounding of s_ii (about 1e-7 at D = 768, a float32 dot product's) neither enters the score uncancelled nor
differently in its three places; only the off-diagonal products are float32, and the log-sum-exps average their
errors. Measured against a float64 transcription of the authors' formula at |B| = 32,768, D = 768 (CLIP-like
float16 unit pairs, a = 100; tests/test_fidelity_authors.py): largest error 2.9e-6 relative (0.01 floor) and
3.1e-8 absolute over 2,048 rows; 2.2e-5 and 2.2e-7 with the diagonal from a float32 ``einsum``.
"""

from __future__ import annotations

import math
import numpy as np

from kl_filter.engines import single_blas_thread
from kl_filter.core.errors import KLFilterError
from kl_filter.core.half import to_float32
from kl_filter.scorers.base import Arch, BucketScorer, DensityRatio

DEFAULT_BATCH_SIZE = 32768
DEFAULT_PASSES = 10
MAX_PASSES = 1000  # each pass reads and scores the whole pool once; the mean's noise falls as 1/sqrt(passes)
BLOCK_ROWS = 512
PASS_BYTES = 1 << 20  # exp and row sums over 1 MiB of a block at a time (the core's L2): 10% less than whole blocks
SUM_FLOOR = np.float32(2.0 ** -70)  # the least row or column sum of exp(a·s) taken without a shift (see CPU kernel)


@single_blas_thread()
def negcliploss_batch(f: np.ndarray, g: np.ndarray, logit_scale: float = 100.0, block: int = BLOCK_ROWS):
    """negCLIPLoss (one pass) of every row of one batch: float32 products of float16 inputs, the pairs' own
    similarities in float64 (see the module's Precision), float64 output."""
    a = np.float32(logit_scale)
    x, g32 = to_float32(f), to_float32(g)  # exact; the float64 diagonal is taken from them
    y = g32 * a                             # a·g rounded once to float32: no scaling pass over the blocks
    n = len(x)
    diag = np.empty(n, np.float64)
    row_lse = np.empty(n, np.float64)
    col_max = np.full(n, -np.inf, np.float32)
    col_sum = np.zeros(n, np.float32)
    buf = np.empty((min(block, n), n), np.float32)
    ones = np.ones(min(block, n), np.float32)
    pass_rows = max(1, PASS_BYTES // (4 * n))  # a function of the batch size only: the same bits for any worker
    for r0 in range(0, n, block):
        r1 = min(n, r0 + block)
        diag[r0:r1] = np.einsum("ij,ij->i", x[r0:r1].astype(np.float64), g32[r0:r1].astype(np.float64))
        s = _similarities(x[r0:r1], y, diag[r0:r1] * float(a), r0, buf[: r1 - r0])
        row_sum = np.empty(r1 - r0, np.float32)
        with np.errstate(over="ignore"):  # an overflow is caught below (an infinite sum) and recomputed
            for i0 in range(0, r1 - r0, pass_rows):  # exp and row sums while the rows are in cache
                p = s[i0: i0 + pass_rows]
                np.exp(p, out=p)
                np.sum(p, axis=1, out=row_sum[i0: i0 + pass_rows])  # float32, pairwise: per row, any chunking
            col_block = ones[: r1 - r0] @ s
        if (np.isfinite(row_sum).all() and np.isfinite(col_block).all()
                and min(row_sum.min(), col_block.min()) >= SUM_FLOOR):
            row_lse[r0:r1] = np.log(row_sum.astype(np.float64))
            col_shift = np.float32(0)
        else:  # the block again, each row and column shifted by its max
            s = _similarities(x[r0:r1], y, diag[r0:r1] * float(a), r0, buf[: r1 - r0])
            m = s.max(axis=1)
            row_lse[r0:r1] = m + np.log(np.exp(s - m[:, None]).sum(axis=1, dtype=np.float64))
            col_shift = s.max(axis=0)
            col_block = np.exp(s - col_shift).sum(axis=0)
        new = np.maximum(col_max, col_shift)
        col_sum = col_sum * np.exp(col_max - new) + col_block * np.exp(col_shift - new)
        col_max = new
    col_lse = col_max.astype(np.float64) + np.log(col_sum.astype(np.float64))
    return diag - (row_lse + col_lse) / (2.0 * float(a))


def _similarities(x_blk, y, own, r0: int, out: np.ndarray) -> np.ndarray:
    """``a·s`` of a block of rows against every column, the pairs' own (``own``, float64) written on its diagonal."""
    np.matmul(x_blk, y.T, out=out)
    i = np.arange(len(x_blk))
    out[i, r0 + i] = own  # the pairs' own: float64, rounded once to float32
    return out


def negcliploss_batch_torch(f, g, logit_scale: float = 100.0, device: str = "cuda", block: int = 4096):
    """The same blocks in torch (float32 accumulation of float16 inputs, TF32 off) on ``device``."""
    import torch

    with torch.no_grad():
        x = torch.as_tensor(np.asarray(f), device=device).float()
        y = torch.as_tensor(np.asarray(g), device=device).float()
        prev = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False  # TF32 rounds the products to 10 bits: not float32
        try:
            diag = (x.double() * y.double()).sum(1)  # float64, written into each block's diagonal (as the CPU's)
            rows, col_max, col_sum = [], torch.full((len(y),), -math.inf, device=device), torch.zeros(len(y), device=device)
            for r0 in range(0, len(x), block):
                s = (x[r0: r0 + block] @ y.T) * logit_scale
                i = torch.arange(len(s), device=device)
                s[i, r0 + i] = (logit_scale * diag[r0: r0 + len(s)]).float()
                rows.append(torch.logsumexp(s, dim=1).double())
                new = torch.maximum(col_max, s.max(0).values)
                col_sum = col_sum * torch.exp(col_max - new) + torch.exp(s - new).sum(0)
                col_max = new
        finally:
            torch.backends.cuda.matmul.allow_tf32 = prev
        col_lse = col_max.double() + torch.log(col_sum.double())
        return (diag - (torch.cat(rows) + col_lse) / (2.0 * logit_scale)).cpu().numpy()


def negcliploss_batch_gpu(f, g, logit_scale: float, device: str) -> np.ndarray:
    """The fused Triton kernel when Triton is installed, else the blocked torch twin."""
    import importlib.util

    if importlib.util.find_spec("triton") is None:
        return negcliploss_batch_torch(f, g, logit_scale, device)
    import torch

    from kl_filter.kernels.negcliploss_triton import triton_negcliploss

    x, y = (torch.as_tensor(np.asarray(a), device=device) for a in (f, g))
    return triton_negcliploss(x, y, logit_scale).cpu().numpy()


class NegCLIPLossScorer(DensityRatio, BucketScorer):
    """negCLIPLoss of each pair against random batches of the whole pool, averaged over passes.

    arch: embedding family
    batch_size: rows per random batch (at least the pool size: one batch, the whole pool)
    num_batches: how many independent random partitions (passes) are averaged
    """

    name = "negcliploss"
    gpu = True

    def __init__(self, arch: Arch = "l14", batch_size: int = DEFAULT_BATCH_SIZE, num_batches: int = DEFAULT_PASSES,
                 **temperature):
        super().__init__(**temperature)  # logit_scale: a = 1/τ (DensityRatio)
        if batch_size < 2:
            raise KLFilterError(f"--batch_size must be at least 2 (a batch normalises over other pairs), got {batch_size}")
        if not 1 <= num_batches <= MAX_PASSES:
            raise KLFilterError(f"--num_batches (passes) must be in [1, {MAX_PASSES}], got {num_batches} (each pass "
                                "reads and scores the whole pool once)")
        self.arch, self.batch_size, self.num_batches = arch, batch_size, num_batches
        self.keys = (f"{arch}_img", f"{arch}_txt")

    def outputs(self):
        return (f"negcliploss_{self.arch}",)

    def num_passes(self):
        return self.num_batches

    def provenance(self, column, stats):
        prov = super().provenance(column, stats)
        if self.batch_size == 2:
            # Only at --batch_size 2 could an odd pool hold a 1-row batch (scored 0, always kept) before the bucket
            # count stopped at rows // 2 (scorers/partition.py num_buckets): such stored columns are recomputed.
            prov["batch_rows"] = "2-3"
        return prov

    def bucket_size(self):
        return self.batch_size

    def score_bucket(self, payload, device="cpu"):
        f, g = payload[self.keys[0]], payload[self.keys[1]]
        if device.startswith("cuda"):
            values = negcliploss_batch_gpu(f, g, self.scale, device)
        else:
            values = negcliploss_batch(f, g, self.scale)
        if not np.isfinite(values).all():
            raise KLFilterError(f"negCLIPLoss is not finite for {int((~np.isfinite(values)).sum())} rows of a batch "
                                "(embeddings not unit norm?)")
        return {self.outputs()[0]: values}
