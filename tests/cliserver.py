"""``python -m kl_filter ARGS`` for the tests, forked from a server that has already imported the package.

The suite runs the command line a few hundred times, and each fresh interpreter spends about a second of CPU
importing NumPy, pyarrow, pandas, fsspec and kl_filter before it does anything. The server (this file run as a
script, one per test process) imports them once, then for each call forks a child that gets the call's working
directory, ``/dev/null`` as stdin and two files as stdout and stderr, runs ``kl_filter`` as ``python -m`` does
(``runpy``, ``__main__``) and exits through the interpreter's own exit path (non-daemon threads joined, atexit
handlers run, streams flushed): a fresh process per call, as before, minus the imports. The caller gets a
``subprocess.CompletedProcess`` (a negative return code for a child killed by a signal).

A module reads some environment variables once, at import (OpenBLAS its thread count), so the server only serves
calls whose environment is exactly the one it was started with; :meth:`Server.run` answers None for any other
call (and when another call is in flight), and the caller starts a plain subprocess. One difference remains: the
children share the server's string-hash seed (``PYTHONHASHSEED`` is drawn once per interpreter), so two calls
iterate a set of strings in the same order; no test relies on two runs differing in that.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading

PRELOAD = ("numpy", "pyarrow", "pyarrow.parquet", "pyarrow.compute", "pandas", "fsspec", "yaml", "kl_filter.apps.cli",
           "kl_filter.filters", "kl_filter.kernels.kl", "kl_filter.runner", "kl_filter.stats.reference")


class Server:
    def __init__(self, env: dict):
        self.env = _comparable(env)
        self.lock = threading.Lock()
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__)], env=env, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.tmp = tempfile.mkdtemp(prefix="kl-filter-cliserver-")

    def run(self, args: list[str], env: dict) -> subprocess.CompletedProcess | None:
        if _comparable(env) != self.env or self.proc.poll() is not None or not self.lock.acquire(blocking=False):
            return None
        try:
            out, err = os.path.join(self.tmp, "stdout"), os.path.join(self.tmp, "stderr")
            self.proc.stdin.write(json.dumps({"args": args, "cwd": os.getcwd(), "out": out, "err": err}) + "\n")
            self.proc.stdin.flush()
            reply = self.proc.stdout.readline()
            if not reply:
                return None
            with open(out) as fo, open(err) as fe:  # text mode, as subprocess.run(text=True) decodes
                return subprocess.CompletedProcess([sys.executable, "-m", "kl_filter", *args],
                                                   json.loads(reply)["returncode"], fo.read(), fe.read())
        finally:
            self.lock.release()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def _comparable(env: dict) -> dict:
    """The environment less pytest's name of the running test, which changes with every test and which nothing
    run by the command reads."""
    return {k: v for k, v in env.items() if k != "PYTEST_CURRENT_TEST"}


def _serve() -> None:
    import importlib

    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    channel_in, channel_out = sys.stdin, sys.stdout
    for line in channel_in:
        req = json.loads(line)
        channel_out.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(req)  # never returns: leaves through SystemExit
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        channel_out.write(json.dumps({"returncode": code}) + "\n")
        channel_out.flush()


def _child(req: dict) -> None:
    import random
    import runpy

    os.chdir(req["cwd"])
    for fd, path, flags in ((0, os.devnull, os.O_RDONLY), (1, req["out"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
                            (2, req["err"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)):
        f = os.open(path, flags, 0o600)
        os.dup2(f, fd)
        os.close(f)
    sys.stdin = open(0, closefd=False)
    sys.argv = ["-m", *req["args"]]
    sys.path[0] = os.getcwd()  # as `python -m` has it
    random.seed()  # a fresh interpreter's unseeded generators differ per process; so do the children's
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()
    runpy.run_module("kl_filter", run_name="__main__", alter_sys=True)  # an exception: the interpreter's traceback
    raise SystemExit(0)


if __name__ == "__main__":
    _serve()
