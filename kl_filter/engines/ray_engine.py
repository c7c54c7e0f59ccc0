"""The Ray engine: the same per-shard functions as Ray tasks, on a local or remote cluster.

``--engine ray [--ray_address ADDR]``. Without an address a local cluster is started with ``num_workers``
CPUs, usage statistics off and the dashboard off. Per-shard results stay in Ray's object store
(``fetch=False``) until a global step asks them small questions (counts, 65,536-bin histograms for the exact
thresholds): the driver never gathers a score column unless a rule needs the whole column (``--uniform``,
``--ties exact``). The pool, the scores directory and the statistics must be on storage every node can read
(a shared filesystem or an fsspec URL such as ``s3://``).

Install with ``pip install 'kl-filter[ray]'``.
"""

from __future__ import annotations

import os

from ..errors import MissingDependency
from ..progress import NoProgress


def _call(fn, *args):
    return fn(*args)


def _call_tuple(fn, *parts):
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
        self._call = ray.remote(_call)
        self._call_tuple = ray.remote(_call_tuple)

    def map(self, fn, items, parallel: str = "threads", desc: str = "", fetch: bool = True,
            num_gpus: float = 0) -> list:
        """``fn(*item)`` as one task per item (object refs among the arguments are resolved by Ray)."""
        items = list(items)
        opts = {"num_cpus": 1, "num_gpus": num_gpus}
        refs = [self._call.options(**opts).remote(fn, *it) for it in items]
        bar = self.progress(desc=desc, total=len(refs))
        pending = list(refs)
        try:
            while pending:
                done, pending = self.ray.wait(pending, num_returns=1)
                self.ray.get(done)  # raise the first failure at once
                bar.update(len(done))
        finally:
            bar.close()
        return self.ray.get(refs) if fetch else refs

    def mapper(self, fn, handles) -> list:
        """``fn(handle)`` next to each handle; small results come back to the driver."""
        refs = [self._call_tuple.remote(fn, *h) if isinstance(h, tuple) else self._call.remote(fn, h) for h in handles]
        return self.ray.get(refs)

    def get(self, handles) -> list:
        return self.ray.get(list(handles))

    def close(self) -> None:
        pass
