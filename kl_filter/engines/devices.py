"""Which device each compute worker of this machine uses: what an engine answers when a stage asks for its GPUs."""

from __future__ import annotations

import os

from kl_filter.core.errors import KLFilterError


def local_devices(device: str, num_workers: int) -> list[str]:
    """One entry per compute worker: every visible GPU for cuda, else ``num_workers`` CPU workers. ``auto`` on a
    machine without NVIDIA device nodes answers cpu without importing torch (seconds saved on every CPU run)."""
    if device == "auto" and not any(os.path.exists(p) for p in ("/dev/nvidiactl", "/dev/nvidia0", "/dev/dxg")):
        return ["cpu"] * max(1, num_workers)
    if device in ("auto", "cuda"):
        import importlib.util

        if importlib.util.find_spec("torch") is not None:
            import torch

            if torch.cuda.is_available():
                return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
        if device == "cuda":
            raise KLFilterError("--device cuda but no CUDA device is visible (or torch is not installed)")
    return ["cpu"] * max(1, num_workers)
