"""NormSim (Wang et al., NeurIPS 2024): how close a row's image is to a target distribution, column
``normsim_{norm}_{arch}``.

    NormSim_p(i) = ‖(⟨f_i, t_k⟩)_{k=1..N_t}‖_p      f_i = the row's ``{arch}_img``, t_k = target embeddings

* ``norm=inf``: max_k |⟨f_i, t_k⟩|, the ∞-norm as the authors compute it (``torch.norm(s, p=inf)`` over the
  similarities): the most extreme similarity, which is a negative one for a row pointing away from every target.
* ``norm=max``: max_k ⟨f_i, t_k⟩ (signed), the similarity to the nearest target; equal to ``inf`` wherever the
  most extreme similarity is positive (most rows: 458 of 30,000 differed on a DataComp-like pool). Both are a
  max-matmul costing 2·N_t·D flops per row. CPU: float32 products of the float16 rows, blocked
  (``block_rows`` × ``block_targets`` scores at a time, folded into a running max), one BLAS thread. CUDA: the
  same blocks in torch, float32 with TF32 off.
* ``norm=2``: sqrt(Σ_k ⟨f_i, t_k⟩²) = sqrt(f_iᵀ G f_i) with G = Σ_k t_k t_kᵀ (float64, computed once from the
  targets), so it costs a D × D quadratic form per row whatever N_t is (the D_W arithmetic with μ = 0).

The column's provenance is the targets' content hash (:mod:`kl_filter.scorers.targets`) and the norm (for ``inf``
also its formula, so a column stored before ``inf`` took the absolute value is recomputed, not reused).
"""

from __future__ import annotations

import math
import threading
from typing import Literal

import numpy as np

from kl_filter.engines import single_blas_thread
from kl_filter.core.errors import KLFilterError
from kl_filter.scorers.base import Arch, Scorer
from kl_filter.scorers.targets import HINT, load_targets

BLOCK_ROWS = 512        # measured on one EPYC core, D = 768: 512 × 2048 float32 blocks run at the matmul's
BLOCK_TARGETS = 2048    # speed; much larger score blocks fall out of cache and the max pass costs 20-30%


def column_name(norm: str, arch: str) -> str:
    return f"normsim_{norm}_{arch}"


@single_blas_thread()
def max_similarity(rows: np.ndarray, parts, absolute: bool = True, block_rows: int = BLOCK_ROWS,
                   block_targets: int = BLOCK_TARGETS) -> np.ndarray:
    """max_k |⟨x_i, t_k⟩| (``absolute``, NormSim∞) or max_k ⟨x_i, t_k⟩ (float32) of every row against the targets
    (float32 matrices, one per file). Memory: one ``block_rows × block_targets`` float32 block; no rows × targets
    matrix exists."""
    n = len(rows)
    out = np.empty(n, np.float32)
    buf = np.empty((min(block_rows, max(n, 1)), block_targets), np.float32)
    for r0 in range(0, n, block_rows):
        x = np.asarray(rows[r0: r0 + block_rows], dtype=np.float32)
        best = np.full(len(x), -np.inf, np.float32)
        for t in parts:
            for c0 in range(0, len(t), block_targets):
                tb = t[c0: c0 + block_targets]
                s = buf[: len(x), : len(tb)]
                np.matmul(x, tb.T, out=s)
                if absolute:
                    np.abs(s, out=s)  # exact: |s| of the same float32 products
                np.maximum(best, s.max(axis=1), out=best)
        out[r0: r0 + len(x)] = best
    return out


_device_parts: dict = {}  # (targets digest, device) -> the targets as float32 tensors there (one digest at a time)
_device_lock = threading.Lock()


def max_similarity_torch(rows, parts, absolute: bool = True, device: str = "cuda", digest: str | None = None,
                         block_rows: int = 8192, block_targets: int = 32768) -> np.ndarray:
    """:func:`max_similarity` in torch on ``device`` (float32, TF32 off). With ``digest`` the targets stay on
    the device between calls (one upload per process, not one per shard)."""
    import torch

    with torch.no_grad():
        with _device_lock:  # one upload per device (each GPU's worker thread gets its own copy)
            ts = _device_parts.get((digest, device)) if digest else None
            if ts is None:
                ts = [torch.from_numpy(np.ascontiguousarray(p, dtype=np.float32)).to(device) for p in parts]
                if digest:
                    for k in [k for k in _device_parts if k[0] != digest]:
                        del _device_parts[k]
                    _device_parts[(digest, device)] = ts
        x = torch.from_numpy(np.ascontiguousarray(rows)).to(device)
        out = torch.empty(len(x), dtype=torch.float32, device=device)
        prev = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False  # TF32 rounds the inputs to 10 bits: not float32 products
        try:
            for r0 in range(0, len(x), block_rows):
                xb = x[r0: r0 + block_rows].float()
                best = torch.full((len(xb),), -math.inf, dtype=torch.float32, device=device)
                for t in ts:
                    for c0 in range(0, len(t), block_targets):
                        s = xb @ t[c0: c0 + block_targets].T
                        best = torch.maximum(best, (s.abs_() if absolute else s).amax(dim=1))
                out[r0: r0 + len(xb)] = best
        finally:
            torch.backends.cuda.matmul.allow_tf32 = prev
        return out.cpu().numpy()


def quadratic_form(rows, matrix, device: str = "cpu") -> np.ndarray:
    """xᵀ M x per row (float32 from float16 rows): D_W's arithmetic with a zero mean, on ``device``."""
    from kl_filter.kernels.kl import whitened

    return whitened(rows, np.zeros(matrix.shape[0], np.float32), matrix, device=device)


def checked(name: str, values) -> np.ndarray:
    """A float32 column, refused when any value is NaN/inf (never a silent non-finite score:
    docs/methods.md#numerics)."""
    v = np.asarray(values, dtype=np.float32)
    bad = np.flatnonzero(~np.isfinite(v))
    if bad.size:
        raise KLFilterError(f"score {name} is not finite for {bad.size} rows (row {bad[0]})")
    return v


class TargetsScorer(Scorer):
    """Shared by NormSim and VAS: the targets, read and validated once, and the hash that is their provenance."""

    gpu = True

    arch: str
    target_embeddings: list | None
    targets_id: str | None = None  # the hash a run planned with; a worker that reads other bytes refuses to score

    def check_assets(self) -> None:
        """Read and validate the target files once, before any pass (none given: the one-line hint); a scorer
        that takes its target from the pool's statistics instead (VAS's ``--target pool``) has none."""
        if self.stats() is None:
            self.targets(plan=True)

    def targets(self, plan: bool = False):
        """The validated targets (read once per process); without files, the one-line hint of what to give.
        ``plan``: a run starts from these bytes (its columns' provenance); otherwise they must still be those."""
        if not self.target_embeddings:
            raise KLFilterError(f"{self.name}: {HINT}" + (", or --target pool" if self.name == "vas" else ""))
        t = load_targets(self.target_embeddings, self.arch)
        if plan or self.targets_id is None:
            self.targets_id = t.digest
        elif t.digest != self.targets_id:
            raise KLFilterError("target embeddings changed while the run was scoring (content hash "
                                f"{t.digest}, planned {self.targets_id})", self.target_embeddings[0])
        return t


class NormSimScorer(TargetsScorer):
    """NormSim_p of each row's image embedding against target embeddings (Wang et al. 2024).

    arch: embedding family
    target_embeddings: target embedding files (.npy N_t x D, or DataComp's in1k_clip_vit_l14_{0..4}.pt)
    norm: inf = max_k |<f, t_k>| (the authors' NormSim∞); max = max_k <f, t_k> (signed); 2 = sqrt(sum_k <f, t_k>^2)
    """

    name = "normsim"

    def __init__(self, arch: Arch = "l14", target_embeddings: list[str] | None = None,
                 norm: Literal["inf", "max", "2"] = "inf"):
        if norm not in ("inf", "max", "2"):
            raise KLFilterError(f"--norm must be inf, max or 2, got {norm!r}")
        self.arch, self.norm = arch, norm
        self.target_embeddings = list(target_embeddings) if target_embeddings else None  # none: targets() says
        self.keys = (f"{arch}_img",)

    def outputs(self):
        return (column_name(self.norm, self.arch),)

    def provenance(self, column, stats):
        prov = {"scorer": self.name, "norm": self.norm, "targets_id": self.targets(plan=True).digest}
        if self.norm == "inf":  # a stored normsim_inf column from before it took |s| (signed) is never reused
            prov["formula"] = "max_k |<f, t_k>|"
        return prov

    def compute(self, shard, stats, device="cpu"):
        from kl_filter.kernels.kl import _cuda_device, _use_cuda

        t, x = self.targets(), shard[self.keys[0]]
        if self.norm == "2":
            v = np.sqrt(np.maximum(quadratic_form(x, t.gram(), device), 0.0))
        elif _use_cuda(device):
            v = max_similarity_torch(x, t.parts, self.norm == "inf", _cuda_device(device), t.digest)
        else:
            v = max_similarity(np.asarray(x), t.parts, self.norm == "inf")
        return {self.outputs()[0]: checked(self.outputs()[0], v)}
