"""The density-ratio KL family's arithmetic on arrays (docs/methods.md#the-kl-scores): D_KL and D_KLR of targets
against reference samples, D_C and D_W against the statistics' means and covariance. The KL scorer
(:mod:`kl_filter.scorers.kl`) calls these; they know nothing of pools, shards or files.

``density_ratio_kl``, ``centered`` and ``whitened`` take NumPy arrays (float16 as stored, or float32) and
return float32 NumPy arrays; ``device`` picks the engine: "cpu" → the NumPy engine (float32, blocked online
log-sum-exp); "cuda" → the fused Triton kernel when available, else blocked torch; "auto" → cuda if visible.
Importing this package does not import torch.
"""

from __future__ import annotations

import numpy as np

from kl_filter.kernels import kl_numpy as numpy_engine


def _use_cuda(device: str) -> bool:
    if device == "cpu":
        return False
    if device.startswith("cuda"):
        return True
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return torch.cuda.is_available()


def density_ratio_kl(targets, samples, logit_scale: float = 100.0, device: str = "cpu"):
    """(D_KL, D_KLR) float32 per target row against the reference samples of the other modality."""
    if _use_cuda(device):
        from kl_filter.kernels.kl_torch import density_ratio_kl as torch_kl

        return torch_kl(targets, samples, logit_scale, device=_cuda_device(device))
    return numpy_engine.density_ratio_kl(np.asarray(targets), np.asarray(samples), logit_scale)


def _cuda_device(device: str) -> str:
    return device if device.startswith("cuda") else "cuda"


def centered(targets, mean, device: str = "cpu"):
    """D_C = ‖x − μ‖² (a matrix-free row reduction; on the GPU when ``device`` is one)."""
    if _use_cuda(device):
        from kl_filter.kernels.kl_torch import centered as torch_centered

        return torch_centered(targets, mean, _cuda_device(device))
    return numpy_engine.centered(np.asarray(targets), mean)


def whitened(targets, mean, cov_other, device: str = "cpu"):
    """D_W = (x − μ)ᵀ Σ_other (x − μ) (a matrix product; on the GPU when ``device`` is one)."""
    if _use_cuda(device):
        from kl_filter.kernels.kl_torch import whitened as torch_whitened

        return torch_whitened(targets, mean, cov_other, _cuda_device(device))
    return numpy_engine.whitened(np.asarray(targets), mean, cov_other)


__all__ = ["density_ratio_kl", "centered", "whitened"]
