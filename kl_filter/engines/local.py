"""The local engine: compute threads fed by loader threads that read ahead, or forked worker processes.

    items ──load (``num_workers`` loader threads, a bounded read-ahead)──▶ loaded items
          ──fn (``workers`` compute threads: CPU threads, or one per GPU)─▶ results, in item order

NumPy, pyarrow, zlib and torch release the GIL in their heavy loops, so threads overlap reading, decoding and
arithmetic. Compute threads take items in item order, so with one compute thread ``fn`` sees the items in order
(the resharder's single writer and the report's streaming passes rely on it). Memory stays bounded by the
read-ahead (``num_workers + max(2, workers)`` items loaded or loading) plus one item per compute thread, however
many items there are. A whole map runs with one BLAS thread (:mod:`.blas`); worker processes set one in their
initializer. ``task_timeout`` bounds each ``fn`` call (:mod:`.watchdog`).
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os
import sys
import threading
import time

from kl_filter.core.errors import KLFilterError
from kl_filter.core.progress import NoProgress
from kl_filter.engines.base import Parallel, _worker
from kl_filter.engines.blas import set_single_blas_thread, single_blas_thread
from kl_filter.engines.watchdog import TaskTimeout, Watchdog, check_task_timeout, stuck_in, timeout_message


class LocalEngine:
    name = "local"
    remote = False

    def __init__(self, num_workers: int = 1, progress=None, task_timeout: float | None = None):
        self.num_workers = max(1, num_workers)
        self.progress = progress or NoProgress
        self.task_timeout = check_task_timeout(task_timeout)

    def map(self, fn, items, *, load=None, parallel: Parallel | str = Parallel.THREADS, desc: str = "",
            fetch: bool = True, num_gpus: float = 0, workers: int | None = None) -> list:
        """See :class:`~kl_filter.engines.base.Engine`; results are values whatever ``fetch`` says."""
        items = list(items)
        parallel = Parallel(parallel)
        bar = self.progress(desc=desc, total=len(items))
        try:
            with single_blas_thread():
                # never more workers than items (4 shards: 4 forks, not 64), nor processes than cores
                n = max(1, min(self.num_workers, len(items)))
                if parallel is Parallel.PROCESSES and n > 1:
                    return _processes(fn, items, load, min(n, os.cpu_count() or 1), bar, self.task_timeout, desc)
                return _threads(fn, items, load, n, max(1, min(workers or n, len(items))), bar, self.task_timeout,
                                desc)
        finally:
            bar.close()

    def apply(self, fn, handles) -> list:
        """Local handles are the values themselves."""
        with single_blas_thread():
            return [fn(h) for h in handles]

    def devices(self, device: str) -> list[str]:
        """Every visible GPU (one compute thread each) for cuda, else ``num_workers`` CPU workers."""
        from kl_filter.engines.devices import local_devices

        return local_devices(device, self.num_workers)

    def close(self) -> None:
        pass


def _call(fn, load, item):
    return fn(*item) if load is None else fn(item, load(item))


def _threads(fn, items, load, loaders: int, workers: int, bar, timeout: float | None = None, desc: str = "") -> list:
    results: list = [None] * len(items)
    running: dict = {}  # worker -> (its thread's id, when its fn call began): what the timeout watches
    errors: list[BaseException] = []  # the first one is re-raised; any entry stops the workers
    lock = threading.Lock()
    taken = submitted = 0
    loads: dict = {}  # item index -> Future of load(item), submitted in item order
    pool = cf.ThreadPoolExecutor(loaders, thread_name_prefix="kl-filter-loader") if load is not None else None

    def take():
        """The next item's index and its load (submitting the read-ahead), or None when done or failed."""
        nonlocal taken, submitted
        with lock:
            if errors or taken == len(items):
                return None
            i, taken = taken, taken + 1
            if pool is None:
                return i, None
            while submitted < min(len(items), i + 1 + loaders + max(2, workers)):
                loads[submitted] = pool.submit(load, items[submitted])
                submitted += 1
            return i, loads.pop(i)

    def work(w: int) -> None:
        _worker.index = w
        while (got := take()) is not None:
            i, loaded = got
            try:
                value = loaded.result() if loaded is not None else None
                running[w] = (threading.get_ident(), time.monotonic())
                try:
                    out = fn(*items[i]) if loaded is None else fn(items[i], value)
                finally:
                    running.pop(w, None)
                if errors:  # a timed-out map: whatever finishes late is not a result
                    return
                results[i] = out
            except BaseException as e:  # noqa: BLE001 - re-raised in the caller
                errors.append(e)
                return
            with lock:
                bar.update(1)

    threads = [threading.Thread(target=work, args=(w,), name=f"kl-filter-worker-{w}", daemon=True)
               for w in range(workers)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(None if timeout is None else 0.05)
                late = [r for r in list(running.values()) if time.monotonic() - r[1] > timeout] if timeout else []
                if late:  # the stuck thread cannot be killed: stop waiting for it (see .watchdog)
                    errors.append(TaskTimeout(timeout_message(timeout, desc, *stuck_in(late[0][0]))))
                    raise errors[-1]
    except BaseException as e:  # e.g. Ctrl-C: the workers stop after their current item
        errors.append(e)
        raise
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    if errors:
        raise errors[0]
    return results


_reports = None  # in a worker process under --task_timeout: where its watchdog says why it ended


def _init_process(reports) -> None:
    global _reports
    _reports = reports
    set_single_blas_thread()


def _call_watched(fn, load, item, timeout: float, desc: str):
    with Watchdog(timeout, desc, _reports.put):
        return _call(fn, load, item)


def _processes(fn, items, load, workers: int, bar, timeout: float | None = None, desc: str = "") -> list:
    ctx = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    reports = ctx.SimpleQueue() if timeout else None
    with cf.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_process, initargs=(reports,)) as ex:
        futs = [ex.submit(_call, fn, load, it) if timeout is None else
                ex.submit(_call_watched, fn, load, it, timeout, desc) for it in items]
        try:
            for f in cf.as_completed(futs):
                f.result()  # the first failure stops the rest
                bar.update(1)
        except BaseException as e:
            ex.shutdown(wait=False, cancel_futures=True)
            if not isinstance(e, cf.process.BrokenProcessPool):
                raise
            if reports is not None and not reports.empty():
                raise TaskTimeout(reports.get()) from None  # a watchdog ended its worker
            raise KLFilterError(f"a worker process of '{desc or 'a task'}' died (killed by a signal, out of memory, or "
                                "a crash in native code); nothing was written for its shard and finished work is "
                                "kept: rerun to resume") from None
        return [f.result() for f in futs]
