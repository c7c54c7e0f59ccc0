"""The Ray engine: the same per-shard functions as Ray tasks, on a local or remote cluster.

``--engine ray [--ray_address ADDR]``. Without an address a local cluster is started with ``num_workers``
CPUs, usage statistics off and the dashboard off. Per-shard results stay in Ray's object store
(``fetch=False``) until a global step asks them small questions through ``apply`` (counts, 65,536-bin
histograms for the exact thresholds): the driver never gathers a score column unless a rule needs the whole column (``--uniform``,
``--ties exact``). The pool, the scores directory and the statistics must be on storage every node can read
(a shared filesystem or an fsspec URL such as ``s3://``). Every task runs with one BLAS thread, as the local
engine's workers do, so both give the same bits (:mod:`.blas`).

Install with ``pip install 'kl-filter[ray]'``.
"""

from __future__ import annotations

import os

from kl_filter.core.errors import MissingDependency
from kl_filter.core.progress import NoProgress
from kl_filter.engines.base import Parallel
from kl_filter.engines.blas import single_blas_thread


def _task(fn, *args):
    """One Ray task: ``fn(*args)`` with one BLAS thread (Ray has resolved the object refs among ``args``)."""
    with single_blas_thread():
        return fn(*args)


def _loaded(fn, load, item):
    return fn(item, load(item))


def _tupled(fn, *parts):
    return fn(tuple(parts))


class RayEngine:
    name = "ray"
    remote = True

    def __init__(self, num_workers: int = 1, progress=None, address: str | None = None):
        try:
            import ray
        except ImportError as e:
            raise MissingDependency("--engine ray needs Ray: pip install 'kl-filter[ray]'") from e
        self.ray = ray
        self.num_workers = max(1, num_workers)
        self.progress = progress or NoProgress
        if not ray.is_initialized():
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            kw = dict(address=address) if address else dict(num_cpus=self.num_workers, include_dashboard=False)
            ray.init(ignore_reinit_error=True, log_to_driver=False, logging_level="WARNING", **kw)
        self._task = ray.remote(_task)

    def map(self, fn, items, *, load=None, parallel: Parallel | str = Parallel.THREADS, desc: str = "",
            fetch: bool = True, num_gpus: float = 0, workers: int | None = None) -> list:
        """One task per item: ``fn(*item)`` (object refs among the item's parts are resolved by Ray), or load
        then ``fn`` in the same task. Every task is a process, so ``parallel`` and ``workers`` change nothing."""
        Parallel(parallel)  # the same values are refused as by the local engine
        task = self._task.options(num_cpus=1, num_gpus=num_gpus)
        refs = [task.remote(fn, *it) if load is None else task.remote(_loaded, fn, load, it) for it in items]
        bar = self.progress(desc=desc, total=len(refs))
        pending = list(refs)
        try:
            while pending:
                done, pending = self.ray.wait(pending, num_returns=1)
                self.ray.get(done)  # raise the first failure at once
                bar.update(len(done))
        except BaseException:
            for r in pending:
                self.ray.cancel(r)
            raise
        finally:
            bar.close()
        return self.ray.get(refs) if fetch else refs

    def apply(self, fn, handles) -> list:
        """``fn(value)`` as a task next to each handle; only the small results come back to the driver."""
        refs = [self._task.remote(_tupled, fn, *h) if isinstance(h, tuple) else self._task.remote(fn, h)
                for h in handles]
        return self.ray.get(refs)

    def devices(self, device: str) -> list[str]:
        """One task per item, each on a GPU of the cluster's when it has GPUs (and ``device`` allows)."""
        gpu = device in ("auto", "cuda") and self.ray.cluster_resources().get("GPU", 0) > 0
        return ["cuda" if gpu else "cpu"]

    def close(self) -> None:
        pass
