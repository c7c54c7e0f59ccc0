"""Running one of DataComp's scripts as the harness does: in its own session (process group), SIGINT and SIGTERM
forwarded to the whole group and waited for."""

from __future__ import annotations

import os
import signal
import subprocess
import time

from kl_filter.apps.harness.steps import Step

class Stopped(Exception):
    """The harness was sent SIGINT or SIGTERM; the step's whole process group has been stopped."""

    def __init__(self, signum: int, step: str):
        self.signum, self.step = signum, step
        super().__init__(f"stopped by {signal.Signals(signum).name} during DataComp's {step} step (its processes "
                         "were stopped); rerun the same command to resume")


def run_step(step: Step, cwd: str, grace_s: float = 30.0) -> int:
    """Run one step in its own session (process group); SIGINT/SIGTERM are forwarded to the whole group, which is
    waited for (SIGKILL after ``grace_s``). Returns the exit status, or raises :class:`Stopped`."""
    env = {**os.environ, **step.env}
    got: list[tuple[int, float]] = []  # (signal, when)
    procs: list = []

    def forward(signum, _frame):
        got.append((signum, time.monotonic()))
        if procs:
            _killpg(procs[0].pid, signum)

    # handlers first: a signal that arrives while the step starts is forwarded as soon as it has started
    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        proc = subprocess.Popen(step.argv, cwd=cwd, env=env, start_new_session=True)
        procs.append(proc)
        if got:
            _killpg(proc.pid, got[0][0])
        while True:
            try:
                rc = proc.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                if got and time.monotonic() - got[0][1] > grace_s:
                    _killpg(proc.pid, signal.SIGKILL)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    if got:
        # the leader is gone; whatever of its group is left (data loader workers, resharder workers) goes too
        _killpg(proc.pid, signal.SIGKILL)
        raise Stopped(got[0][0], step.name)
    return rc


def _killpg(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass
