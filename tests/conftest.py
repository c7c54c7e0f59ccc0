import errno
import os
import subprocess
import sys

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory):
    """A small synthetic DataComp pool shared by the tests that only read it (20k rows, 3 shards)."""
    from kl_filter.pool.synth import synth_pool

    d = str(tmp_path_factory.mktemp("pool"))
    synth_pool(d, rows=20_000, shards=3, seed=7, num_workers=2)
    return d


_cli_server = None


def _cli_env(env=None):
    return {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), **(env or {})}


@pytest.fixture(scope="session", autouse=True)
def cli_server():
    """The forking server of :func:`run_cli` (``tests/cliserver.py``), started before any test changes the
    environment; ``KL_FILTER_TEST_FRESH_CLI=1`` turns it off (every call a plain subprocess)."""
    global _cli_server
    if os.environ.get("KL_FILTER_TEST_FRESH_CLI") == "1":
        yield None
        return
    from cliserver import Server

    _cli_server = Server(_cli_env())
    yield _cli_server
    _cli_server.close()
    _cli_server = None


def run_cli(*args, env=None, check=False):
    """Run ``python -m kl_filter ...`` in a fresh process (forked from the CLI server when the environment is
    the server's, else a plain subprocess); returns CompletedProcess."""
    e = _cli_env(env)
    args = [str(a) for a in args]
    p = _cli_server.run(args, e) if _cli_server is not None else None
    if p is None:
        p = subprocess.run([sys.executable, "-m", "kl_filter", *args], capture_output=True, text=True, env=e)
    if check and p.returncode != 0:
        raise AssertionError(f"kl-filter {' '.join(map(str, args))} failed:\n{p.stdout}\n{p.stderr}")
    return p


class DiskFull:
    """A writable file that runs out of space halfway through its first write (ENOSPC), as a full disk does."""

    def __init__(self, f):
        self.f = f

    def write(self, data):
        self.f.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, k):
        return getattr(self.f, k)

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.f.close()


# Modules whose tests or fixtures take tens of seconds (besides those with slow-marked tests). pytest-xdist hands
# tests out in collection order, so a minute-long test collected last becomes the suite's tail on 2 workers.
HEAVY_MODULES = ("test_tiny_iwl.py", "test_fidelity_authors.py", "test_harness_datacomp.py", "test_crash_resume.py")


# The slow tests (real training, DataComp's scripts, 25 recipes through the conformance suite, Ray failures, the
# 32,768-row batch) run where KL_FILTER_SLOW=1 is set: .ci/run sets it, so CI runs every test; the README's test
# command alone stays within minutes on 2 cores. `-m slow` (or any -m) selects them explicitly as well.
RUN_SLOW = os.environ.get("KL_FILTER_SLOW") == "1"


def pytest_collection_modifyitems(config, items):
    """Heavy modules first, each module's tests kept together (its module-scoped fixtures are set up once); slow
    tests skipped, with the reason, unless KL_FILTER_SLOW=1 or a -m expression chose them."""
    heavy = {it.path for it in items if it.get_closest_marker("slow") or it.path.name in HEAVY_MODULES}
    items.sort(key=lambda it: it.path not in heavy)  # stable: collection order otherwise
    if RUN_SLOW or config.getoption("markexpr"):
        return
    skip = pytest.mark.skip(reason="slow: runs in CI (.ci/run sets KL_FILTER_SLOW=1); set it to run it here")
    for it in items:
        if it.get_closest_marker("slow"):
            it.add_marker(skip)
