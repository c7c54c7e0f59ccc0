"""The blocked torch engine (CPU or CUDA): the NumPy engine's online log-sum-exp on torch tensors.

Used on a GPU when Triton is not importable, and as the plain "chunked" reference in the kernel benchmark.
float16 inputs, float32 arithmetic; memory bounded by one ``block_rows × block_samples`` matrix.
"""

from __future__ import annotations

import math

import numpy as np
import torch


@torch.no_grad()
def density_ratio_kl_torch(x: torch.Tensor, y: torch.Tensor, logit_scale: float = 100.0, block_rows: int = 8192,
                           block_samples: int = 16384) -> tuple[torch.Tensor, torch.Tensor]:
    n = y.shape[0]
    ya = y.float() * logit_scale
    ybar = ya.double().mean(0)
    kl = torch.empty(x.shape[0], dtype=torch.float32, device=x.device)
    klr = torch.empty_like(kl)
    for r0 in range(0, x.shape[0], block_rows):
        xb = x[r0: r0 + block_rows].float()
        mx = torch.full((len(xb),), float("-inf"), device=x.device)
        l = torch.zeros(len(xb), device=x.device)
        w = torch.zeros(len(xb), device=x.device)
        for c0 in range(0, n, block_samples):
            s = xb @ ya[c0: c0 + block_samples].T
            new = torch.maximum(mx, s.max(1).values)
            corr = torch.exp(mx - new)
            w = torch.where(l > 0, corr * (w + (mx - new) * l), torch.zeros_like(w))
            l = l * corr
            s -= new[:, None]
            e = torch.exp(s)
            l += e.sum(1)
            w += (e * s).sum(1)
            mx = new
        log_l = torch.log(l)
        kl[r0: r0 + len(xb)] = w / l - log_l + math.log(n)
        klr[r0: r0 + len(xb)] = (mx.double() + log_l.double() - math.log(n) - xb.double() @ ybar).float()
    return kl, klr


def density_ratio_kl(targets, samples, logit_scale: float = 100.0, device: str = "cuda"):
    """NumPy in, NumPy out: the fused Triton kernel on CUDA when Triton imports, else the blocked torch path."""
    x = torch.from_numpy(np.ascontiguousarray(targets, dtype=np.float16))
    y = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float16))
    if device.startswith("cuda"):
        x = x.pin_memory().to(device, non_blocking=True)
        y = y.to(device)
        try:
            from kl_filter.kernels.kl_triton import triton_density_ratio_kl

            kl, klr = triton_density_ratio_kl(x, y, logit_scale)
        except ImportError:
            kl, klr = density_ratio_kl_torch(x, y, logit_scale)
    else:
        kl, klr = density_ratio_kl_torch(x, y, logit_scale)
    return kl.cpu().numpy(), klr.cpu().numpy()


def _to(a, device):
    return torch.from_numpy(np.ascontiguousarray(a)).to(device)


@torch.no_grad()
def centered(targets, mean, device: str = "cuda") -> np.ndarray:
    d = _to(targets, device).float() - _to(np.asarray(mean, np.float32), device)
    return (d * d).sum(1).cpu().numpy()


@torch.no_grad()
def whitened(targets, mean, cov_other, device: str = "cuda") -> np.ndarray:
    d = _to(targets, device).float() - _to(np.asarray(mean, np.float32), device)
    return ((d @ _to(np.asarray(cov_other, np.float32), device)) * d).sum(1).cpu().numpy()
