"""The Ray engine: the same per-shard functions as Ray tasks, on a local or remote cluster.

``--engine ray [--ray_address ADDR]``. Without an address a local cluster is started with ``num_workers``
CPUs, usage statistics off and the dashboard off. Per-shard results stay in Ray's object store
(``fetch=False``) until a global step asks them small questions through ``apply`` (counts, 65,536-bin
histograms for the exact thresholds): the driver never gathers a score column unless a rule needs the whole column (``--uniform``,
``--ties exact``). The pool, the scores directory and the statistics must be on storage every node can read
(a shared filesystem or an fsspec URL such as ``s3://``). Every task runs with one BLAS thread, as the local
engine's workers do, so both give the same bits (:mod:`.blas`).

Failures are one line (exit 2), never a Ray traceback: an error a task raises on bad input is re-raised as it is
(as the local engine would); a failure of Ray itself (this node's raylet died, e.g. after its dashboard agent was
killed; a worker process or a node died; an object was lost; Ray's memory monitor killed a task) names what died
and the remedy: every shard's output is written atomically when its task ends, so rerunning the command resumes
(on a new local cluster, or on the same cluster once healthy), and so does ``--engine local``. ``--ray_address``
is tried (a TCP connection, 5 s) before Ray is asked to join it: Ray itself retries an address where nothing
answers for minutes. ``task_timeout``: each task runs under a watchdog (:mod:`.watchdog`) and without retries.

Install with ``pip install 'kl-filter[ray]'``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid

from kl_filter.core.errors import KLFilterError, MissingDependency
from kl_filter.core.progress import NoProgress
from kl_filter.engines.base import Parallel
from kl_filter.engines.blas import single_blas_thread
from kl_filter.engines.watchdog import TaskTimeout, Watchdog, check_task_timeout

CONNECT_TIMEOUT_S = 5.0
POLL_S = 0.5        # under --task_timeout: how often the driver looks for a watchdog's note
GRACE_S = 30.0      # ... and how long a stuck worker waits for the driver to end it before it ends itself
_KV_PREFIX = "kl-filter/task-timeout/"


def _task(fn, *args):
    """One Ray task: ``fn(*args)`` with one BLAS thread (Ray has resolved the object refs among ``args``)."""
    with single_blas_thread():
        return fn(*args)


def _watched_task(timeout: float, key: str, desc: str, fn, *args):
    """:func:`_task` under a watchdog that, past ``timeout`` s, leaves in the cluster's key-value store where the
    task was stuck (under ``key``), for the driver to cancel it (or ends this worker process itself 30 s later)."""
    from ray.experimental.internal_kv import _internal_kv_put

    def report(words: str) -> None:
        _internal_kv_put(key, words.encode(), overwrite=True)

    with Watchdog(timeout, desc, report, GRACE_S):
        return _task(fn, *args)


def _check_address(address: str) -> None:
    """A ``host:port`` address must accept a TCP connection within 5 s (``auto`` and ``ray://`` are Ray's to
    resolve); an address that cannot be parsed is refused by Ray itself (one line, see ``__init__``)."""
    if address in ("auto", "local") or "://" in address:
        return
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), CONNECT_TIMEOUT_S).close()
    except (OSError, ValueError, OverflowError) as e:
        raise KLFilterError(f"--ray_address {address}: no Ray cluster answers there ({getattr(e, 'strerror', None) or e}"
                            "): start one (ray start --head) or leave --ray_address out for a local cluster") from None


def _loaded(fn, load, item):
    return fn(item, load(item))


def _tupled(fn, *parts):
    return fn(tuple(parts))


class RayEngine:
    name = "ray"
    remote = True

    def __init__(self, num_workers: int = 1, progress=None, address: str | None = None,
                 task_timeout: float | None = None):
        try:
            import ray
        except ImportError as e:
            raise MissingDependency("--engine ray needs Ray: pip install 'kl-filter[ray]'") from e
        self.ray = ray
        self.num_workers = max(1, num_workers)
        self.progress = progress or NoProgress
        self.task_timeout = check_task_timeout(task_timeout)
        self.address = address
        if not ray.is_initialized():
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            if address:
                _check_address(address)
            kw = dict(address=address) if address else dict(num_cpus=self.num_workers, include_dashboard=False)
            try:
                ray.init(ignore_reinit_error=True, log_to_driver=False, logging_level="WARNING", **kw)
            except Exception as e:  # noqa: BLE001 - Ray's own start-up failures (timeouts, bad addresses): one line
                with contextlib.suppress(Exception):
                    ray.shutdown()
                where = f"join the Ray cluster at --ray_address {address}" if address else "start a local Ray cluster"
                raise KLFilterError(f"--engine ray could not {where} ({type(e).__name__}: {_first_line(e)}): "
                                    "retry, or use --engine local") from None
        self._task = ray.remote(_task)
        self._watched = ray.remote(_watched_task)

    def map(self, fn, items, *, load=None, parallel: Parallel | str = Parallel.THREADS, desc: str = "",
            fetch: bool = True, num_gpus: float = 0, workers: int | None = None) -> list:
        """One task per item: ``fn(*item)`` (object refs among the item's parts are resolved by Ray), or load
        then ``fn`` in the same task. Every task is a process, so ``parallel`` and ``workers`` change nothing."""
        Parallel(parallel)  # the same values are refused as by the local engine
        calls = [(fn, *it) if load is None else (_loaded, fn, load, it) for it in items]
        run = None
        if self.task_timeout is None:
            task = self._task.options(num_cpus=1, num_gpus=num_gpus)
            refs = [task.remote(*c) for c in calls]
        else:  # a retry of a task that hung would hang again
            task = self._watched.options(num_cpus=1, num_gpus=num_gpus, max_retries=0)
            run = _KV_PREFIX + uuid.uuid4().hex
            refs = [task.remote(self.task_timeout, f"{run}/{i}", desc, *c) for i, c in enumerate(calls)]
        bar = self.progress(desc=desc, total=len(refs))
        pending = list(refs)
        try:
            with self._failures(desc, run):
                while pending:
                    done, pending = self.ray.wait(pending, num_returns=1, timeout=None if run is None else POLL_S)
                    if not done and (late := self._timeout_report(run)):
                        self.ray.cancel(refs[late[0]], force=True)  # ends the stuck worker process
                        raise TaskTimeout(late[1])
                    self.ray.get(done)  # raise the first failure at once
                    bar.update(len(done))
        except BaseException:
            for r in pending if self.ray.is_initialized() else ():  # a call after shutdown would start a cluster
                with contextlib.suppress(Exception):  # a cluster that died refuses the cancel too
                    self.ray.cancel(r)
            raise
        finally:
            bar.close()
        if not fetch:
            return refs
        with self._failures(desc):
            return self.ray.get(refs)

    def apply(self, fn, handles) -> list:
        """``fn(value)`` as a task next to each handle; only the small results come back to the driver."""
        with self._failures("apply"):
            refs = [self._task.remote(_tupled, fn, *h) if isinstance(h, tuple) else self._task.remote(fn, h)
                    for h in handles]
            return self.ray.get(refs)

    @contextlib.contextmanager
    def _failures(self, desc: str, run: str | None = None):
        """Ray's exceptions as kl-filter's: a task's own :class:`KLFilterError` as it is (not wrapped in Ray's
        remote traceback), a watchdog's report as :class:`TaskTimeout`, Ray's own failures as one line naming
        what died and the remedy. Other errors a task raised (bugs) keep Ray's traceback."""
        exc = self.ray.exceptions
        try:
            yield
        except exc.RayTaskError as e:
            if isinstance(e.cause, KLFilterError):
                raise e.cause from None
            raise
        except exc.RayError as e:
            late = self._timeout_report(run) if run is not None else None
            if late is not None:
                raise TaskTimeout(late[1]) from None
            if self.address is None:  # our local cluster is broken: stop it now, before Ray's threads print about it
                with contextlib.suppress(Exception):
                    self.ray.shutdown()
            raise KLFilterError(_failure_message(e, desc, self.address)) from None

    def _timeout_report(self, run: str | None) -> tuple[int, str] | None:
        """(item index, words) a watchdog of this map left in the key-value store (entries then removed), if any."""
        if run is None:
            return None
        try:
            from ray.experimental.internal_kv import _internal_kv_del, _internal_kv_get, _internal_kv_list

            keys = _internal_kv_list(run + "/")
            words = _internal_kv_get(keys[0]) if keys else None
            for k in keys:
                _internal_kv_del(k)
        except Exception:  # noqa: BLE001 - the cluster itself failed: the caller says so instead
            return None
        if not words:
            return None
        key = keys[0].decode() if isinstance(keys[0], bytes) else keys[0]
        return int(key.rpartition("/")[2]), words.decode()

    def devices(self, device: str) -> list[str]:
        """One task per item, each on a GPU of the cluster's when it has GPUs (and ``device`` allows)."""
        gpu = device in ("auto", "cuda") and self.ray.cluster_resources().get("GPU", 0) > 0
        return ["cuda" if gpu else "cpu"]

    def close(self) -> None:
        pass


_DIED = {  # what died, in words, for Ray's failure types (the most specific first)
    "LocalRayletDiedError": "this node's Ray raylet died (it ends with its dashboard agent, or when killed)",
    "WorkerCrashedError": "a Ray worker process died (killed, out of memory, or a crash in native code)",
    "OutOfMemoryError": "Ray's memory monitor killed a task (the node ran low on memory)",
    "NodeDiedError": "a Ray node died",
    "OwnerDiedError": "the driver's Ray worker died",
    "ObjectLostError": "a task's result was lost with the Ray node that held it",
    "ObjectStoreFullError": "Ray's object store is full",
    "OutOfDiskError": "the disk of Ray's object store is full",
    "TaskCancelledError": "a Ray task was cancelled",
    "RuntimeEnvSetupError": "Ray could not set up a worker's runtime environment",
    "RaySystemError": "Ray failed",
}


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return (lines[0] if lines else type(e).__name__)[:200]


def _failure_message(e: BaseException, desc: str, address: str | None) -> str:
    what = next((w for name, w in _DIED.items() if any(c.__name__ == name for c in type(e).__mro__)),
                "Ray failed")
    again = ("rerun once the cluster is healthy (ray status)" if address else
             "rerun the command (it starts a new local cluster)")
    return (f"--engine ray: {what} during '{desc or 'a task'}' ({type(e).__name__}: {_first_line(e)}); the work "
            f"already finished is kept: {again} to resume, or resume with --engine local")
