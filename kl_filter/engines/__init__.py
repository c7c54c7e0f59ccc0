"""Where shard functions run. One function runs a shard; an engine only decides where.

``engine.map(fn, items, parallel=..., desc=...)`` calls ``fn(*item)`` for every item and returns the results
in item order (never in completion order, so outputs are identical across engines and worker counts).
``engine.mapper(fn, handles)`` applies a function to per-shard results that may live remotely (Ray object
refs) without bringing them to the driver: the global steps (exact thresholds) use it.

* ``local``: threads (or worker processes for filters whose per-row work is Python, e.g. language ID).
* ``ray``: Ray tasks on a local or remote cluster (``pip install 'kl-filter[ray]'``).
"""

from __future__ import annotations

from .local import LocalEngine


def get_engine(name: str = "local", num_workers: int = 1, progress=None, address: str | None = None):
    if name == "local":
        return LocalEngine(num_workers, progress)
    if name == "ray":
        from .ray_engine import RayEngine

        return RayEngine(num_workers, progress, address)
    from ..errors import KLFilterError

    raise KLFilterError(f"--engine must be local or ray, got {name!r}")


__all__ = ["LocalEngine", "get_engine"]
