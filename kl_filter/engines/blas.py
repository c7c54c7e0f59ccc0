"""One BLAS thread while our own code runs, so that results do not depend on the BLAS thread count.

A multithreaded BLAS splits a matrix product differently for 1 and for 2 threads, and float32 sums taken in a
different order round differently: scores changed in the last bits with ``OPENBLAS_NUM_THREADS``, and Ray tasks
(which get one BLAS thread) disagreed with the local engine. So every engine task, and every public NumPy
scoring function, runs with ONE BLAS thread; parallelism comes from our workers over shards and fixed row
blocks, whose boundaries never depend on the thread count.

threadpoolctl's limits are process-global (OpenBLAS keeps one thread count), so nested or concurrent
``threadpool_limits`` contexts entered from several threads would restore each other's settings in the wrong
order. :func:`single_blas_thread` is reference-counted instead: the first entrant sets one thread, the last
exit restores what was there before, whatever the interleaving of threads. threadpoolctl >= 3.8 also lets only
one "controlling" thread change OpenBLAS and silently ignores the others, so a first entrant or last exit on
another thread would do nothing; our lock already serializes every change, so control is released around each.
"""

from __future__ import annotations

import contextlib
import os
import threading

_lock = threading.Lock()
_depth = 0
_limits = None  # threadpoolctl's handle on the original limits while _depth > 0


@contextlib.contextmanager
def single_blas_thread():
    """Run the body with one BLAS thread (thread-safe, nestable; also usable as a decorator)."""
    global _depth, _limits
    with _lock:
        if _depth == 0:
            _limits = _change(_one_thread)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                _change(_limits.restore_original_limits)
                _limits = None


def set_single_blas_thread() -> None:
    """One BLAS thread for the rest of this process (the initializer of a worker process)."""
    _change(_one_thread)


def _one_thread():
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1, user_api="blas")


def _change(fn):
    """``fn()`` with threadpoolctl's OpenBLAS "controlling thread" released before and after (see above)."""
    import threadpoolctl

    release = getattr(getattr(threadpoolctl, "OpenBLASController", None), "clear_controlling_thread", None)
    if release is None:  # threadpoolctl < 3.8: any thread may change the limits
        return fn()
    release(force=True)
    try:
        return fn()
    finally:
        release(force=True)


def _after_fork_in_child() -> None:
    """A fork may copy the lock held by another thread; the child gets a fresh one (its count is inherited)."""
    global _lock
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)
