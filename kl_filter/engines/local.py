"""The local engine: a thread pool, or worker processes when a filter's per-row work holds the GIL."""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import sys

from ..progress import NoProgress


class LocalEngine:
    name = "local"
    remote = False

    def __init__(self, num_workers: int = 1, progress=None):
        self.num_workers = max(1, num_workers)
        self.progress = progress or NoProgress

    def _executor(self, parallel: str) -> cf.Executor:
        if parallel == "processes" and self.num_workers > 1:
            ctx = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
            return cf.ProcessPoolExecutor(self.num_workers, mp_context=ctx)
        return cf.ThreadPoolExecutor(self.num_workers)

    def map(self, fn, items, parallel: str = "threads", desc: str = "", fetch: bool = True) -> list:
        """Results in item order. ``fetch`` is for remote engines (results stay where they were made)."""
        items = list(items)
        bar = self.progress(desc=desc, total=len(items))
        try:
            with self._executor(parallel) as ex:
                futs = [ex.submit(fn, *it) for it in items]
                out = []
                for f in futs:  # in item order
                    out.append(f.result())
                    bar.update(1)
                return out
        finally:
            bar.close()

    def mapper(self, fn, handles) -> list:
        return [fn(h) for h in handles]

    def get(self, handles) -> list:
        return list(handles)

    def close(self) -> None:
        pass
