"""Where shard functions run. One function runs a shard; an engine only decides where.

The interface (:class:`Engine`), the same for every engine:

* ``engine.map(fn, items, *, load=None, parallel=Parallel.THREADS, desc="", fetch=True, num_gpus=0,
  workers=None)``: ``fn(*item)`` for every item, or ``fn(item, load(item))`` with ``load`` (the local engine
  overlaps loading and compute), results in ITEM order (never completion order, so outputs are identical across
  engines and worker counts). ``fetch=False`` leaves a remote engine's results where they were made.
* ``engine.apply(fn, handles)``: ``fn(value)`` where each result of ``map(fetch=False)`` lives; only the small
  answers come back (the global steps, e.g. exact thresholds, ask per-shard counts and histograms this way).
* :func:`worker_index`: which local worker thread runs the current ``fn`` (to pick a GPU per worker).

Engines: ``local`` (threads, or worker processes for filters whose per-row work is Python, e.g. language ID) and
``ray`` (Ray tasks on a local or remote cluster, ``pip install 'kl-filter[ray]'``). Every task runs with one BLAS
thread (:func:`single_blas_thread`), so results are the same bits for any engine, worker or BLAS thread count.
"""

from __future__ import annotations

from kl_filter.engines.base import Engine, Parallel, worker_index
from kl_filter.engines.blas import single_blas_thread
from kl_filter.engines.local import LocalEngine


def get_engine(name: str = "local", num_workers: int = 1, progress=None, address: str | None = None,
               task_timeout: float | None = None) -> Engine:
    """The engine ``name``; ``task_timeout`` (seconds, None: no bound) stops a task that runs longer
    (:mod:`.watchdog`)."""
    if name == "local":
        return LocalEngine(num_workers, progress, task_timeout)
    if name == "ray":
        from kl_filter.engines.ray_engine import RayEngine

        return RayEngine(num_workers, progress, address, task_timeout)
    from kl_filter.core.errors import KLFilterError

    raise KLFilterError(f"--engine must be local or ray, got {name!r}")


__all__ = ["Engine", "LocalEngine", "Parallel", "get_engine", "single_blas_thread", "worker_index"]
