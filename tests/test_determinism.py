"""Bit-identical outputs for any BLAS thread count, worker count and engine; the engine interface on plain inputs.

A multithreaded BLAS rounds float32 products differently per thread count, so every engine task and every NumPy
scoring function runs with one BLAS thread (``kl_filter/engines/blas.py``); these tests hold that to the bit.
"""

import os
import subprocess
import sys
import threading
import time

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import REPO, run_cli

BLAS_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")
SCORE_IN_SUBPROCESS = """
import sys, numpy as np
from kl_filter.kernels.kl import centered, density_ratio_kl, whitened
z = np.load(sys.argv[1])
kl, klr = density_ratio_kl(z["x"], z["y"], device="cpu")
np.savez(sys.argv[2], kl=kl, klr=klr, centered=centered(z["x"], z["mu"], device="cpu"),
         whitened=whitened(z["x"], z["mu"], z["cov"], device="cpu"))
"""


def _blas_env(threads: int) -> dict:
    return {**os.environ, "PYTHONPATH": REPO, **{k: str(threads) for k in BLAS_ENV}}


def test_numpy_scores_identical_for_one_and_two_blas_threads(tmp_path):
    rng = np.random.default_rng(13)
    x, y = rng.standard_normal((3001, 64)), rng.standard_normal((1500, 64))
    # inputs made without BLAS (row norms by sums), so both subprocesses read the very same bytes
    x = (x / np.sqrt((x * x).sum(1, keepdims=True))).astype(np.float16)
    y = (y / np.sqrt((y * y).sum(1, keepdims=True))).astype(np.float16)
    a = rng.standard_normal((64, 64)) * 0.01
    np.savez(tmp_path / "in.npz", x=x, y=y, mu=x.astype(np.float64).mean(0), cov=a + a.T + np.eye(64))
    outs = []
    for threads in (1, 2):
        out = tmp_path / f"out{threads}.npz"
        subprocess.run([sys.executable, "-c", SCORE_IN_SUBPROCESS, tmp_path / "in.npz", out], env=_blas_env(threads),
                       check=True)
        outs.append(np.load(out))
    for k in ("kl", "klr", "centered", "whitened"):
        a, b = outs[0][k], outs[1][k]
        assert a.dtype == np.float32 and a.tobytes() == b.tobytes(), f"{k}: {int((a != b).sum())} values differ"


def test_stats_and_scores_identical_for_workers_and_blas_threads(tmp_path):
    from minipool import make_minipool

    pool = make_minipool(tmp_path / "pool", shards=3, n=2000)  # 2000-row shards: full and partial 1024-row blocks
    runs = {}
    for workers, threads in ((1, 1), (3, 2)):
        d = tmp_path / f"w{workers}_t{threads}"
        common = ["--metadata_dir", pool, "--num_workers", workers, "--no_progress"]
        env = {k: str(threads) for k in BLAS_ENV}
        run_cli("stats", *common, "--out", d / "stats.npz", "--num_samples", 512, "--seed", 3, env=env, check=True)
        run_cli("score", *common, "--stats", d / "stats.npz", "--out", d / "scores", "--device", "cpu", env=env,
                check=True)
        runs[workers, threads] = d
    a, b = runs.values()
    za, zb = np.load(a / "stats.npz"), np.load(b / "stats.npz")
    assert za.files == zb.files
    for k in za.files:
        assert za[k].tobytes() == zb[k].tobytes(), k
    shards = sorted(f.name for f in (a / "scores").glob("*.parquet"))
    assert len(shards) == 3 and shards == sorted(f.name for f in (b / "scores").glob("*.parquet"))
    for s in shards:
        ta, tb = pq.read_table(a / "scores" / s), pq.read_table(b / "scores" / s)
        assert ta.num_columns == 17 and ta.equals(tb), s


# ---- the engine interface, on plain inputs, for every engine ----

def _square(i):
    return i * i


def _blas_threads():
    """The thread counts of the process-wide BLAS libraries (NumPy's, SciPy's, torch's). An OpenMP-layered BLAS
    (faiss-cpu bundles one, loaded once a SemDeDup test ran in this process) keeps its count per thread, as
    OpenMP does: a new thread sees the default whatever another thread set. faiss's calls set their own count
    in the calling thread (kl_filter/scorers/semdedup.py: omp_set_num_threads(1)), so it is left out here."""
    from threadpoolctl import threadpool_info

    return {lib["num_threads"] for lib in threadpool_info()
            if lib["user_api"] == "blas" and lib.get("threading_layer") != "openmp"}


def _fail_on_3(i):
    if i == 3:
        raise ValueError("item 3")
    time.sleep(0.01)
    return i


@pytest.fixture(scope="module", params=["local", "ray"])
def engine(request):
    from kl_filter.engines import get_engine

    if request.param == "local":
        yield get_engine("local", 3)
        return
    ray = pytest.importorskip("ray", reason="Ray is an optional extra")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray workers cannot import this test file
    eng = get_engine("ray", 2)
    yield eng
    eng.close()
    ray.shutdown()


def test_map_keeps_item_order(engine):
    # later items finish first: results still come in item order
    got = engine.map(lambda i, k: (time.sleep(0.02 * (i % 3 == 0)), i * k)[1], [(i, 2) for i in range(12)])
    assert got == [2 * i for i in range(12)]
    assert engine.map(lambda item, loaded: (item, loaded), range(6), load=_square) == [(i, i * i) for i in range(6)]
    assert engine.map(_square, []) == []


def test_apply_runs_where_the_handles_are(engine):
    handles = engine.map(_square, [(i,) for i in range(5)], fetch=False)
    assert engine.apply(lambda v: v + 1, handles) == [i * i + 1 for i in range(5)]
    # tuples of handles and plain values arrive as tuples of values
    assert engine.apply(lambda t: t[0] - t[1], list(zip(handles, range(5)))) == [i * i - i for i in range(5)]


def test_first_exception_is_raised(engine):
    with pytest.raises(ValueError, match="item 3"):
        engine.map(_fail_on_3, [(i,) for i in range(8)])
    with pytest.raises(ValueError, match="item 3"):
        engine.map(lambda item, loaded: loaded, [(i,) for i in range(8)], load=lambda it: _fail_on_3(*it))


def test_worker_index_and_one_blas_thread(engine):
    from kl_filter.engines import worker_index

    got = engine.map(lambda i: (worker_index(), _blas_threads()), [(i,) for i in range(12)])
    expect = set(range(engine.num_workers)) if engine.name == "local" else {0}
    assert {w for w, _ in got} <= expect and all(t == {1} for _, t in got)
    assert engine.apply(lambda _: _blas_threads(), [0]) == [{1}]
    assert worker_index() == 0


def test_local_processes_and_parallel_values():
    from kl_filter.engines import LocalEngine, Parallel

    eng = LocalEngine(2)
    assert eng.map(_square, [(i,) for i in range(7)], parallel="processes") == [i * i for i in range(7)]
    assert eng.map(_blas_threads, [()] * 2, parallel=Parallel.PROCESSES) == [{1}, {1}]
    with pytest.raises(ValueError, match="item 3"):
        eng.map(_fail_on_3, [(i,) for i in range(8)], parallel=Parallel.PROCESSES)
    with pytest.raises(ValueError):
        eng.map(_square, [(1,)], parallel="fibers")


def test_local_loads_overlap_compute_and_stay_bounded():
    from kl_filter.engines import LocalEngine

    started = []
    second_loaded = threading.Event()

    def load(i):
        started.append(i)
        if i == 1:
            second_loaded.set()
        return i

    def work(i, loaded):
        if i == 0:  # item 1 loads while item 0 computes; the read-ahead stops far short of all 50 items
            assert second_loaded.wait(5)
            time.sleep(0.2)
            assert len(started) <= 1 + 2 + 2, started
        return loaded

    # two loader threads, one compute thread: read-ahead of 2 loaders + max(2, 1) items
    assert LocalEngine(2).map(work, range(50), load=load, workers=1) == list(range(50))


def test_local_first_exception_stops_the_work():
    from kl_filter.engines import LocalEngine

    seen = []

    def fn(i):
        seen.append(i)
        if i == 2:
            raise KeyError(i)

    with pytest.raises(KeyError):
        LocalEngine(1).map(fn, [(i,) for i in range(100)])
    assert seen == [0, 1, 2]


def test_single_blas_thread_is_reference_counted_across_threads():
    from kl_filter.engines import single_blas_thread

    with single_blas_thread():  # the main thread changed the limits last (threadpoolctl's "controlling thread")
        pass
    before = _blas_threads()
    inside = []
    gate = threading.Barrier(4)

    def enter_and_leave(k):
        with single_blas_thread():
            gate.wait()  # all four are inside together
            time.sleep(0.01 * k)  # and leave in a staggered order
            inside.append(_blas_threads())

    threads = [threading.Thread(target=enter_and_leave, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert inside == [{1}] * 4 and _blas_threads() == before


def test_local_engine_starts_no_more_workers_than_items():
    """4 items with 64 workers: 4 worker processes (the engine used to fork one per worker), same results."""
    import os

    from kl_filter.engines import LocalEngine

    pids = LocalEngine(64).map(os.getpid, [() for _ in range(4)], parallel="processes")
    assert len(pids) == 4 and len(set(pids)) <= min(4, os.cpu_count() or 1) and os.getpid() not in pids
    assert LocalEngine(64).map(abs, [(-i,) for i in range(4)]) == [0, 1, 2, 3]
