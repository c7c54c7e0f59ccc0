"""A bounded, overlapped shard pipeline: loader threads decode the next shards while workers compute.

    items ──load (``loaders`` threads, at most ``depth`` decoded shards waiting)──▶ queue
          ──work (``workers`` threads, e.g. one per GPU, or CPU threads)──────▶ results, in item order

NumPy, pyarrow, zlib and torch release the GIL in their heavy loops, so threads overlap reading, decoding
and arithmetic. Memory stays bounded by ``depth`` loaded shards plus one per worker, whatever the number of
shards. The first exception stops the pipeline and is re-raised in the caller.
"""

from __future__ import annotations

import concurrent.futures as cf
import queue
import threading
from typing import Callable, Iterable

_DONE = object()


def run_pipeline(items: Iterable, load: Callable, work: Callable, loaders: int = 2, workers: int = 1,
                 depth: int = 2, on_result: Callable | None = None) -> list:
    """``work(worker_index, item, load(item))`` for every item; returns the results in item order."""
    items = list(items)
    results: list = [None] * len(items)
    q: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()
    errors: list[BaseException] = []

    def feed():
        with cf.ThreadPoolExecutor(max(1, loaders)) as ex:
            pending = {}
            it = iter(enumerate(items))
            try:
                for i, item in it:
                    if stop.is_set():
                        break
                    pending[i] = ex.submit(load, item)
                    # keep at most `loaders` loads in flight beyond the queue; hand them over in order
                    while len(pending) >= max(1, loaders):
                        j = min(pending)
                        _put(q, (j, pending.pop(j).result()), stop)
                for j in sorted(pending):
                    _put(q, (j, pending.pop(j).result()), stop)
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                errors.append(e)
                stop.set()
            finally:
                for f in pending.values():
                    f.cancel()
        for _ in range(max(1, workers)):
            _put(q, _DONE, None)

    def consume(w: int):
        while True:
            got = q.get()
            if got is _DONE:
                return
            if stop.is_set():
                continue
            i, loaded = got
            try:
                results[i] = work(w, items[i], loaded)
                if on_result is not None:
                    on_result(i, results[i])
            except BaseException as e:  # noqa: BLE001
                errors.append(e)
                stop.set()

    feeder = threading.Thread(target=feed, name="kl-filter-loader", daemon=True)
    consumers = [threading.Thread(target=consume, args=(w,), name=f"kl-filter-worker-{w}", daemon=True)
                 for w in range(max(1, workers))]
    feeder.start()
    for c in consumers:
        c.start()
    feeder.join()
    for c in consumers:
        c.join()
    if errors:
        raise errors[0]
    return results


def _put(q: queue.Queue, value, stop: threading.Event | None) -> None:
    while True:
        try:
            q.put(value, timeout=0.1)
            return
        except queue.Full:
            if stop is not None and stop.is_set():
                return
