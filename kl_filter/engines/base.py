"""The executor interface every engine implements, and what a running function may ask about its worker."""

from __future__ import annotations

import threading
from enum import Enum
from typing import Any, Callable, Iterable, Protocol


class Parallel(str, Enum):
    """How the local engine runs ``fn``: threads (NumPy, pyarrow, zlib and torch release the GIL in their heavy
    loops), or forked worker processes for functions whose per-row work is Python (e.g. language ID)."""

    THREADS = "threads"
    PROCESSES = "processes"


_worker = threading.local()


def worker_index() -> int:
    """The index (0..num_workers-1) of the local worker thread running the current ``fn``, e.g. to pick one GPU
    per worker; 0 inside Ray tasks, worker processes and outside any map."""
    return getattr(_worker, "index", 0)


class Engine(Protocol):
    """Where shard functions run. Every engine gives the same results in the same (item) order."""

    name: str  # "local" | "ray"
    remote: bool  # results of map(fetch=False) are handles living elsewhere
    num_workers: int

    def map(self, fn: Callable, items: Iterable, *, load: Callable | None = None,
            parallel: Parallel | str = Parallel.THREADS, desc: str = "", fetch: bool = True, num_gpus: float = 0,
            workers: int | None = None) -> list:
        """``fn(*item)`` per item, or ``fn(item, load(item))`` with ``load``; results in item order.

        ``desc`` names the progress bar; the first exception stops the work and is re-raised. ``fetch=False``:
        a remote engine returns handles (for :meth:`apply`) instead of values. ``parallel`` and ``workers``
        (compute threads beside ``num_workers`` loaders) are for the local engine, ``num_gpus`` (per task) for Ray.
        """

    def apply(self, fn: Callable[[Any], Any], handles: Iterable) -> list:
        """``fn(value)`` where each handle's value lives (a tuple of handles and values is passed as one tuple);
        the small results come back to the driver, in order."""

    def devices(self, device: str) -> list[str]:
        """The device of each compute worker for ``--device`` (auto, cpu, cuda): ``cuda:i`` per local GPU, ``cuda``
        for tasks the engine places on a GPU each (``map(num_gpus=1)``), else ``cpu`` per worker."""

    def close(self) -> None:
        """Release what the engine holds."""
