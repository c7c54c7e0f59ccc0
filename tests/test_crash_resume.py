"""SIGKILL at random points of stats, score and select; resuming gives a byte-identical UID file.

Every per-shard output (statistics partials, score files) and the final UID file are written to a temporary
name and renamed, and a rerun reuses only outputs whose provenance matches, so a run killed anywhere resumes
and ends with exactly the bytes of an uninterrupted run.
"""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import REPO

SELECT = ["select", "--name", "kl", "--mode", "kl", "--arch", "b32", "--target", "txt", "--fraction", "0.25",
          "--clip_score_fraction", "0.5", "--num_samples", "64", "--num_workers", "2", "--no_progress", "--seed", "3"]


def _cmd(pool, scores, out, stage):
    py = [sys.executable, "-m", "kl_filter"]
    if stage == "stats":
        return py + ["stats", "--metadata_dir", pool, "--out", f"{scores}/stats.npz", "--arch", "b32",
                     "--num_samples", "64", "--seed", "3", "--no_progress", "--num_workers", "2"]
    if stage == "score":
        return py + ["score", "--metadata_dir", pool, "--stats", f"{scores}/stats.npz", "--out", scores,
                     "--modes", "kl", "--arch", "b32", "--target", "txt", "--no_progress", "--num_workers", "2"]
    return py + SELECT + ["--metadata_dir", pool, "--scores_dir", scores, "--save_path", out]


def _run(cmd, kill_after=None):
    env = {**os.environ, "PYTHONPATH": REPO}
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if kill_after is not None:
        try:
            p.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGKILL)
    _, err = p.communicate()
    return p.returncode, err.decode()


@pytest.fixture(scope="module")
def crash_pool(tmp_path_factory):
    from minipool import make_minipool

    return make_minipool(tmp_path_factory.mktemp("crashpool"), shards=12, n=1500)


def test_kill_anywhere_then_resume_is_byte_identical(crash_pool, tmp_path):
    # uninterrupted: the three stages one after the other, timed, and the reference UID file
    ref, ref_out = str(tmp_path / "ref"), str(tmp_path / "ref" / "uids.npy")
    durations = {}
    for stage in ("stats", "score", "select"):
        t0 = time.perf_counter()
        rc, err = _run(_cmd(crash_pool, ref, ref_out, stage))
        assert rc == 0, err
        durations[stage] = time.perf_counter() - t0
    reference = open(ref_out, "rb").read()

    rng = np.random.default_rng(2024)
    kills, series = 0, 0
    # Series after series, from an empty directory: each stage (stats -> score -> select) is killed at a
    # random moment of its run time, then run to completion (resuming what the killed attempts left); every
    # series must end with the reference bytes. Resumed attempts are shorter, so kills can miss; series
    # repeat until at least 10 kills have landed.
    while kills < 10 or series < 2:
        assert series < 12, f"only {kills} kills landed in {series} series"
        run = tmp_path / f"run{series}"
        scores, out = str(run), str(run / "uids.npy")
        for stage in ("stats", "score", "select"):
            for _ in range(2):
                rc, err = _run(_cmd(crash_pool, scores, out, stage),
                               kill_after=float(rng.uniform(0.3, 0.9) * durations[stage]))
                assert rc in (0, -signal.SIGKILL), err
                kills += rc == -signal.SIGKILL
                if os.path.exists(out):  # never a partial UID file: absent, or complete and loadable
                    assert np.load(out).dtype == np.dtype("u8,u8")
            rc, err = _run(_cmd(crash_pool, scores, out, stage))  # finish the stage from what is left
            assert rc == 0, err
        assert open(out, "rb").read() == reference
        leftovers = [f for _, _, fs in os.walk(scores) for f in fs if f.endswith(".tmp")]
        assert all(f.startswith(".") for f in leftovers)  # killed writers' temp names never shadow outputs
        series += 1
