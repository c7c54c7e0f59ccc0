"""``--task_timeout``: a task that runs longer is stopped and named, instead of hanging the command.

Why a bound at all: a filter or scorer plugin's ``score()``/``compute()`` is code kl-filter does not control; one
that blocks (a network read without a timeout, a lock, an endless loop) hung every engine forever. Why off by
default: a task's honest time grows with the shard and the machine (a 1M-row SemDeDup cluster on one core takes
minutes), so no default fits every pool; a scheduler that wants a bound sets one.

What "stopped" means, per engine (a Python thread cannot be killed from outside):

* the local engine's worker processes: a watchdog thread in the worker process notes where the task is stuck,
  then ends that process (``os._exit``); the driver turns the death into :class:`TaskTimeout`.
* ``ray``: the watchdog leaves its note in the cluster's key-value store; the driver, which looks there twice a
  second while tasks run, force-cancels the task (Ray ends the worker process quietly) and raises
  :class:`TaskTimeout`. A worker whose driver is gone ends itself 30 s later. Ray runs such tasks with
  ``max_retries=0`` (a retry would only hang again).
* the local engine's threads: the driver stops waiting and raises :class:`TaskTimeout`; the other workers take
  no new item. The stuck thread cannot be ended from inside the process: the ``kl-filter`` command leaves at
  once (``os._exit``) after printing the line, which ends it; a library caller gets the exception while the
  thread lingers until the plugin returns (whatever it returns is discarded, nothing is written for it).

Either way nothing is written for the stuck task (outputs are written atomically, after their task), and what
finished before is kept: a rerun resumes. The message names the plugin whose method was running (the innermost
``self`` on the stuck thread's stack that is a filter or scorer: an object with a ``name`` and a ``score``,
``compute`` or ``score_bucket`` method), its distribution, and the line it was at.
"""

from __future__ import annotations

import math
import os
import sys
import threading

from kl_filter.core.errors import KLFilterError

TIMEOUT_EXIT = 75  # the status a worker process ends with when its watchdog fires (EX_TEMPFAIL)
_METHODS = {"score": "filter", "compute": "scorer", "score_bucket": "scorer"}


class TaskTimeout(KLFilterError):
    """A task ran past ``--task_timeout``; the message names the plugin and where it was stuck."""


def check_task_timeout(timeout) -> float | None:
    """``--task_timeout``: None (no bound) or a positive number of seconds a timer can wait (1e300 overflowed the
    watchdog's clock in its thread: a traceback there, and no bound)."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not (math.isfinite(timeout)
                                                                                 and timeout > 0):
        raise KLFilterError(f"--task_timeout must be a positive number of seconds, got {timeout!r:.40}")
    if timeout > threading.TIMEOUT_MAX:
        raise KLFilterError(f"--task_timeout must be at most {threading.TIMEOUT_MAX:.4g} s, got {timeout:g} "
                            "(leave it out for no bound)")
    return float(timeout)


def _distribution(cls) -> str | None:
    """The installed distribution that declares (an entry point) or ships (its top-level module) ``cls``."""
    from importlib.metadata import packages_distributions

    from kl_filter.core.registry import installed_entry_points

    value = f"{cls.__module__}:{cls.__qualname__}"
    try:
        eps = installed_entry_points()
        for ep in (ep for g in eps.groups if g.startswith("kl_filter.") for ep in eps.select(group=g)):
            if ep.value.replace(" ", "") == value:
                return ep.dist.name if ep.dist is not None else None
        dists = packages_distributions().get(cls.__module__.partition(".")[0])
    except Exception:  # noqa: BLE001 - a broken installation record: the message names the class instead
        return None
    return dists[0] if dists else None


def plugin_words(obj) -> str:
    """``filter 'name' (distribution D)`` for a plugin; the class's module instead when no distribution ships it."""
    cls = type(obj)
    kind = next((k for m, k in _METHODS.items() if callable(getattr(obj, m, None))), "plugin")
    dist = _distribution(cls)
    if dist == "kl-filter":
        return f"{kind} {obj.name!r}"
    return f"{kind} {obj.name!r} ({cls.__module__}.{cls.__qualname__}, " + \
        (f"distribution {dist})" if dist else "no installed distribution)")


def _line(frame) -> str:
    return f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno} in {frame.f_code.co_name}()"


def stuck_in(thread_id: int | None) -> tuple[str | None, str]:
    """(the innermost plugin running on thread ``thread_id``, in words, or None; the line it is at: the plugin's
    own line, else the innermost Python line)."""
    frame = sys._current_frames().get(thread_id) if thread_id is not None else None
    where = _line(frame) if frame is not None else "an unknown line"
    while frame is not None:
        me = frame.f_locals.get("self")
        if isinstance(getattr(me, "name", None), str) and any(callable(getattr(me, m, None)) for m in _METHODS):
            try:
                return plugin_words(me), _line(frame)
            except Exception:  # noqa: BLE001 - naming must never hide the timeout itself
                return f"plugin {me.name!r}", _line(frame)
        frame = frame.f_back
    return None, where


def timeout_message(timeout: float, desc: str, who: str | None, where: str) -> str:
    what = who or f"a {desc or 'engine'} task"
    return (f"{what} ran past --task_timeout {timeout:g} s (stuck at {where}) and was stopped; nothing was written "
            "for it and finished work is kept: fix or remove the plugin, or raise --task_timeout, then rerun")


class Watchdog:
    """In a worker process: after ``timeout`` s, ``report(words)`` where the calling thread is stuck, then end the
    process ``grace`` s later (the only way to stop a thread stuck in C code or an endless loop; a driver that can
    stop the worker itself, as Ray's does, gets the time to). :meth:`cancel` when done in time."""

    def __init__(self, timeout: float, desc: str, report, grace: float = 0.0):
        self.thread_id = threading.get_ident()
        self.timeout, self.desc, self.report, self.grace = timeout, desc, report, grace
        self.done = threading.Event()  # the task returned: a late report ends nothing
        self.timer = threading.Timer(timeout, self._fire)
        self.timer.daemon = True
        self.timer.start()

    def _fire(self) -> None:
        try:
            self.report(timeout_message(self.timeout, self.desc, *stuck_in(self.thread_id)))
        finally:
            if not self.done.wait(self.grace):  # still stuck (a worker may serve other tasks once it returns)
                for stream in (sys.stdout, sys.stderr):
                    try:
                        stream.flush()
                    except Exception:  # noqa: BLE001 - leaving anyway
                        pass
                os._exit(TIMEOUT_EXIT)

    def cancel(self) -> None:
        self.done.set()
        self.timer.cancel()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.cancel()
